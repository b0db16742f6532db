"""``python -m shell.lab up|down|status|...``: the same as ``shoal lab ...``."""

from __future__ import annotations

import sys

from shell.batch import main

sys.exit(main(["lab", *sys.argv[1:]]))
