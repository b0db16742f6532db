"""One-line, readable log records: ``time level node component: message key=value``."""

from __future__ import annotations

import logging
import sys
import time


class OneLineFormatter(logging.Formatter):
    """UTC timestamps with milliseconds; exceptions folded onto the same line."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        component = record.name.removeprefix("shoal.")
        line = (
            f"{stamp}.{int(record.msecs):03d}Z {record.levelname:<5} {self.node_id} "
            f"{component}: {record.getMessage()}"
        )
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


def setup_logging(node_id: str, level: str = "info", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(OneLineFormatter(node_id))
    root = logging.getLogger("shoal")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
