"""Errors the agent reports to its clients, each with a stable code a program can test."""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """A request failed; ``code`` is stable, ``message`` says what happened and what to do."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


# Codes used across the API (documented in agent/api.py).
NOT_LEADER = "not-leader"
NO_LEADER = "no-leader"
TIMEOUT = "timeout"
PROPOSAL_LOST = "proposal-lost"
BUSY = "busy"
BAD_REQUEST = "bad-request"
UNKNOWN_METHOD = "unknown-method"
NOT_FOUND = "not-found"
STOPPING = "stopping"
REMOVED = "removed"
"""This machine was removed from the cluster: it no longer serves anything (see agent/node.py)."""
INTERNAL = "internal"
