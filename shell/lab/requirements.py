"""What the lab needs from the host, checked before anything is created.

Creating namespaces, links and mounts needs root; a lab half-built by a user who lacked it would
be worse than a clear refusal, so every changing command checks first and says exactly why.
"""

from __future__ import annotations

import os
import shutil

from shell.lab.errors import LabError, NeedsRoot

# Tool, and the Debian package that provides it.
TOOLS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "/usr/sbin/sshd": "openssh-server",
    "ssh": "openssh-client",
}

WHY_ROOT = {
    "up": "it creates network namespaces, a bridge and veth links, mounts each node's private "
    "directories and starts sshd in every node",
    "down": "it removes the lab's network namespaces and links and stops processes inside them",
}
DEFAULT_WHY = "it signals processes and changes routes inside the lab's network namespaces"


def check_root(action: str, euid: int | None = None) -> None:
    """Raise NeedsRoot, naming what the action does, unless running as root."""
    uid = os.geteuid() if euid is None else euid
    if uid != 0:
        why = WHY_ROOT.get(action, DEFAULT_WHY)
        raise NeedsRoot(
            f"`shoal lab {action}` needs root: {why}. You are uid {uid}; run it as root "
            f"(for example `sudo shoal lab {action} ...`). Nothing was changed."
        )


def missing_tools() -> list[str]:
    out = []
    for tool, package in TOOLS.items():
        if not (os.access(tool, os.X_OK) if tool.startswith("/") else shutil.which(tool)):
            out.append(f"{tool} (Debian package {package})")
    return out


def check_host(action: str, euid: int | None = None) -> None:
    check_root(action, euid)
    missing = missing_tools()
    if missing:
        raise LabError(f"`shoal lab {action}` needs tools that are missing: {'; '.join(missing)}")
