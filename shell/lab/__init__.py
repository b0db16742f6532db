"""The lab: a real cluster of network-namespace "machines" on one host, for demos and tests.

Each node has its own network, mount and UTS namespaces, a real sshd, host keys and private
/root, /etc/ssh, /var/lib/shoal, /run and /tmp; the nodes share a bridge on 198.18.k.0/24 with
multicast flooding, so discovery, SSH bootstrap, partitions and machine loss are all real.
"""

from __future__ import annotations

from shell.lab.chaos import (
    CrashReport,
    PartitionReport,
    RestoreReport,
    crash,
    heal,
    kill,
    partition,
    pause,
    restore,
    resume,
)
from shell.lab.errors import LabError, LabExists, LabNotFound, NeedsRoot
from shell.lab.lab import DownReport, Progress, down, up
from shell.lab.paths import DEFAULT_LAB, lab_dir, shoal_home
from shell.lab.requirements import check_root
from shell.lab.state import LabState, NodeState, load
from shell.lab.status import LabStatus, NodeStatus, status

__all__ = [
    "DEFAULT_LAB",
    "CrashReport",
    "DownReport",
    "LabError",
    "LabExists",
    "LabNotFound",
    "LabState",
    "LabStatus",
    "NeedsRoot",
    "NodeState",
    "NodeStatus",
    "PartitionReport",
    "Progress",
    "RestoreReport",
    "check_root",
    "crash",
    "down",
    "heal",
    "kill",
    "lab_dir",
    "load",
    "partition",
    "pause",
    "restore",
    "resume",
    "shoal_home",
    "status",
    "up",
]
