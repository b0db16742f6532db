"""lab.json: the record of everything a lab made, so it can be inspected and undone exactly.

Written atomically (0600) after every change; ``lab down`` and the chaos commands trust it, and
fall back to names derived from the lab name when it is missing (see names.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shell.lab.errors import LabError, LabNotFound
from shell.lab.paths import lab_dir, write_file

VERSION = 1
STATE_FILE = "lab.json"


@dataclass
class NodeState:
    """One lab node: its name is also its host name and the agent's node id."""

    name: str
    index: int
    address: str
    netns: str
    veth: str
    sshd_pid: int | None = None


@dataclass
class LabState:
    name: str
    state_dir: str
    subnet: str
    host_address: str
    bridge: str
    nodes: list[NodeState]
    # Blackhole routes this lab added, as [node whose namespace holds it, blocked address].
    routes: list[list[str]] = field(default_factory=list)
    # Whether ``lab up`` had to create the host's /var/lib/shoal as a mount point.
    made_var_lib_shoal: bool = False
    created: float = 0.0
    version: int = VERSION

    @property
    def dir(self) -> Path:
        return Path(self.state_dir)

    def node(self, name: str) -> NodeState:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in lab {self.name!r}")

    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node_dir(self, name: str) -> Path:
        return self.dir / "nodes" / name

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        if data.get("version") != VERSION:
            raise LabError(f"lab.json has version {data.get('version')!r}, expected {VERSION}")
        nodes = [NodeState(**n) for n in data["nodes"]]
        fields = {f.name for f in dataclasses.fields(cls)} - {"nodes"}
        return cls(nodes=nodes, **{k: v for k, v in data.items() if k in fields})


def state_path(name: str, home: Path | None = None) -> Path:
    return lab_dir(name, home) / STATE_FILE


def save(state: LabState) -> None:
    write_file(state.dir / STATE_FILE, json.dumps(state.to_json(), indent=2) + "\n")


def load(name: str, home: Path | None = None) -> LabState:
    path = state_path(name, home)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabNotFound(f"no lab named {name!r} (looked for {path}); start one with `lab up`")
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {path}: {exc}")
    try:
        return LabState.from_json(data)
    except (KeyError, TypeError) as exc:
        raise LabError(f"{path} is damaged ({exc}); `lab down --name {name}` removes the lab")


def exists(name: str, home: Path | None = None) -> bool:
    return state_path(name, home).exists()


def labs_up(home: Path | None = None) -> list[LabState]:
    """Every lab with a record, by name (a half-written record is skipped, not an error)."""
    from shell.lab.paths import labs_dir

    root = labs_dir(home)
    found: list[LabState] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if (entry / STATE_FILE).exists():
            try:
                found.append(load(entry.name, home))
            except (LabError, OSError, ValueError, KeyError, TypeError):
                continue
    return found
