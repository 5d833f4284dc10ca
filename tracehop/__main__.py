"""`python -m tracehop <command>`: see tracehop/cli.py."""

import sys

from tracehop.cli import main

if __name__ == "__main__":
    sys.exit(main())
