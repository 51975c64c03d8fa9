"""``python -m kubectl_relay.engine`` runs the relay, like the ``relay`` script."""

from .cli import main

raise SystemExit(main())
