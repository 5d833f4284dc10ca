"""`python -m tracehop.bench`: see tracehop/bench/runner.py."""

import sys

from tracehop.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
