"""Peer programs of the benchmarks, each run in its own process.

Every peer is started as ``python -m benchmarks.peers.NAME ARGS`` so that it
gets a core of its own to compete for, never the harness's GIL. Peers speak
to the harness in JSON lines on stdout: servers print ``{"port": N}`` once
they listen, and every peer prints its result as one last JSON line.

- ``sink``: accept one connection (TCP or TLS) and read it to EOF.
- ``source``: connect (TCP or TLS) and send a number of bytes.
- ``echo``: an event-loop echo server for many connections.
- ``pingpong``: round trips of 1-byte messages (latency).
- ``connector``: short connections, one at a time or concurrently (rate).
- ``holder``: open idle connections and keep them until told to stop.

``floor`` is not a peer but a candidate: a relay that only passes bytes on,
started by the harness like the relay (see its docstring).
"""
