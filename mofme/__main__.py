"""``python -m mofme`` (and ``torchrun -m mofme train ...``)."""

import sys

from mofme.cli import main

sys.exit(main())
