"""The agent's config file: TOML and JSON, defaults, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

TOML = """
node_id = "node1"
data_dir = "data"
listen = "127.0.0.1:7001"
[peers]
node2 = "127.0.0.1:7002"
[tls]
ca = "tls/ca.pem"
cert = "tls/node.pem"
key = "tls/node-key.pem"
[timing]
tick_ms = 50
"""


def test_toml_config_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TOML)
    cfg = load_config(path)
    assert cfg.node_id == "node1"
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.control_socket == tmp_path / "data" / "control.sock"
    assert cfg.peers == {"node1": ("127.0.0.1", 7001), "node2": ("127.0.0.1", 7002)}
    assert (cfg.tick_ms, cfg.election_ticks, cfg.heartbeat_ticks) == (50, 10, 1)
    assert cfg.tls.key == tmp_path / "tls" / "node-key.pem"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node_id": "bad id!"}, "node_id"),
        ({"listen": "nowhere"}, "listen"),
        ({"peers": {"node2": "1.2.3.4"}}, "peers.node2"),
        ({"timing": {"tick_ms": "fast"}}, "tick_ms"),
        ({"timing": {"election_ticks": 1, "heartbeat_ticks": 1}}, "election_ticks"),
        ({"tls": {"ca": "x"}}, "cert"),
    ],
)
def test_bad_values_are_refused_naming_the_key(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    raw: dict[str, object] = {
        "node_id": "node1",
        "data_dir": "d",
        "listen": "127.0.0.1:1",
        "tls": {"ca": "a", "cert": "b", "key": "c"},
    }
    raw.update(change)
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("node_id = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
