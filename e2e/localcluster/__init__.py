"""A real single-node Kubernetes cluster on this machine, built from source.

``python -m e2e.localcluster build|up|down|status`` (``./dev cluster ...``):
``build`` compiles the pinned release's components into one multicall binary
(and the images) under the user's cache; ``up`` starts etcd, the control plane,
containerd, the kubelet and the add-ons (kube-proxy, CoreDNS, kube-router's
NetworkPolicy firewall) as background daemons and prints
``export KUBECONFIG=...``; ``down`` stops everything and removes what ``up``
created. ``settings.py`` holds every address, port and path.
"""
