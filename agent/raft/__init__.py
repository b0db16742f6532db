"""Raft consensus: a pure state machine (no I/O, no clock) plus its typed messages.

The runtime in ``agent/node.py`` drives :class:`RaftNode` with ticks, peer messages and
proposals, and carries out each :class:`Ready`: persist, send, apply, advance.
"""
