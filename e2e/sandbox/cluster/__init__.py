"""The cluster half of the sandbox: what runs the objects the API server stores.

Layout, by concern:

- ``sandbox``: ``Sandbox`` / ``SandboxThread``, the API server and this cluster together;
- ``cluster``: wires the parts below on one Store;
- ``kubelet``, ``containers``, ``processes``, ``probes``, ``logs``, ``podstatus``:
  pods as local processes (the kubelet and its container runtime);
- ``images``, ``podspec``, ``volumes``: from a pod spec to a command line, an
  environment and files;
- ``podshim``, ``netpatch``, ``dns``: inside a pod's process, the pod's own IP and
  the cluster's DNS names;
- ``informer``, ``controller``, ``events``, ``objects``: the controllers' machinery;
- ``replicasets``, ``deployments``, ``jobs``, ``services``, ``proxy``, ``ipam``: the
  built-in controllers and kube-proxy;
- ``workloads``: stock images (echo and HTTP servers);
- ``settings``: where the sandbox runs faster than a real cluster.

This package imports nothing heavy: every pod's process imports ``podshim``.
"""
