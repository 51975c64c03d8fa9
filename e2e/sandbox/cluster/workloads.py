"""Stock images of the sandbox: small servers to relay to, run as callable images.

``Sandbox`` registers them under these names (any tag):

- ``sandbox.local/echo``: a TCP echo server (``--port``, default 8080; ``--udp``
  echoes datagrams on the same port too). On EOF from the client it
  half-closes its side after sending everything back, so half-close
  behaviour can be checked through a relay.
- ``sandbox.local/http``: an HTTP/1.1 server answering every request with
  ``--text`` (default ``hello from <hostname>``) and ``Connection: close``;
  ``--delay`` seconds before it starts listening (readiness tests).
- ``sandbox.local/toolbox``: small commands, as busybox is for real clusters
  (the container's ``command`` + ``args`` choose one):

  - ``serve-file PATH [--port N]``: send the file's content to every connection;
  - ``resolve NAME...``: print ``NAME -> ADDRESS...`` (or ``NAME -> error``) per
    name through the pod's resolver, then exit;
  - ``exit CODE [MESSAGE]``: print the message and exit with ``CODE``;
  - ``sleep SECONDS``: sleep, then exit 0 (``sleep inf`` never exits).

Both bind the wildcard address, which the pod shim turns into the pod's IP,
and print one line per connection so ``kubectl logs`` shows the traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from typing import cast

ECHO_IMAGE = "sandbox.local/echo"
HTTP_IMAGE = "sandbox.local/http"
TOOLBOX_IMAGE = "sandbox.local/toolbox"


def _options(argv: list[str], default_port: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--udp", action="store_true")
    parser.add_argument("--text", default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    return parser.parse_args(argv)


async def _serve_forever(server: asyncio.Server) -> None:
    async with server:
        await server.serve_forever()


async def echo(argv: list[str]) -> int:
    """The echo image's entrypoint."""
    options = _options(argv, 8080)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        print(f"echo: connection from {peer[0]}:{peer[1]}", flush=True)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "0.0.0.0", options.port, reuse_address=True)
    print(f"echo: listening on {server.sockets[0].getsockname()[0]}:{options.port}", flush=True)
    if options.udp:

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(data, addr)

        await asyncio.get_running_loop().create_datagram_endpoint(
            Echo, local_addr=("0.0.0.0", options.port)
        )
    await _serve_forever(server)
    return 0


async def http(argv: list[str]) -> int:
    """The HTTP image's entrypoint."""
    options = _options(argv, 8080)
    text = (
        options.text
        if options.text is not None
        else f"hello from {os.environ.get('HOSTNAME', '?')}"
    )
    body = (text + "\n").encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            if not request.strip():
                return  # a connection without a request (a TCP probe): nothing to answer
            while (await reader.readline()).strip():
                pass  # the headers: not needed
            print(f"http: {request.decode(errors='replace').strip()}", flush=True)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    await asyncio.sleep(options.delay)
    server = await asyncio.start_server(handle, "0.0.0.0", options.port, reuse_address=True)
    print(f"http: listening on {server.sockets[0].getsockname()[0]}:{options.port}", flush=True)
    await _serve_forever(server)
    return 0


async def toolbox(argv: list[str]) -> int:
    """The toolbox image's entrypoint: ``argv[0]`` names the tool."""
    if not argv:
        print("toolbox: serve-file, resolve, exit or sleep?", file=sys.stderr)
        return 2
    tool, args = argv[0], argv[1:]
    if tool == "serve-file":
        return await _serve_file(args)
    if tool == "resolve":
        for name in args:
            try:
                infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
                print(f"{name} -> {' '.join(sorted({str(i[4][0]) for i in infos}))}", flush=True)
            except socket.gaierror as exc:
                print(f"{name} -> error: {exc.strerror}", flush=True)
        return 0
    if tool == "exit":
        if args[1:]:
            print(" ".join(args[1:]), flush=True)
        return int(args[0]) if args else 0
    if tool == "sleep":
        seconds = float(args[0]) if args else float("inf")
        await asyncio.sleep(seconds if seconds != float("inf") else 1e9)
        return 0
    print(f"toolbox: unknown tool {tool!r}", file=sys.stderr)
    return 127


async def _serve_file(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serve-file")
    parser.add_argument("path")
    parser.add_argument("--port", type=int, default=8080)
    options = parser.parse_args(args)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with open(options.path, "rb") as f:
                writer.write(f.read())
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            print(f"serve-file: {exc}", flush=True)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "0.0.0.0", options.port, reuse_address=True)
    print(f"serve-file: serving {options.path} on port {options.port}", flush=True)
    await _serve_forever(server)
    return 0
