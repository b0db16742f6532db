"""OpenSSH ``known_hosts`` lookups that remember line numbers, and appending new keys.

asyncssh can read known_hosts itself, but it answers only "trusted or not". The shell must tell an
unknown key (show its fingerprint, offer ``--accept-new``) from a changed one (refuse, and name
the line to check), so it parses the file here and hands asyncssh only the keys that matched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncssh


@dataclass(frozen=True)
class KnownKey:
    """One key line that matched a host: where it is, and the key."""

    line: int
    marker: str  # "" for a plain host key, "@cert-authority" or "@revoked"
    key: asyncssh.SSHKey


def host_entry(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    """The SHA256 fingerprint in the form ``ssh`` prints (``SHA256:base64``)."""
    return str(key.get_fingerprint("sha256"))


def _hashed_match(pattern: str, name: str) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name)), what HashKnownHosts writes.
    parts = pattern.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except ValueError:
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def _wildcard(pattern: str, name: str) -> bool:
    """OpenSSH wildcards: only ``*`` and ``?`` are special (``[`` in ``[host]:port`` is not)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE) is not None


def _patterns_match(patterns: str, name: str) -> bool:
    """OpenSSH semantics: any positive pattern matches and no negated one does."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        hit = _hashed_match(pattern, name) if pattern.startswith("|") else _wildcard(pattern, name)
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def lookup(path: Path, host: str, port: int) -> list[KnownKey]:
    """Every key in ``path`` whose host patterns match ``host``/``port``; [] if no file."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    name = host_entry(host, port)
    found: list[KnownKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if len(fields) < 3 or not _patterns_match(fields[0], name):
            continue
        try:
            key = asyncssh.import_public_key(f"{fields[1]} {fields[2]}")
        except (asyncssh.KeyImportError, ValueError):
            continue
        found.append(KnownKey(number, marker, key))
    return found


def append(path: Path, host: str, port: int, key: asyncssh.SSHKey) -> int:
    """Record ``key`` for ``host``/``port``; returns the new line's number.

    The file and its directory are created private (0600/0700), as ssh does for ~/.ssh.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{host_entry(host, port)} {key.export_public_key('openssh').decode().strip()}\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a+b") as handle:
        handle.seek(0)
        existing = handle.read()
        if existing and not existing.endswith(b"\n"):
            handle.write(b"\n")
        handle.write(line.encode())
    return existing.count(b"\n") + (1 if existing and not existing.endswith(b"\n") else 0) + 1
