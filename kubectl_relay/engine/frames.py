"""``frame=len16`` without I/O: ``encode`` and ``FrameDecoder`` (see ``framing``).

Apart from the rest of the engine, whose runtime is POSIX-only: the plugin
imports this module on macOS and Windows too.
"""

from __future__ import annotations

#: Bytes of the length prefix.
HEADER_SIZE = 2
#: The largest payload of one frame.
MAX_PAYLOAD = 0xFFFF
#: The frame that ends a direction.
END_FRAME = b"\0\0"


def encode(data: bytes | memoryview) -> bytes:
    """The frames carrying ``data`` (one frame if it fits; nothing for empty data)."""
    view = memoryview(data)
    parts = []
    for start in range(0, len(view), MAX_PAYLOAD):
        chunk = view[start : start + MAX_PAYLOAD]
        parts.append(len(chunk).to_bytes(HEADER_SIZE, "big"))
        parts.append(bytes(chunk))
    return b"".join(parts)


class FrameDecoder:
    """Reassembles frames from bytes as they arrive.

    ``feed`` returns the frames completed by the new bytes, in order; an empty
    frame (``b""``) is the end frame. ``pending`` tells whether a frame has
    started but not finished (a stream that ends then was cut off).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished frame are waiting."""
        return bool(self._buffer)

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """Add received bytes; return the frames they complete."""
        self._buffer += data
        frames = []
        buffer = self._buffer
        at = 0
        # One copy per frame: a bytearray's slice would copy once more.
        with memoryview(buffer) as view:
            while len(buffer) - at >= HEADER_SIZE:
                size = int.from_bytes(view[at : at + HEADER_SIZE], "big")
                end = at + HEADER_SIZE + size
                if end > len(buffer):
                    break
                frames.append(view[at + HEADER_SIZE : end].tobytes())
                at = end
        del buffer[:at]
        return frames
