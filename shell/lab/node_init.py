"""A lab node's keeper: give the node its own filesystem view and host name, then become sshd.

Started as ``ip netns exec NS unshare --mount --uts --propagation private -- python node_init.py``
so it already sits in the node's network, mount and UTS namespaces. It bind-mounts the node's
directories over /root, /etc/ssh, /var/lib/shoal, /run and /tmp (and the lab's /etc/hosts), sets
the host name, and execs ``sshd -D``: everything later started over SSH — the agent above all —
inherits that view and sees the same paths it would on a real machine.

Standard library only, and run as a script (``python -I node_init.py``), because it runs before
the node's /root is in place: on hosts where Python itself lives under /root (pyenv), nothing may
be imported after the mounts.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import socket
import sys

MS_BIND = 4096
SSHD = "/usr/sbin/sshd"
BOOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# (source under the node's directory, where the node sees it). /root last is not required,
# since sources are opened before anything is mounted, but reads naturally.
NODE_MOUNTS = (
    ("etc-ssh", "/etc/ssh"),
    ("var-lib-shoal", "/var/lib/shoal"),
    ("run", "/run"),
    ("tmp", "/tmp"),
    ("hostname", "/etc/hostname"),
    ("root", "/root"),
)


def _bind(libc: ctypes.CDLL, fd: int, target: str) -> None:
    """Bind the file open on ``fd`` over ``target``; the fd path survives earlier mounts."""
    src = f"/proc/self/fd/{fd}".encode()
    if libc.mount(src, target.encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind mount onto {target} failed: {os.strerror(err)}")


def setup(node_dir: str, hosts_file: str, hostname: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    # Open every source before mounting anything: a state directory under /tmp or /root would
    # otherwise be hidden by the node's own /tmp or /root before its turn came.
    plan = [(os.open(os.path.join(node_dir, src), os.O_PATH), dst) for src, dst in NODE_MOUNTS]
    plan.append((os.open(hosts_file, os.O_PATH), "/etc/hosts"))
    for fd, dst in plan:
        _bind(libc, fd, dst)
        os.close(fd)
    socket.sethostname(hostname)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    os.chmod("/run/sshd", 0o755)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--hostname", required=True)
    p.add_argument("--node-dir", required=True)
    p.add_argument("--hosts", required=True)
    p.add_argument("--sshd-config", default="/etc/ssh/sshd_config")
    args = p.parse_args(argv)
    try:
        setup(args.node_dir, args.hosts, args.hostname)
    except OSError as exc:
        print(f"shoal lab node {args.hostname}: {exc}", file=sys.stderr, flush=True)
        return 1
    os.chdir("/")
    env = {"PATH": BOOT_PATH, "LANG": "C.UTF-8"}
    sys.stderr.flush()
    os.execve(SSHD, [SSHD, "-D", "-e", "-f", args.sshd_config], env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
