"""``python -m gaussood``: the gaussood command line (see ``gaussood.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
