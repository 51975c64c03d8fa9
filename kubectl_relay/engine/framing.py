"""``frame=len16``: length-prefixed frames on a byte stream (a relay extension, not in socat).

Why it exists: ``kubectl relay`` reaches its relay pod through the API
server's port-forward, which carries one TCP byte stream per connection and
nothing else. Two things get lost on such a stream: the boundaries of UDP
datagrams, and a half-close (``v4.channel.k8s.io`` has no message for "this
direction is done", so the API server ends the whole connection when either
side ends). ``frame=len16`` on the address facing the tunnel puts both back:

- every frame is a 2-byte big-endian length followed by that many bytes;
- a frame of length 0 means end of data: its writer has shut down its write
  direction (the half-close), and it reads as EOF on the other side;
- on a framed address one read returns one frame and one write of up to
  65535 bytes sends one frame, so a datagram address on the other side of
  the relay gets the same datagrams; a larger write (from a byte stream) is
  cut into several frames.

Shutting down the write direction of a framed stream sends the end frame and
leaves the underlying connection open, so the other direction keeps flowing;
closing the stream closes the connection. A frame larger than the reader's
buffer is truncated, as a datagram read into a short buffer is.

``FrameDecoder`` and ``encode`` are the protocol without I/O, in ``frames``
(which imports nothing, so that the plugin speaks the other end with them on
any OS); ``apply`` is the session's hook.
"""

from __future__ import annotations

from .addresses import AddressSpec, DualAddress
from .errors import OpenError
from .frames import END_FRAME, FrameDecoder, encode
from .log import logger
from .transports.base import Stream

#: The framing formats ``frame=`` accepts.
FORMATS = ("len16",)
#: How much one read of the underlying stream asks for.
_READ_SIZE = 64 * 1024


class FramedStream(Stream):
    """A byte stream seen as a channel of frames (see the module docstring)."""

    datagram = True

    def __init__(self, inner: Stream) -> None:
        self.inner = inner
        self.label = inner.label
        self.env = inner.env
        self.readable = inner.readable
        self.writable = inner.writable
        self._decoder = FrameDecoder()
        self._frames: list[bytes] = []
        self._scratch = memoryview(bytearray(_READ_SIZE))
        self._ended = False

    async def read_into(self, buffer: memoryview) -> int:
        while not self._frames:
            if self._ended:
                return 0
            count = await self.inner.read_into(self._scratch)
            if count == 0:
                if self._decoder.pending:
                    logger.warning("%s: connection ended inside a frame", self.label)
                self._ended = True
                return 0
            self._frames.extend(self._decoder.feed(self._scratch[:count]))
        frame = self._frames.pop(0)
        if not frame:
            # The end frame: the writer half-closed. Later frames cannot follow.
            self._ended = True
            self._frames.clear()
            return 0
        size = min(len(frame), len(buffer))
        buffer[:size] = frame[:size]
        return size

    async def write(self, data: memoryview) -> None:
        if len(data):
            await self.inner.write(memoryview(encode(data)))

    async def shutdown_write(self) -> None:
        # The end frame, and not a shutdown of the connection: through a
        # port-forward that would end both directions.
        await self.inner.write(memoryview(END_FRAME))

    def reset(self) -> None:
        self.inner.reset()

    async def aclose(self) -> None:
        await self.inner.aclose()


def apply(stream: Stream, spec: AddressSpec) -> Stream:
    """``stream`` framed if its address has ``frame=``; raises ``OpenError`` for unknown formats.

    A stream already framed (a ``PROXY-SERVER`` session frames address 1
    before it opens address 2) is returned as it is.
    """
    if isinstance(stream, FramedStream):
        return stream
    address = spec.reader if isinstance(spec, DualAddress) else spec
    form = address.options.text("frame")
    if form is None:
        return stream
    if form.lower() not in FORMATS:
        raise OpenError(
            str(address),
            f'option "frame": unknown format "{form}", accepted: {", ".join(FORMATS)}',
        )
    return FramedStream(stream)
