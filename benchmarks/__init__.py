"""Benchmarks: the relay engine against the real socat, side by side, in one run.

``./dev bench`` (or ``python -m benchmarks`` from the repository root) runs
every workload for both candidates, each at its default settings, alternating
them run by run so that drift in the machine's load hits both alike, and
prints the median of the runs, the ratio relay/socat and a PASS or MISS
against the project's targets. Results also go to ``benchmarks/results/`` as
JSON. The harness is not part of the test suite; ``tests/test_benchmarks_smoke.py``
only checks that ``--smoke`` still produces numbers.

Layout:

- ``cli``: command-line options and the top-level flow.
- ``settings``: the sizes and counts of the full, ``--quick`` and ``--smoke`` modes.
- ``processes``: starting and stopping processes (and their children), ports, memory.
- ``candidates``: the command lines of ``relay`` and ``socat``.
- ``runner``: runs workloads for every candidate, alternately.
- ``results``: samples, medians, ratios and verdicts.
- ``errors``: what fails one candidate's run rather than the harness.
- ``report``: machine information, the table on stdout, the JSON file.
- ``profiling``: ``--profile``, py-spy attached to the relay while it is measured.
- ``workloads/``: one module per workload, all on the ``Workload`` interface.
- ``peers/``: the client and server programs, each run in a process of its own.
"""
