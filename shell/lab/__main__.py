"""``python -m shell.lab up|down|status|...``."""

from __future__ import annotations

import sys

from shell.lab.cli import main

sys.exit(main())
