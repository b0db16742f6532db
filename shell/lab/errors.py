"""Errors the lab reports to a person: each message says what is wrong and what to do."""

from __future__ import annotations


class LabError(Exception):
    """Something the operator can act on; the CLI prints the message and exits 1."""


class NeedsRoot(LabError):
    """The action needs root (namespaces, links, mounts); raised before anything is touched."""


class LabExists(LabError):
    """``lab up`` found a lab of that name already."""


class LabNotFound(LabError):
    """No lab of that name exists."""
