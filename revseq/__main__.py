"""``python -m revseq``: the same as the ``revseq`` command (see :mod:`revseq.cli`)."""

import sys

from revseq.cli import main

if __name__ == "__main__":
    sys.exit(main())
