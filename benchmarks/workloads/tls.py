"""TLS termination: ``OPENSSL-LISTEN:P,cert=server.pem,verify=0,fork,reuseaddr TCP:...``.

The certificate is made once per benchmark run with the ``openssl`` CLI. The
client is the same Python ``ssl`` source for every candidate; "direct" sends
to a Python TLS sink, which shows that client and sink are faster than what
sits between them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..candidates import PEERS, Candidate
from ..errors import BenchmarkError
from ..results import Metric, WorkloadResult, versus
from ..settings import format_size
from .base import Context, Measured, Workload
from .bulk import busy_note, transfer


def make_certificate(directory: Path) -> Path:
    """A self-signed certificate and its key in one PEM file, as socat's ``cert=`` takes."""
    key, cert, both = directory / "server.key", directory / "server.crt", directory / "server.pem"
    command = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchmarkError(f"could not make a certificate with openssl: {exc}") from exc
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return both


class TlsTermination(Workload):
    """One TLS connection into the candidate, plain TCP out of it to the sink."""

    name = "tls"
    title = "TLS termination throughput"
    bulk = True
    with_direct = True

    def __init__(self) -> None:
        self.cert: Path | None = None
        self.description = (
            "Python ssl client (sendall 1 MiB) -> OPENSSL-LISTEN:P,cert=server.pem,verify=0,"
            "fork,reuseaddr -> TCP sink (splice); RSA-2048 self-signed certificate, TLS "
            "version and cipher as negotiated (see the notes); direct = the same client -> "
            "Python TLS sink (recv_into 1 MiB), which decrypts instead of a relay"
        )

    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        label = f"{format_size(ctx.settings.tls_bytes)} over TLS"
        return (Metric("mbps", label, "MB/s", higher_is_better=True,
                       targets=(versus(*PEERS, relation=">=", factor=1.2,
                                       goal="TLS at least 1.2x every peer"),)),)

    def prepare(self, ctx: Context) -> None:
        self.cert = make_certificate(ctx.workdir)

    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        assert self.cert is not None, "prepare() makes the certificate"
        return transfer(ctx, candidate, ctx.settings.tls_bytes, tls_cert=self.cert)

    def notes(self, result: WorkloadResult) -> list[str]:
        """The TLS version and cipher each candidate negotiated (they should be the same)."""
        seen = {
            f"{d.get('tls')} {d.get('cipher')}"
            for samples in result.candidates.values() for d in samples.details
        }
        per = "; ".join(
            f"{name}: {samples.details[0].get('tls')} {samples.details[0].get('cipher')}"
            for name, samples in result.candidates.items() if samples.details
        )
        warning = "" if len(seen) <= 1 else " -- DIFFERENT ciphers: the comparison is unfair"
        notes = [f"negotiated {per}{warning}"] if per else []
        return notes + ([note] if (note := busy_note(result)) else [])
