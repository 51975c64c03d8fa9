"""`kubectl relay`: ephemeral tunnels into the cluster, with live traces."""
