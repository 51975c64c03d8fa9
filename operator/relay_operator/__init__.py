"""The SocatTunnel operator: declared tunnels become hardened relay pods.

Layers, each importing only the ones above it:

- ``errors``: the exception tree.
- ``fields``: reading raw JSON with the field path in every message; Kubernetes syntax.
- ``policy``: what a tunnel's author may ask for (pod labels and annotations,
  destinations), as the cluster admin decides it.
- ``spec``: ``parse_spec(body, policy) -> TunnelSpec``, using the engine's address parser.
- ``settings``: the operator's own settings (image, watched namespaces, defaults).
- ``builders``: pure functions from a ``TunnelSpec`` to the desired Deployment,
  Service and NetworkPolicy.
- ``apply``, ``status``, ``metrics``: pure: merge patches and ownership; status,
  conditions and events from observed state; the operator's counters.
- ``client``: the only module using the Kubernetes client (on its own threads).
- ``reconcile``: one reconciliation (read, check, build, apply, report), no kopf.
- ``handlers``: the kopf handlers, thin over ``reconcile``; the only kopf import.
- ``cli``: the ``relay-operator`` console script.
"""

from kubectl_relay import __version__

__all__ = ["__version__"]
