"""``python -m pruning prune ...``: see :mod:`pruning.cli`."""

import sys

from pruning.cli import main

if __name__ == "__main__":
    sys.exit(main())
