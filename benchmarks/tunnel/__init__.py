"""``./dev bench-tunnel``: ``kubectl relay tcp`` against ``kubectl port-forward`` to one pod.

See ``cli`` for the flow and ``benchmarks/README.md`` for how to read the table.
"""
