"""TLS transports with certificates made here, against openssl s_server/s_client and socat."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from kubectl_relay.engine.errors import TLSError
from kubectl_relay.engine.log import NOTICE
from kubectl_relay.engine.options import OptionValue
from kubectl_relay.engine.transports import tls
from kubectl_relay.engine.transports.base import Listener, OpenContext, Stream
from tests.conftest import SOCAT, requires_socat, scaled
from tests.engine.transports import read_some, spawn, wait_for_line, wait_for_tcp_port
from tests.engine.transports.streams import address, read_all

CTX = OpenContext()
OPENSSL = shutil.which("openssl")
requires_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is missing")


@dataclass(frozen=True)
class Certs:
    """Files made by the tests: a CA, a server and a client it signed, and strangers."""

    ca: str
    server_pem: str  # key and chain in one file, socat's usual server.pem
    server_crt: str
    server_key: str
    client_pem: str
    other_ca: str
    self_signed: str
    other_key: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    where = tmp_path_factory.mktemp("certs")
    ca = trustme.CA(organization_name="Relay Test CA")
    server = ca.issue_cert(
        "localhost", "127.0.0.1", "::1", common_name="localhost", organization_name="Relay Server"
    )
    client = ca.issue_cert(
        "client@example.org", common_name="relay client", organization_name="Relay Client"
    )
    other = trustme.CA(organization_name="Someone Else")
    stranger = other.issue_cert("localhost")

    def write(name: str, blob: trustme.Blob) -> str:
        blob.write_to_path(str(where / name))
        return str(where / name)

    self_signed = where / "self-signed.pem"
    self_signed.write_bytes(other.private_key_pem.bytes() + other.cert_pem.bytes())
    return Certs(
        ca=write("ca.pem", ca.cert_pem),
        server_pem=write("server.pem", server.private_key_and_cert_chain_pem),
        server_crt=write("server.crt", server.cert_chain_pems[0]),
        server_key=write("server.key", server.private_key_pem),
        client_pem=write("client.pem", client.private_key_and_cert_chain_pem),
        other_ca=write("other-ca.pem", other.cert_pem),
        self_signed=str(self_signed),
        other_key=write("other.key", stranger.private_key_pem),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_of(listener: Listener) -> int:
    return int(listener.label.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def closing(thing: Stream | Listener) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await thing.aclose()


@contextlib.asynccontextmanager
async def tls_listener(**options: OptionValue) -> AsyncIterator[Listener]:
    listener = await tls.listen(address("OPENSSL-LISTEN", "0", bind="127.0.0.1", **options), CTX)
    async with closing(listener):
        yield listener


async def accept(listener: Listener) -> Stream:
    async with asyncio.timeout(scaled(10)):
        return await listener.accept()


@contextlib.asynccontextmanager
async def s_server(*args: str) -> AsyncIterator[int]:
    """``openssl s_server`` on a free loopback port; yields the port."""
    assert OPENSSL is not None
    port = free_port()
    argv = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "9", *args]
    async with spawn(*argv):
        await wait_for_tcp_port(port)
        yield port


# --- our client -------------------------------------------------------------------


@requires_openssl
async def test_client_against_openssl_s_server(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kubectl_relay.engine")
    args = ("-cert", certs.server_crt, "-key", certs.server_key, "-rev", "-quiet")
    async with s_server(*args) as port:
        stream = await tls.connect(address("OPENSSL", "localhost", str(port), cafile=certs.ca), CTX)
        async with closing(stream):
            await stream.write(memoryview(b"hello over tls\n"))
            assert (await read_some(stream)).strip() == b"slt revo olleh"
            assert stream.env["SOCAT_OPENSSL_PROTO_VERSION"] == "TLSv1.3"
            assert stream.env["SOCAT_OPENSSL_X509V3_SUBJECTALTNAME_DNS"] == "localhost"
            assert stream.env["SOCAT_OPENSSL_X509_COMMONNAME"] == "localhost"
    for line in (
        "trusting certificate, commonName matches",
        "SSL proto version used: TLSv1.3",
        "SSL connection using TLS_AES_256_GCM_SHA384",
        'SSL connection compression "none"',
    ):
        assert line in caplog.messages


@requires_openssl
async def test_client_protocol_versions_and_ciphers(certs: Certs) -> None:
    args = ("-cert", certs.server_crt, "-key", certs.server_key, "-rev", "-quiet")
    async with s_server(*args) as port:
        options: dict[str, OptionValue] = {
            "cafile": certs.ca,
            "min_proto_version": "TLSv1.2",
            "max_proto_version": "tls1.2",
            "cipher": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
        }
        stream = await tls.connect(address("OPENSSL", "localhost", str(port), **options), CTX)
        async with closing(stream):
            assert stream.env["SOCAT_OPENSSL_PROTO_VERSION"] == "TLSv1.2"
            assert "AES128-GCM-SHA256" in stream.env["SOCAT_OPENSSL_CIPHER"]
    with pytest.raises(TLSError, match=r'Unknown SSL/TLS version "TLS9" \(accepted: SSL3, '):
        await tls.connect(address("OPENSSL", "localhost", "1", min_proto_version="TLS9"), CTX)
    with pytest.raises(TLSError, match=r'Wrong type of TLS/DTLS version "DTLS1\.2"'):
        await tls.connect(address("OPENSSL", "localhost", "1", max_proto_version="DTLS1.2"), CTX)


@requires_openssl
async def test_client_wrong_ca_names_cause_and_subject(certs: Certs) -> None:
    args = ("-cert", certs.server_crt, "-key", certs.server_key, "-quiet")
    async with s_server(*args) as port:
        with pytest.raises(TLSError) as failure:
            await tls.connect(
                address("OPENSSL", "localhost", str(port), cafile=certs.other_ca), CTX
            )
    message = str(failure.value)
    assert message.startswith(
        "SSL_connect(): certificate verify failed: unable to get local issuer certificate"
    )
    assert 'subject "O = Relay Server, OU = Testing cert ' in message
    assert ", CN = localhost" in message
    assert 'issuer "O = Relay Test CA, OU = Testing CA ' in message


@requires_openssl
async def test_client_wrong_host_name_names_subject(certs: Certs) -> None:
    args = ("-cert", certs.server_crt, "-key", certs.server_key, "-quiet")
    async with s_server(*args) as port:
        with pytest.raises(TLSError) as failure:
            await tls.connect(
                address(
                    "OPENSSL", "127.0.0.1", str(port), cafile=certs.ca, commonname="other.example"
                ),
                CTX,
            )
        message = str(failure.value)
        assert message.startswith(
            'certificate is valid but its commonName does not match hostname "other.example"'
        )
        assert "CN = localhost" in message
        assert "subjectAltName DNS:localhost, IP:127.0.0.1, IP:::1" in message
        # By IP address: the IP entry of subjectAltName matches.
        stream = await tls.connect(address("OPENSSL", "127.0.0.1", str(port), cafile=certs.ca), CTX)
        await stream.aclose()


@requires_openssl
async def test_client_verify_0_accepts_self_signed_server(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kubectl_relay.engine")
    async with s_server("-cert", certs.self_signed, "-rev", "-quiet") as port:
        with pytest.raises(TLSError, match="self-signed certificate"):
            await tls.connect(address("OPENSSL", "localhost", str(port)), CTX)
        stream = await tls.connect(address("OPENSSL", "localhost", str(port), verify=False), CTX)
        async with closing(stream):
            await stream.write(memoryview(b"abc\n"))
            assert (await read_some(stream)).strip() == b"cba"
            assert stream.env["SOCAT_OPENSSL_X509_ORGANIZATIONNAME"] == "Someone Else"
    unverified = [
        r
        for r in caplog.records
        if r.getMessage() == "option openssl-verify disabled, no check of certificate"
    ]
    assert unverified, caplog.messages
    # A warning the first time in a process, a notice after (no spam from forking tunnels).
    assert all(r.levelno in (logging.WARNING, NOTICE) for r in unverified)


def test_verify_0_warns_once_per_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "_unverified_warned", False)
    caplog.set_level(logging.INFO, logger="kubectl_relay.engine")
    tls._log_unverified()
    tls._log_unverified()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "option openssl-verify disabled, no check of certificate"),
        (NOTICE, "option openssl-verify disabled, no check of certificate"),
    ]


def test_bad_certificate_files_name_the_file_and_the_cause(certs: Certs, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases: list[tuple[dict[str, OptionValue], str]] = [
        ({"cert": str(tmp_path / "missing.pem")}, r'cert=".*missing.pem": No such file'),
        ({"cert": str(garbage)}, r'cert=".*garbage.pem": no PEM certificate in the file'),
        ({"cert": certs.server_crt}, r'cert=".*server.crt": no private key \(put it in'),
        (
            {"cert": certs.server_crt, "key": certs.other_key},
            r'private key ".*other.key" does not match certificate ".*server.crt" '
            r'\(subject "O = Relay Server, OU = Testing cert .*, CN = localhost"',
        ),
        ({"cafile": str(tmp_path / "nope.pem")}, r'cafile=".*nope.pem": No such file'),
    ]
    for options, pattern in cases:
        with pytest.raises(TLSError, match=pattern):
            tls._Settings(address("OPENSSL-LISTEN", "0", **options), server=True)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(Path(certs.server_pem).read_bytes())
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(TLSError, match="Permission denied"):
            tls._Settings(address("OPENSSL-LISTEN", "0", cert=str(locked)), server=True)


# --- our listener -----------------------------------------------------------------


@requires_openssl
async def test_listener_against_openssl_s_client_with_half_close(certs: Certs) -> None:
    assert OPENSSL is not None
    async with tls_listener(cert=certs.server_pem, verify=False, fork=True) as listener:
        argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port_of(listener)}"]
        async with spawn(*argv, "-CAfile", certs.ca, "-quiet", "-no_ign_eof") as client:
            stream = await accept(listener)
            async with closing(stream):
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(b"from s_client\n")
                await client.stdin.drain()
                assert await read_some(stream) == b"from s_client\n"
                await stream.write(memoryview(b"from relay\n"))
                assert await wait_for_line(client.stdout, "from relay")
                client.stdin.close()  # s_client sends close_notify and ends
                assert await read_all(stream) == b""


@pytest.fixture(scope="module")
def rsa_server_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An RSA server certificate: TLS 1.2's DHE suites sign with RSA or DSA, not ECDSA."""
    path = tmp_path_factory.mktemp("rsa") / "server.pem"
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca.issue_cert(
        "localhost", key_type=trustme.KeyType.RSA
    ).private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


@requires_openssl
@pytest.mark.parametrize(("group", "bits"), [(None, 2048), ("ffdhe3072", 3072)])
async def test_listener_serves_dhe_suites_with_built_in_or_given_parameters(
    rsa_server_pem: str, group: str | None, bits: int, tmp_path: Path
) -> None:
    """Without DH parameters a DHE-only client gets "no shared cipher" (socat has built-in ones)."""
    assert OPENSSL is not None
    options: dict[str, OptionValue] = {"cert": rsa_server_pem, "verify": False, "fork": True}
    if group is not None:
        dhparams = tmp_path / f"{group}.pem"
        made = await asyncio.create_subprocess_exec(
            OPENSSL, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", f"group:{group}",
            "-out", str(dhparams),
        )  # fmt: skip
        assert await made.wait() == 0
        options["dhparams"] = str(dhparams)
    async with tls_listener(**options) as listener:
        argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port_of(listener)}", "-brief"]
        dhe_only = ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]
        async with spawn(*argv, *dhe_only) as client:
            stream = await accept(listener)
            async with closing(stream):
                assert client.stderr is not None
                assert "DHE-RSA-AES128-GCM-SHA256" in await wait_for_line(
                    client.stderr, "Ciphersuite"
                )
                assert f"DH, {bits} bits" in await wait_for_line(client.stderr, "Server Temp Key")


def test_bad_dh_parameters_name_the_file(certs: Certs, tmp_path: Path) -> None:
    garbage = tmp_path / "dh.pem"
    garbage.write_text("no parameters here\n")
    with pytest.raises(TLSError, match=r'dhparams=".*dh.pem": '):
        tls._Settings(
            address("OPENSSL-LISTEN", "0", cert=certs.server_pem, dhparams=str(garbage)),
            server=True,
        )


@requires_socat
@pytest.mark.socat
@pytest.mark.parametrize("version", ["TLS1.2", "TLS1.3"])
async def test_mutual_tls_real_socat_client_to_our_listener(certs: Certs, version: str) -> None:
    """Both half-closes: socat's close_notify is our EOF, ours ends socat's session."""
    assert SOCAT is not None
    options: dict[str, OptionValue] = {"cert": certs.server_pem, "cafile": certs.ca, "fork": True}
    options["max_proto_version"] = version
    async with tls_listener(**options) as listener:
        target = f"OPENSSL:localhost:{port_of(listener)},cafile={certs.ca},cert={certs.client_pem}"
        async with spawn(SOCAT, "-", target) as client:
            stream = await accept(listener)
            async with closing(stream):
                assert stream.env["SOCAT_OPENSSL_X509_COMMONNAME"] == "relay client"
                assert stream.env["SOCAT_PEERADDR"] == "127.0.0.1"
                assert stream.env["SOCAT_OPENSSL_PROTO_VERSION"] == version.replace("S", "Sv")
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(b"ping\n")
                client.stdin.close()
                assert await read_all(stream) == b"ping\n"  # socat's close_notify is EOF
                await stream.write(memoryview(b"pong\n"))
                await stream.shutdown_write()
                async with asyncio.timeout(scaled(10)):
                    assert await client.stdout.read() == b"pong\n"
                    assert await client.wait() == 0


@requires_socat
@pytest.mark.socat
async def test_mutual_tls_our_client_to_real_socat_listener_and_same_env(certs: Certs) -> None:
    """socat hands our client certificate's fields to its EXEC child, named as we name them."""
    assert SOCAT is not None
    port = free_port()
    listen = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={certs.server_pem}"
    dump = "SYSTEM:env | grep ^SOCAT_OPENSSL_X509 | sort"
    async with spawn(SOCAT, "-d", "-d", f"{listen},cafile={certs.ca}", dump) as server:
        await wait_for_line(server.stderr, "listening on")
        stream = await tls.connect(
            address("OPENSSL", "localhost", str(port), cafile=certs.ca, cert=certs.client_pem),
            CTX,
        )
        async with closing(stream):
            theirs = (await read_all(stream)).decode().splitlines()
    assert "SOCAT_OPENSSL_X509_COMMONNAME=relay client" in theirs
    assert "SOCAT_OPENSSL_X509_ORGANIZATIONNAME=Relay Client" in theirs
    # The same client certificate, presented by socat to our listener.
    async with tls_listener(cert=certs.server_pem, cafile=certs.ca, fork=True) as listener:
        target = f"OPENSSL:localhost:{port_of(listener)},cafile={certs.ca},cert={certs.client_pem}"
        async with spawn(SOCAT, "-", target):
            ours = await accept(listener)
            await ours.aclose()
    mine = sorted(f"{k}={v}" for k, v in ours.env.items() if k.startswith("SOCAT_OPENSSL_X509"))
    assert mine == theirs


async def test_listener_verify_defaults_on_and_keeps_serving(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    """socat: verify=1 on OPENSSL-LISTEN demands a client certificate; one bad peer ends alone."""
    async with tls_listener(cert=certs.server_pem, cafile=certs.ca, fork=True) as listener:
        accepting = asyncio.ensure_future(accept(listener))
        target = ("localhost", str(port_of(listener)))
        # TLS 1.3 ends the client's handshake before the server has seen its
        # certificate; the refusal arrives with the first read.
        anonymous = await tls.connect(address("OPENSSL", *target, cafile=certs.ca), CTX)
        async with closing(anonymous):
            with pytest.raises(TLSError, match="SSL_read\\(\\): tlsv13 alert certificate required"):
                await read_some(anonymous)
        assert "SSL_accept(): peer did not return a certificate" in caplog.messages
        assert not accepting.done()
        client = await tls.connect(
            address("OPENSSL", *target, cafile=certs.ca, cert=certs.client_pem), CTX
        )
        async with closing(client):
            served = await accepting
            async with closing(served):
                await client.write(memoryview(b"hello"))
                assert await read_some(served) == b"hello"


async def test_listener_without_fork_fails_on_bad_handshake(certs: Certs) -> None:
    async with tls_listener(cert=certs.server_pem, cafile=certs.ca) as listener:
        accepting = asyncio.ensure_future(accept(listener))
        target = ("localhost", str(port_of(listener)))
        client = await tls.connect(
            address("OPENSSL", *target, cafile=certs.other_ca, verify=False), CTX
        )
        async with closing(client):
            with pytest.raises(
                TLSError, match="SSL_accept\\(\\): peer did not return a certificate"
            ):
                await accepting


async def test_listener_handshake_timeout_ends_only_that_connection(certs: Certs) -> None:
    options: dict[str, OptionValue] = {"cert": certs.server_pem, "verify": False, "fork": True}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tls, "HANDSHAKE_TIMEOUT", 0.3)
        async with tls_listener(**options) as listener:
            accepting = asyncio.ensure_future(accept(listener))
            with socket.create_connection(("127.0.0.1", port_of(listener))):  # says nothing
                stream = await tls.connect(
                    address("OPENSSL", "localhost", str(port_of(listener)), verify=False), CTX
                )
                async with closing(stream), closing(await accepting):
                    pass


async def test_bulk_both_ways_and_half_close(certs: Certs) -> None:
    """Large transfers in both directions at once keep every byte in order."""
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with tls_listener(cert=certs.server_pem, verify=False, fork=True) as listener:
        accepting = asyncio.ensure_future(accept(listener))
        client = await tls.connect(
            address("OPENSSL", "127.0.0.1", str(port_of(listener)), verify=False), CTX
        )
        server = await accepting
        async with closing(client), closing(server):

            async def send(stream: Stream) -> None:
                view = memoryview(payload)
                for start in range(0, len(view), 100_000):
                    await stream.write(view[start : start + 100_000])
                await stream.shutdown_write()

            async def digest(stream: Stream) -> str:
                return hashlib.sha256(await read_all(stream)).hexdigest()

            async with asyncio.timeout(scaled(60)):
                results = await asyncio.gather(
                    send(client), send(server), digest(client), digest(server)
                )
            expected = hashlib.sha256(payload).hexdigest()
            assert list(results[2:]) == [expected, expected]


async def test_unclean_eof_is_eof_with_a_warning(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_listener(cert=certs.server_pem, verify=False, fork=True) as listener:
        accepting = asyncio.ensure_future(accept(listener))
        context = ssl.create_default_context(cafile=certs.ca)
        raw = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port_of(listener)))
        wrapped = await asyncio.to_thread(context.wrap_socket, raw, server_hostname="localhost")
        server = await accepting
        async with closing(server):
            await asyncio.to_thread(wrapped.sendall, b"last words")
            # End the TCP connection under TLS: a FIN without close_notify.
            with socket.socket(fileno=wrapped.detach()) as bare:
                bare.shutdown(socket.SHUT_WR)
                assert await read_all(server) == b"last words"
        assert any("unexpected EOF" in message for message in caplog.messages)


# --- SNI ---------------------------------------------------------------------------


@contextlib.contextmanager
def sni_recorder(certs: Certs) -> Iterator[tuple[int, list[str | None]]]:
    """A Python TLS server in a thread that records the SNI name of each client."""
    seen: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_pem)
    context.sni_callback = lambda _sock, name, _ctx: seen.append(name)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(scaled(10))

    def serve() -> None:
        with contextlib.suppress(OSError):
            for _ in range(4):
                conn, _ = server.accept()
                with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                    pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        server.close()
        thread.join(scaled(10))


async def test_sni_follows_host_commonname_snihost_and_no_sni(certs: Certs) -> None:
    with sni_recorder(certs) as (port, seen):
        for options in (
            {},
            {"snihost": "mock.example"},
            {"no_sni": True},
        ):
            stream = await tls.connect(
                address("OPENSSL", "localhost", str(port), verify=False, **options), CTX
            )
            await stream.aclose()
        ip = await tls.connect(address("OPENSSL", "127.0.0.1", str(port), verify=False), CTX)
        await ip.aclose()
    assert seen == ["localhost", "mock.example", None, None]


async def test_client_checks_an_ipv6_host_in_brackets_as_written(
    tmp_path: Path,
) -> None:
    """socat checks ``OPENSSL:[::1]:port`` against the name ``[::1]``, brackets and all.

    socat's own IPv6 test certificates carry the commonName ``[::1]``; a
    commonName ``::1`` does not match. (An IP subjectAltName is an address
    and matches without brackets: see test_client_wrong_host_name_names_subject.)
    """
    ca = trustme.CA()
    results = []
    for common_name in ("[::1]", "::1"):
        leaf = ca.issue_cert("ipv6.example", common_name=common_name)
        pem = tmp_path / "server.pem"
        pem.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        listener = await tls.listen(
            address("OPENSSL-LISTEN", "0", bind="[::1]", cert=str(pem), verify=False), CTX
        )
        async with closing(listener):
            port = port_of(listener)
            accepting = asyncio.ensure_future(accept(listener))
            try:
                stream = await tls.connect(
                    address("OPENSSL", "::1", str(port), cafile=str(ca_file)), CTX
                )
            except TLSError as exc:
                results.append(str(exc).split(" (")[0])
            else:
                await stream.aclose()
                results.append("trusted")
            finally:
                accepting.cancel()
                with contextlib.suppress(asyncio.CancelledError, TLSError):
                    await (await accepting).aclose()
    assert results == [
        "trusted",
        'certificate is valid but its commonName does not match hostname "[::1]"',
    ]


@pytest.mark.parametrize("compress", ["auto", "none", "NONE"])
async def test_compress_option_is_accepted(certs: Certs, compress: str) -> None:
    """socat's ``compress=auto|none``: the handshake works either way (no compression here)."""
    async with tls_listener(cert=certs.server_pem, verify=False, compress=compress) as listener:
        accepting = asyncio.ensure_future(accept(listener))
        client = await tls.connect(
            address(
                "OPENSSL", "127.0.0.1", str(port_of(listener)), verify=False, compress=compress
            ),
            CTX,
        )
        server = await accepting
        await client.aclose()
        await server.aclose()
