"""A one-member cluster run inside the test process: for runtime behaviour that needs a real
Agent (storage, snapshots, membership bookkeeping) but not other processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.config import AgentConfig, config_from_dict
from agent.node import Agent
from shell import pki
from shell.devcluster import free_port


def one_member_config(root: Path) -> AgentConfig:
    """Node n1 alone, data under ``root``; the CA is kept there, so a config made again on the
    same root (a restart) trusts the same certificates."""
    ca_dir = root / "ca"
    if (ca_dir / "ca.pem").exists():
        ca = pki.load_ca(ca_dir)
    else:
        ca = pki.create_ca("unit")
        pki.write_ca(ca_dir, ca)
    tls = pki.write_node_tls(root / "tls", ca, pki.issue_node_cert(ca, "n1", ["127.0.0.1"]))
    listen = f"127.0.0.1:{free_port()}"
    raw = {
        "node_id": "n1",
        "data_dir": str(root / "data"),
        "listen": listen,
        "peers": {"n1": listen},
        "cluster_name": "unit",
        "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
        "timing": {"tick_ms": 10, "heartbeat_ticks": 1, "election_ticks": 10},
    }
    return config_from_dict(raw, base=root, where="test config")


async def leading(agent: Agent) -> None:
    """Wait (boundedly) until the agent leads its one-member cluster."""
    for _ in range(500):
        if agent.raft is not None and agent.raft.leader == agent.config.node_id:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a one-member cluster did not elect itself")
