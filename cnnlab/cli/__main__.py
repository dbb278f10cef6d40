"""``python -m cnnlab.cli``: the same as the ``cnnlab`` command."""

import sys

from . import console

sys.exit(console())
