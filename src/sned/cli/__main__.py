"""``python -m sned.cli`` (what torchrun launches): the ``sned`` entry point."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
