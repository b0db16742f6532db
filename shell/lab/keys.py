"""SSH keys for the lab, made in-process: ed25519 keys cost microseconds, ssh-keygen costs forks.

A 16-node lab needs 17 keys; generating them with ``cryptography`` keeps ``lab up`` fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private_openssh: bytes
    public_openssh: str  # "ssh-ed25519 AAAA..." without a comment

    def public_line(self, comment: str) -> str:
        return f"{self.public_openssh} {comment}\n"


def new_ed25519() -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private, public.decode("ascii"))
