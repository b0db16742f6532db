"""The agent's configuration file (TOML or JSON), validated with errors that name the key.

Example (TOML)::

    node_id = "node1"
    data_dir = "/var/lib/shoal"
    listen = "198.18.0.1:7400"            # peer (Raft) address: host:port
    # control_socket = "/var/lib/shoal/control.sock"   (default: <data_dir>/control.sock)
    join = false                          # true: a new member that joins a running cluster
    cluster_id = "3f2a9c0e5b7d41a6"       # the cluster CA's id (shown in discovery)
    cluster_name = "prod"
    mdns = "off"                          # advertise over mDNS: "off", "all" or an address

    [metadata]                            # machine metadata, as fleet's MachineMetadata
    region = "us-east"
    disk = "ssd"

    [peers]                               # the initial members, this node included
    node1 = "198.18.0.1:7400"
    node2 = "198.18.0.2:7400"
    node3 = "198.18.0.3:7400"

    [tls]                                 # made by the shell's PKI helper (shell/pki.py)
    ca = "/var/lib/shoal/tls/ca.pem"
    cert = "/var/lib/shoal/tls/node.pem"
    key = "/var/lib/shoal/tls/node-key.pem"

    [timing]                              # etcd's defaults
    tick_ms = 100
    heartbeat_ticks = 1
    election_ticks = 10

    [raft]
    snapshot_entries = 10000              # compact the log after this many applied entries
    pre_vote = true
    check_quorum = true
    lease_reads = false

    [kv]
    auto_compact_retention = 0            # keep this many revisions of history; 0 = keep all

    [registry]
    ttl = 10                              # a silent machine leaves /_shoal/machines/ after this

    [log]
    level = "info"

    [debug]
    fault_injection = false               # true only in test clusters: enables debug.faults
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ConfigError(ValueError):
    """The configuration is wrong; the message names the file and the key."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def format_address(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class AgentConfig:
    node_id: str
    data_dir: Path
    listen: tuple[str, int]
    peers: dict[str, tuple[str, int]]
    tls: TLSFiles
    control_socket: Path
    join: bool = False
    tick_ms: int = 100
    heartbeat_ticks: int = 1
    election_ticks: int = 10
    snapshot_entries: int = 10000
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    log_level: str = "info"
    metadata: dict[str, str] = field(default_factory=dict)
    """Machine metadata (``region = "us-east"``) for the registry, mDNS and scheduling."""
    cluster_id: str = ""
    cluster_name: str = ""
    registry_ttl: int = 10
    mdns: str = "off"
    """Where to advertise ``_shoal._tcp``: "off", "all" interfaces, or one interface address."""
    fault_injection: bool = False
    auto_compact_retention: int = 0
    """Serve ``debug.faults``, which lets a control-socket user cut this node's peer links.
    For tests that check behaviour under partitions; never needed in production."""


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing required key {key!r}")
        return default
    value = table[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate a TOML (``.toml``) or JSON (anything else) configuration file."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}")
    try:
        raw = tomllib.loads(text.decode()) if p.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {exc}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a table of settings at the top level")
    return config_from_dict(raw, base=p.parent, where=str(p))


def config_from_dict(raw: dict[str, Any], *, base: Path, where: str) -> AgentConfig:
    node_id = _get(raw, "node_id", str, where)
    if not NODE_ID.match(node_id):
        raise ConfigError(f"{where}: node_id {node_id!r} must be letters, digits, '.', '_' or '-'")
    data_dir = (base / _get(raw, "data_dir", str, where)).resolve()
    listen = parse_address(_get(raw, "listen", str, where), f"{where}: listen")
    peers_raw = _get(raw, "peers", dict, where, {})
    peers: dict[str, tuple[str, int]] = {}
    for peer, addr in peers_raw.items():
        if not NODE_ID.match(peer) or not isinstance(addr, str):
            raise ConfigError(f"{where}: peers.{peer} must map a node id to 'host:port'")
        peers[peer] = parse_address(addr, f"{where}: peers.{peer}")
    join = _get(raw, "join", bool, where, False)
    if not join:
        peers.setdefault(node_id, listen)
    tls_raw = _get(raw, "tls", dict, where)
    tls = TLSFiles(
        *((base / _get(tls_raw, k, str, f"{where} [tls]")).resolve() for k in ("ca", "cert", "key"))
    )
    timing = _get(raw, "timing", dict, where, {})
    raft = _get(raw, "raft", dict, where, {})
    log = _get(raw, "log", dict, where, {})
    kv = _get(raw, "kv", dict, where, {})
    registry = _get(raw, "registry", dict, where, {})
    metadata = _get(raw, "metadata", dict, where, {})
    for key, value in metadata.items():
        if not NODE_ID.match(key) or not isinstance(value, str) or "," in value or "=" in value:
            raise ConfigError(
                f"{where} [metadata]: {key!r} must map a simple name to a text value "
                "without ',' or '='"
            )
    debug = _get(raw, "debug", dict, where, {})
    control = raw.get("control_socket")
    cfg = AgentConfig(
        node_id=node_id,
        data_dir=data_dir,
        listen=listen,
        peers=peers,
        tls=tls,
        control_socket=(
            (base / control).resolve() if isinstance(control, str) else data_dir / "control.sock"
        ),
        join=join,
        tick_ms=_get(timing, "tick_ms", int, f"{where} [timing]", 100),
        heartbeat_ticks=_get(timing, "heartbeat_ticks", int, f"{where} [timing]", 1),
        election_ticks=_get(timing, "election_ticks", int, f"{where} [timing]", 10),
        snapshot_entries=_get(raft, "snapshot_entries", int, f"{where} [raft]", 10000),
        pre_vote=_get(raft, "pre_vote", bool, f"{where} [raft]", True),
        check_quorum=_get(raft, "check_quorum", bool, f"{where} [raft]", True),
        lease_reads=_get(raft, "lease_reads", bool, f"{where} [raft]", False),
        log_level=_get(log, "level", str, f"{where} [log]", "info"),
        fault_injection=_get(debug, "fault_injection", bool, f"{where} [debug]", False),
        auto_compact_retention=_get(kv, "auto_compact_retention", int, f"{where} [kv]", 0),
        metadata=dict(metadata),
        cluster_id=_get(raw, "cluster_id", str, where, ""),
        cluster_name=_get(raw, "cluster_name", str, where, ""),
        registry_ttl=_get(registry, "ttl", int, f"{where} [registry]", 10),
        mdns=_get(raw, "mdns", str, where, "off"),
    )
    if cfg.registry_ttl < 2:
        raise ConfigError(f"{where} [registry]: ttl must be at least 2 seconds")
    if cfg.auto_compact_retention < 0:
        raise ConfigError(f"{where} [kv]: auto_compact_retention must be 0 (off) or more")
    if cfg.tick_ms < 1 or cfg.heartbeat_ticks < 1 or cfg.election_ticks <= cfg.heartbeat_ticks:
        raise ConfigError(
            f"{where} [timing]: need tick_ms >= 1 and election_ticks > heartbeat_ticks >= 1"
        )
    if cfg.snapshot_entries < 1:
        raise ConfigError(f"{where} [raft]: snapshot_entries must be at least 1")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where} [log]: level must be debug, info, warning or error")
    return cfg
