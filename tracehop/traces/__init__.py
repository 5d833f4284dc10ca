"""Reading traces: the query client and span model, tree building and matching, the waterfall, the logs
of a trace, and the local trace store (store/). Depends on nothing else in tracehop.
"""
