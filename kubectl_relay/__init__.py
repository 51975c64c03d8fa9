"""kubectl-relay: a socat-compatible relay engine, a SocatTunnel operator and a kubectl plugin."""

__version__ = "0.1.0"
