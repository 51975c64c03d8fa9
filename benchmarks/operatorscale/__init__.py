"""``./dev bench-operator``: N SocatTunnels created at once against the local cluster, measured.

Not a workload of ``python -m benchmarks``: that harness compares two
candidate programs on loopback, run after run; this one has a single
candidate (the operator), needs the cluster (run it under the cluster lock,
after ``./dev cluster up``), and one run takes minutes. See
``benchmarks/README.md`` ("The operator at scale") for what it measures and
what it found.

Layout: ``cli`` (options, flow, cleanup), ``kwok`` (the fake node and the
kwok process that plays its kubelet), ``operatorproc`` (the operator as a
process, with its CPU and memory), ``wave`` (create, watch, delete),
``apimetrics`` (the API server's request counters), ``table`` (the report).
"""
