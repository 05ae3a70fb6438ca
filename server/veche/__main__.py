"""``python -m veche``: the same as the ``veche`` command."""

import sys

from veche.cli import main

if __name__ == "__main__":
    sys.exit(main())
