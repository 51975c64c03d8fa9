"""The SocatTunnel operator: declared tunnels become hardened relay pods.

Layers, each importing only the ones above it:

- ``errors``: the exception tree.
- ``fields``: reading raw JSON with the field path in every message; Kubernetes syntax.
- ``spec``: ``parse_spec(body) -> TunnelSpec``, using the engine's address parser.
- ``settings``: the operator's own settings (image, watched namespaces, defaults).
- ``builders``: pure functions from a ``TunnelSpec`` to the desired Deployment,
  Service and NetworkPolicy.

Everything here is pure: no kopf, no Kubernetes client. The kopf handlers
(one module, the only one that imports kopf) parse, build, apply and report.
"""

from kubectl_relay import __version__

__all__ = ["__version__"]
