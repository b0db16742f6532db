"""Frames on a byte stream: what a reader sees for whole, cut-off and oversized frames."""

from __future__ import annotations

import asyncio

import pytest

from agent.framing import FrameError, pack_frames, read_frame


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_frames_round_trip_including_empty_ones() -> None:
    payloads = [b"one", b"", b"x" * 70_000]

    async def scenario() -> list[bytes]:
        reader = _reader(pack_frames(payloads))
        return [await read_frame(reader) for _ in payloads]

    assert asyncio.run(scenario()) == payloads


def test_clean_end_between_frames_is_eof_not_an_error() -> None:
    async def scenario() -> None:
        reader = _reader(pack_frames([b"last"]))
        assert await read_frame(reader) == b"last"
        with pytest.raises(EOFError):
            await read_frame(reader)

    asyncio.run(scenario())


@pytest.mark.parametrize("cut", [2, 6])
def test_end_inside_a_frame_is_a_frame_error(cut: int) -> None:
    async def scenario() -> None:
        with pytest.raises(FrameError, match="inside a frame"):
            await read_frame(_reader(pack_frames([b"payload"])[:cut]))

    asyncio.run(scenario())


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    async def scenario() -> None:
        # No payload follows and the stream stays open: reading it would hang.
        reader = _reader(pack_frames([b"x" * 11])[:4], eof=False)
        with pytest.raises(FrameError, match="exceeds"):
            await asyncio.wait_for(read_frame(reader, max_size=10), 10)

    asyncio.run(scenario())
