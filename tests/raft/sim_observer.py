"""The hooks through which the simulator reports what happens, for a checker to judge.

The simulator knows nothing about correctness: an observer (the checker in ``invariants.py``) is
told about every persist, apply, read and role change, and raises when something is wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.raft.core import ReadState
from agent.raft.messages import Message
from agent.raft.types import Entry, HardState, Snapshot

if TYPE_CHECKING:
    from tests.raft.sim import Sim
    from tests.raft.sim_node import SimNode


class SimObserver:
    """Hooks the simulator calls; the default does nothing. ``invariants.Checker`` overrides."""

    def on_input(self, sim: Sim, node: SimNode) -> None:
        """After any call into ``node.raft`` (step, tick, propose, advance...)."""

    def on_deliver(self, sim: Sim, msg: Message) -> None:
        """A message reaches its (running) destination, just before the node steps it."""

    def on_send(self, sim: Sim, node: SimNode, msg: Message) -> None:
        """``node`` sends ``msg`` (its Ready was persisted just before)."""

    def on_persist_snapshot(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        """Before a snapshot from a Ready is stored on ``node.disk``."""

    def on_persist_entries(self, sim: Sim, node: SimNode, entries: list[Entry]) -> None:
        """Before entries from a Ready are stored on ``node.disk``."""

    def on_persist_hard_state(self, sim: Sim, node: SimNode, hs: HardState) -> None:
        """Before a hard state from a Ready is stored on ``node.disk``."""

    def on_restore(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        """After the state machine was rebuilt from a snapshot (received, or on restart)."""

    def on_apply(self, sim: Sim, node: SimNode, entry: Entry) -> None:
        """Before ``entry`` (from Ready.committed) is applied to ``node.sm``."""

    def on_read_state(self, sim: Sim, node: SimNode, rs: ReadState) -> None:
        """A ReadState arrived in a Ready."""

    def on_read_served(self, sim: Sim, node: SimNode, rs: ReadState) -> None:
        """The state machine reached ``rs.index``: the read is answered now."""

    def on_propose(self, sim: Sim, node: SimNode, index: int, data: bytes) -> None:
        """``node`` accepted a client command at ``index``."""

    def on_read_request(self, sim: Sim, node: SimNode, ctx: str) -> None:
        """A client asked ``node`` for a read point tagged ``ctx``."""

    def on_compact(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        """``node`` compacted its log into ``snap``."""

    def on_crash(self, sim: Sim, node: SimNode) -> None:
        """``node`` is about to lose its volatile state."""

    def on_step(self, sim: Sim, settled: list[SimNode]) -> None:
        """One instant of virtual time is over; ``settled`` nodes carried out every Ready they
        had (nodes that got no input since their last Ready are not listed)."""
