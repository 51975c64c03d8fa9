"""The relay engine: a socat-compatible relay written in Python.

Layers, each importing only the ones above it:

- ``errors``: the exception tree.
- ``grammar``, ``options``, ``addresses``: pure parsing of socat address text.
- ``log``, ``trace``: socat-format log lines and ``-v``/``-x`` traces.
- ``transports``: one module per address family; opening an address is theirs.
- ``transfer``: the one loop that moves bytes between two open streams.
- ``session``: opens address 1 then address 2, forks sessions, applies retries.
- ``cli``: socat's global options, exit codes and signals.

The engine imports nothing from the operator, the plugin, kopf or the
Kubernetes client (checked by ``.importlinter``).
"""
