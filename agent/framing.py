"""Length-prefixed frames on a byte stream: a 4-byte big-endian length, then that many bytes.

One frame carries one encoded Raft message. The limit is checked on the header alone, before any
payload is read, so a peer cannot make us buffer an absurd amount by announcing it; it defaults to
64 MiB because a snapshot travels in a single frame.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable

MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct(">I")
MAX_ENCODABLE = 2**32 - 1


class FrameError(Exception):
    """The stream does not contain a well-formed frame: too large, or cut off in the middle."""


async def read_frame(reader: asyncio.StreamReader, max_size: int = MAX_FRAME) -> bytes:
    """Read one frame's payload.

    Raises :class:`FrameError` if the announced length exceeds ``max_size`` (without reading the
    payload) or the stream ends inside a frame, and plain :class:`EOFError` if it ends cleanly
    between frames — the normal way for a peer to hang up.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError(f"connection closed inside a frame header ({len(exc.partial)} bytes)")
        raise EOFError("connection closed")
    (length,) = HEADER.unpack(header)
    if length > max_size:
        raise FrameError(f"frame of {length} bytes exceeds the {max_size}-byte limit")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(f"connection closed inside a frame ({len(exc.partial)} of {length} bytes)")


def pack_frames(payloads: Iterable[bytes]) -> bytes:
    """Frame and concatenate payloads, so many messages go out in one write."""
    parts: list[bytes] = []
    for payload in payloads:
        if len(payload) > MAX_ENCODABLE:
            raise ValueError(f"payload of {len(payload)} bytes cannot be framed")
        parts.append(HEADER.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)
