"""tracehop's local tooling: trace store and viewer (traces/), stack runner (stack/), benchmark (bench/),
and the traffic generator.

Run it as `python -m tracehop <command>` (the Makefile's verbs call it; cli.py). Dependencies go one way:
traces <- stack <- bench. The services never import it.
"""
