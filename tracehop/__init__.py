"""tracehop's local tooling: stack runner, trace store, trace viewer and traffic generator.

Run it as `python -m tracehop <command>` (the Makefile's verbs call it). The services never import it.
"""
