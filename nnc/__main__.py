"""``python -m nnc``: the same command line as the ``nnc`` script (see ``nnc/cli.py``)."""

import sys

from nnc.cli import main

sys.exit(main())
