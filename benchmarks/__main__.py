"""``python -m benchmarks``: compare the relay with socat (see ``benchmarks.cli``)."""

from .cli import main

raise SystemExit(main())
