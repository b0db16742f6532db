"""The REPL's persistent history: ``$SHOAL_HOME/history``.

A ``FileHistory`` wrapped in ``ThreadedHistory`` (as ptpython does) so a long history file is
read off the UI thread and the first prompt does not wait for it; Ctrl-R searches it.
"""

from __future__ import annotations

from pathlib import Path

from prompt_toolkit.history import FileHistory, History, ThreadedHistory

from shell.clusterstate import shoal_home


def history_path() -> Path:
    """Where the history lives: beside the clusters, so one SHOAL_HOME is one whole setup."""
    return shoal_home() / "history"


def make_history(path: Path | None = None) -> History:
    """A history that survives the session (and the directory it needs)."""
    path = path or history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return ThreadedHistory(FileHistory(str(path)))
