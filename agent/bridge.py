"""Copy bytes between stdin/stdout and a unix socket: the control channel's fallback transport.

When a node's sshd refuses direct-streamlocal forwarding (``AllowStreamLocalForwarding no``), the
shell runs this over an exec channel instead, so it reaches the control socket either way. It is
standard-library only and self-contained (no imports from ``agent``) because the shell may also
send its source with ``python3 -c`` before any zipapp is installed. Every chunk is written the
moment it arrives: a request/response protocol must never wait on a buffer.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pump_stdin(sock: socket.socket) -> None:
    """stdin → socket; on EOF, half-close so the agent finishes and closes its side."""
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: bridge SOCKET", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(argv[0])
    except OSError as exc:
        print(f"bridge: cannot connect to {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return 0
            _write_all(1, data)
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
