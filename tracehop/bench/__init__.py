"""`make bench`: the cost of tracing, traced vs untraced (runner.py drives it; see its docstring).

Run it as `python -m tracehop.bench`. Uses tracehop.stack and tracehop.traces.
"""
