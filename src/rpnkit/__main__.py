"""``python -m rpnkit`` runs the command line (see :mod:`rpnkit.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
