"""``OPENSSL`` and ``OPENSSL-LISTEN``: TLS over the TCP streams of ``tcp.connect``/``tcp.listen``.

socat's man page, which this module follows:

- ``OPENSSL:<host>:<port>``: "socat checks the peer certificate for match with
  the <host> parameter or the value of the openssl-commonname option ...
  against the certificates subject commonName, and the certificates extension
  subjectAltName DNS names. Wildcards in the certificate are supported."
- ``verify``: "Controls check of the peer's certificate. Default is 1 (true)",
  on both sides: a server with ``verify=1`` requests a client certificate and
  fails clients without one, trusting ``cafile``/``capath`` or the system store.
- ``cert``: "the certificate and private key"; ``key``: "The private key may be
  in this file or in the file given with the cert option."
- ``commonname``: "With OPENSSL-CONNECT address this overrides the given
  hostname or IP target address; with OPENSSL-LISTEN this turns on check of
  peer certificates commonname." SNI "uses commonname or the given host name".
- ``fork``: "OPENSSL-LISTEN forks before the SSL handshake": each connection is
  handshaken on its own, and a failed handshake ends that connection only.

TLS runs over an ``ssl.MemoryBIO`` pair: one ``recv`` feeds many records to
OpenSSL and a whole block is encrypted before one ``send``. Measured against a
non-blocking ``SSLSocket`` with socat as the peer, both spend the same CPU per
gigabyte (within noise); the BIO pair lets the two directions of a session
share one connection safely and gives a clean half-close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
import warnings
from collections.abc import Coroutine
from typing import Any, cast

from ..addresses import Address
from ..errors import OpenError, RelayError, TLSError
from ..log import NOTICE, WARNING, logger
from ..options import Options
from . import tcp
from .base import Listener, OpenContext, ReadinessWatch, Stream
from .tcp import address_text, strerror
from .x509 import ATTRIBUTES, PeerCertificate, name_matches

#: socat's default cipher list (xio-openssl.c).
DEFAULT_CIPHERS = "HIGH:-NULL:-PSK:-aNULL"
#: Diffie-Hellman parameters of a server without ``dhparams=`` (socat has built-in
#: 2048-bit ones too): RFC 7919's ffdhe2048 group, as ``openssl genpkey -genparam
#: -algorithm DH -pkeyopt group:ffdhe2048`` writes it. TLS 1.2's DHE suites need
#: them; a DSA certificate can be served with nothing else.
FFDHE2048_PEM = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""
#: Bound of a handshake when ``connect-timeout`` does not give one (socat has none).
HANDSHAKE_TIMEOUT = 60.0
#: Most encrypted bytes taken from the socket at once, and plaintext encrypted at once.
IO_SIZE = 256 * 1024
#: The first receive buffer: one whole TLS record. It grows fourfold whenever a
#: read fills it (bulk flows), so that idle connections stay small.
RECV_START = 17 * 1024
#: With ``fork``: connections handshaking at once, and handshaken ones waiting for ``accept()``.
MAX_HANDSHAKES = 64
MAX_READY = 16
#: Closing: how long, and how many bytes, to read and discard while waiting
#: for the peer's end after our close_notify (see ``TLSStream._drain``).
CLOSE_DRAIN_SECONDS = 2.0
CLOSE_DRAIN_BYTES = 4 * 1024 * 1024

_VERSIONS = {
    "SSL3": ssl.TLSVersion.SSLv3,
    "TLS1": ssl.TLSVersion.TLSv1,
    "TLS1.0": ssl.TLSVersion.TLSv1,
    "TLS1.1": ssl.TLSVersion.TLSv1_1,
    "TLS1.2": ssl.TLSVersion.TLSv1_2,
    "TLS1.3": ssl.TLSVersion.TLSv1_3,
}


def _version(address: Address, text: str) -> ssl.TLSVersion:
    """socat's version names, any case, with or without ``v`` (``TLS1.2``, ``TLSv1.2``)."""
    key = re.sub(r"^(D?TLS|SSL)V", r"\1", text.upper())
    if key in _VERSIONS:
        return _VERSIONS[key]
    if key.startswith("DTLS"):
        reason = f'Wrong type of TLS/DTLS version "{text}"'
    elif key == "SSL2":
        reason = f'SSL/TLS version "{text}" is not provided by OpenSSL'
    else:
        reason = f'Unknown SSL/TLS version "{text}" (accepted: {", ".join(_VERSIONS)})'
    raise TLSError(address_text(address), reason)


def _read_file(text: str, option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSError(text, f'{option}="{path}": {strerror(exc)}') from None


def _load_identity(text: str, context: ssl.SSLContext, cert: str, key: str | None) -> bytes:
    """Options ``cert`` and ``key``, with a message naming the file and the fault.

    Returns the certificate file's text (it may hold DH parameters too).
    """
    pem = _read_file(text, "cert", cert)
    key_option, key_path = ("key", key) if key else ("cert", cert)
    key_pem = pem if key is None else _read_file(text, "key", key)
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if not blocks:
        raise TLSError(text, f'cert="{cert}": no PEM certificate in the file')
    if b"PRIVATE KEY-----" not in key_pem:
        hint = "" if key else " (put it in this file or give option key)"
        raise TLSError(text, f'{key_option}="{key_path}": no private key{hint}')
    if b"ENCRYPTED" in key_pem:  # socat would prompt on the terminal; a relay cannot
        raise TLSError(text, f'{key_option}="{key_path}": the private key is encrypted')
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except OSError as exc:  # ssl.SSLError included
        if getattr(exc, "reason", None) != "KEY_VALUES_MISMATCH":
            raise TLSError(text, f'cert="{cert}": {_reason(exc)}') from None
        certificate = PeerCertificate(ssl.PEM_cert_to_DER_cert(blocks[0].decode("ascii")))
        reason = f'private key "{key_path}" does not match certificate "{cert}"'
        raise TLSError(text, f"{reason} ({certificate.describe()})") from None
    return pem


class _Settings:
    """An address's TLS options, checked once: the context and what to verify."""

    def __init__(self, address: Address, server: bool) -> None:
        options, text = address.options, address_text(address)
        self.verify = options.flag("verify", True)
        self.peername = options.text("commonname")
        host = address.params[0]
        if not server and self.peername is None:
            # socat checks the host as written: an IPv6 address in its brackets
            # ("[::1]", the commonName socat's own IPv6 test certificates carry).
            self.peername = f"[{host}]" if ":" in host else host
        # Python sends no SNI for an IP address literal, as RFC 6066 requires.
        sni = options.text("snihost") or options.text("commonname") or host
        self.sni = None if server or options.flag("no-sni") else sni
        self.timeout = options.seconds("connect-timeout", HANDSHAKE_TIMEOUT) or HANDSHAKE_TIMEOUT
        protocol = ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT
        self.context = context = ssl.SSLContext(protocol)
        context.check_hostname = False  # socat's own name check follows the handshake
        context.verify_mode = ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        # A renegotiation would need the write side to read; refuse it, as TLS 1.3 does.
        context.options |= ssl.OP_NO_RENEGOTIATION
        # A TCP end without close_notify may be a truncation, and socat says so:
        # Debian's Python sets this option on every context, which hides it.
        context.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        # socat's compress=auto leaves OpenSSL's choice, compress=none turns it off
        # (Python's contexts start with it off; OpenSSL 3 builds rarely have any).
        if (options.text("compress") or "none").lower() == "auto":
            context.options &= ~ssl.OP_NO_COMPRESSION
        ciphers = options.text("cipher")
        try:
            context.set_ciphers(ciphers or DEFAULT_CIPHERS)
        except ssl.SSLError:
            raise TLSError(text, f'cipher="{ciphers}": no cipher matches') from None
        for name, attribute in (
            ("min-proto-version", "minimum_version"),
            ("max-proto-version", "maximum_version"),
        ):
            if (version := options.text(name)) is not None:
                with warnings.catch_warnings():  # old versions are the user's explicit choice
                    warnings.simplefilter("ignore", DeprecationWarning)
                    setattr(context, attribute, _version(address, version))
        cafile, capath = options.text("cafile"), options.text("capath")
        try:
            if cafile or capath:
                context.load_verify_locations(cafile, capath)
            else:
                context.set_default_verify_paths()
        except (ssl.SSLError, OSError) as exc:
            where = f'cafile="{cafile}"' if cafile else f'capath="{capath}"'
            raise TLSError(text, f"{where}: {_reason(exc)}") from None
        cert = options.text("cert")
        cert_pem = b""
        if cert:
            cert_pem = _load_identity(text, context, cert, options.text("key"))
        elif server:
            logger.warning('no certificate given; consider option "cert"')
        if server:
            _load_dh_params(text, context, options.text("dhparams"), cert, cert_pem)


def _load_dh_params(
    text: str, context: ssl.SSLContext, dhparams: str | None, cert: str | None, cert_pem: bytes
) -> None:
    """socat's order: ``dhparams=``, else parameters in the certificate's file, else built-in.

    ``cert_pem`` is the text of the file ``cert`` names, as ``_load_identity`` read it.
    """
    if dhparams is None and cert and b"BEGIN DH PARAMETERS" in cert_pem:
        dhparams, option = cert, "cert"
    else:
        option = "dhparams"
    if dhparams is not None:
        try:
            context.load_dh_params(dhparams)
        except OSError as exc:  # ssl.SSLError included
            raise TLSError(text, f'{option}="{dhparams}": {_reason(exc)}') from None
        return
    # load_dh_params() reads only a named file: an anonymous one in memory.
    builtin = os.memfd_create("relay-ffdhe2048")
    try:
        os.write(builtin, FFDHE2048_PEM)
        context.load_dh_params(f"/proc/self/fd/{builtin}")
    finally:
        os.close(builtin)


def _reason(exc: OSError) -> str:
    """OpenSSL's reason text as socat prints it (``certificate verify failed``), or errno's."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason.lower().replace("_", " ")
    return strerror(exc) if exc.errno else str(exc)


_unverified_warned = False


def _log_unverified() -> None:
    """``verify=0`` is worth a warning (the issue's security default), but once per
    process: a forking tunnel would otherwise print it for every connection."""
    global _unverified_warned
    level = NOTICE if _unverified_warned else WARNING
    _unverified_warned = True
    logger.log(level, "option openssl-verify disabled, no check of certificate")


class TLSStream(Stream):
    """A TLS connection over a connected TCP socket stream."""

    def __init__(self, inner: Stream, settings: _Settings, server: bool) -> None:
        sock = getattr(inner, "sock", None)
        if not isinstance(sock, socket.socket):
            raise TypeError("TLS needs a socket stream underneath")
        self.inner, self.sock, self._fd = inner, sock, sock.fileno()
        self.label = inner.label
        self.env = self._env = dict(inner.env)
        self.settings = settings
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._ssl = settings.context.wrap_bio(
            self._in, self._out, server_side=server, server_hostname=settings.sni
        )
        self._buffer = bytearray(RECV_START)
        self._readable = ReadinessWatch(self._fd)
        self._writable = ReadinessWatch(self._fd, writable=True)
        self._drained = False  # the last recv was short: wait before the next one
        self._unsent = bytearray()
        self._stash = bytearray()  # plaintext decrypted early by shutdown_write
        self._send_turn = asyncio.Lock()
        self._established = self._eof = self._shut = self._closed = False

    async def _fill(self) -> None:
        """Move what the socket has into the TLS engine (or tell it about EOF)."""
        if self._drained:
            await self._readable.wait()
        while True:
            try:
                count = self.sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                await self._readable.wait()
                continue
            except OSError as exc:
                raise OpenError(self.label, f"SSL_read(): {strerror(exc)}") from None
            if not count:
                self._in.write_eof()
                return
            self._in.write(memoryview(self._buffer)[:count])
            self._drained = count < len(self._buffer)
            if not self._drained and len(self._buffer) < IO_SIZE:
                self._buffer = bytearray(min(len(self._buffer) * 4, IO_SIZE))
            return

    async def _flush(self, *, reader: bool = False) -> None:
        """Send everything OpenSSL produced, in order, whichever task produced it.

        The reading direction never waits behind the writing one (which sends
        all that is queued anyway): a reader blocked on a full send buffer
        could deadlock with a peer that waits for us to read.
        """
        if self._out.pending:
            data = self._out.read()
            if not self._unsent and not self._send_turn.locked():
                # The common case: nothing queued, so send without one more copy.
                try:
                    sent = self.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    raise OpenError(self.label, f"SSL_write(): {strerror(exc)}") from None
                if sent == len(data):
                    return
                data = data[sent:]
            self._unsent += data
        if not self._unsent or (reader and self._send_turn.locked()):
            return
        async with self._send_turn:  # one waiter for writability at a time
            while self._unsent:
                try:
                    sent = self.sock.send(self._unsent)
                except (BlockingIOError, InterruptedError):
                    await self._writable.wait()
                    continue
                except OSError as exc:
                    raise OpenError(self.label, f"SSL_write(): {strerror(exc)}") from None
                del self._unsent[:sent]

    async def handshake(self) -> None:
        """Run the handshake to its end, bounded by the settings' timeout."""
        async with asyncio.timeout(self.settings.timeout):
            while True:
                try:
                    self._ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._flush()
                    await self._fill()
            await self._flush()
        self._established = True

    def _read(self, buffer: memoryview) -> int:
        # With a buffer, SSLObject.read decrypts into it and returns a count.
        return cast(int, self._ssl.read(len(buffer), buffer))

    async def read_into(self, buffer: memoryview) -> int:
        while True:
            if self._stash:
                count = min(len(buffer), len(self._stash))
                buffer[:count] = self._stash[:count]
                del self._stash[:count]
                return count
            if self._eof:
                return 0
            try:
                count = self._read(buffer)
            except ssl.SSLWantReadError:
                if self._out.pending:  # a post-handshake answer (key update...)
                    await self._flush(reader=True)
                await self._fill()
                continue
            except ssl.SSLZeroReturnError:
                count = 0
            except ssl.SSLError as exc:
                # Python before 3.11.4 raises a plain SSLError for this one.
                if not (
                    isinstance(exc, ssl.SSLEOFError) or exc.reason == "UNEXPECTED_EOF_WHILE_READING"
                ):
                    raise TLSError(self.label, f"SSL_read(): {_reason(exc)}") from None
                logger.warning("SSL_read(): unexpected EOF, the peer closed without close_notify")
                count = 0
            if count == 0:
                self._eof = True  # close_notify: the peer's EOF
                return 0
            # More records may be buffered already: fill the block without system calls.
            while count < len(buffer) and (self._in.pending or self._ssl.pending()):
                try:
                    more = self._read(buffer[count:])
                except ssl.SSLError:
                    break  # EOF and errors show on the next call
                if not more:
                    break
                count += more
            return count

    async def write(self, data: memoryview) -> None:
        for start in range(0, len(data), IO_SIZE):
            try:
                self._ssl.write(data[start : start + IO_SIZE])
            except ssl.SSLError as exc:
                raise TLSError(self.label, f"SSL_write(): {_reason(exc)}") from None
            await self._flush()

    async def shutdown_write(self) -> None:
        """Send close_notify; the peer may go on sending until it sends its own."""
        if self._shut or self._closed:
            return
        self._shut = True
        # OpenSSL's shutdown reads on and fails on application data it meets
        # ("application data after close notify"): decrypt what is buffered first.
        with contextlib.suppress(ssl.SSLError):
            while chunk := self._ssl.read(IO_SIZE):
                self._stash += chunk
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is sent; the peer's close_notify comes later
        except ssl.SSLError as exc:
            logger.info("SSL_shutdown(): %s", _reason(exc))
        await self._flush()

    def unsent(self) -> int:
        # Our records that the kernel still holds for the peer: a session's end
        # waits for them before closing (``transfer.linger``), as for plain TCP.
        return 0 if self._closed else len(self._unsent) + self.inner.unsent()

    def reset(self) -> None:
        # No close_notify either: it would tell the peer that the stream ended well.
        self._established = False
        self.inner.reset()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._established and not self._shut:
            with contextlib.suppress(ssl.SSLError):  # want-read: ours is queued, enough
                self._ssl.unwrap()
        # What OpenSSL still has to say (this close_notify, or the alert that
        # tells a peer why its handshake failed), without waiting for anything.
        with contextlib.suppress(OSError):
            self.sock.send(self._unsent + self._out.read())
        try:
            if self._established and not self._eof:
                await self._drain()
        finally:
            self._readable.close()
            self._writable.close()
            await self.inner.aclose()

    async def _drain(self) -> None:
        """Read and discard what the peer still sends, until its end or a bound.

        A socket closed with unread data in its receive queue makes the kernel
        answer with a reset instead of a FIN, and the reset destroys whatever
        the peer has not read yet of what we sent: the tail of a transfer. A
        TLS 1.3 server always leaves such data, its session tickets, which a
        client that only writes (``-u``) never reads. So read what has
        arrived and, once our close_notify is out, wait (bounded) for the
        peer's end, as socat's client does.
        """
        taken = 0
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_DRAIN_SECONDS):
                while taken < CLOSE_DRAIN_BYTES:
                    try:
                        count = self.sock.recv_into(self._buffer)
                    except (BlockingIOError, InterruptedError):
                        if not self._shut:
                            return  # no close_notify of ours: nothing to wait for
                        await self._readable.wait()
                        continue
                    if not count:
                        return
                    taken += count

    def peer_certificate(self) -> PeerCertificate | None:
        der = self._ssl.getpeercert(binary_form=True)
        return None if der is None else PeerCertificate(der)

    def established(self) -> None:
        """socat's checks and log lines after a handshake; fills ``env``.

        Raises ``TLSError`` when verification demands a certificate or a name
        that the peer did not present.
        """
        settings, env = self.settings, self._env
        certificate = self.peer_certificate()
        if certificate is None:
            if settings.verify:
                raise TLSError(self.label, "no peer certificate")
            logger.log(NOTICE, "no peer certificate and no check")
        else:
            if settings.verify:
                logger.info("peer certificate is trusted")
            for field, name in (("subject", certificate.subject), ("issuer", certificate.issuer)):
                env[f"SOCAT_OPENSSL_X509_{field.upper()}"] = PeerCertificate.oneline(name)
                logger.info('SSL peer cert %s: "%s"', field, PeerCertificate.oneline(name))
            for rdn in certificate.subject:
                for oid, value in rdn:
                    if oid in ATTRIBUTES:
                        key = "SOCAT_OPENSSL_X509_" + ATTRIBUTES[oid][1].upper()
                        env[key] = f"{env[key]} // {value}" if key in env else value
            if not settings.verify:
                _log_unverified()
            else:
                logger.log(NOTICE, "%s", self._check_name(certificate))
        version, cipher = self._ssl.version() or "", (self._ssl.cipher() or ("",))[0]
        logger.log(NOTICE, "SSL proto version used: %s", version)
        logger.log(NOTICE, "SSL connection using %s", cipher)
        for what in ("compression", "expansion"):
            logger.log(NOTICE, 'SSL connection %s "%s"', what, self._ssl.compression() or "none")
        env["SOCAT_OPENSSL_PROTO_VERSION"], env["SOCAT_OPENSSL_CIPHER"] = version, cipher

    def _check_name(self, certificate: PeerCertificate) -> str:
        """socat's name check of a trusted certificate: subjectAltName first, then commonName."""
        peername = self.settings.peername
        for kind, value in certificate.alt_names:
            key = "SOCAT_OPENSSL_X509V3_SUBJECTALTNAME_" + ("DNS" if kind == "DNS" else "IPADD")
            self._env[key] = f"{self._env[key]} // {value}" if key in self._env else value
            # An IP subjectAltName is an address: compare it without brackets.
            written = peername.strip("[]") if peername and kind == "IP" else peername
            if written and name_matches(value, written):
                return "trusting certificate, commonName matches"
        if not peername:
            return "trusting certificate, no check of commonName"
        common_name = certificate.common_name
        if common_name is not None and name_matches(common_name, peername):
            return "trusting certificate, commonName matches"
        alt = ", ".join(f"{kind}:{value}" for kind, value in certificate.alt_names) or "none"
        raise TLSError(
            self.label,
            f'certificate is valid but its commonName does not match hostname "{peername}" '
            f"({certificate.describe()}, subjectAltName {alt})",
        )


async def _start(inner: Stream, settings: _Settings, server: bool) -> TLSStream:
    """The handshake and socat's checks over a connected ``inner`` stream.

    On failure the connection is closed and ``TLSError`` says why.
    """
    call = "SSL_accept" if server else "SSL_connect"
    try:
        stream = TLSStream(inner, settings, server)
    except (TypeError, ValueError) as exc:
        await inner.aclose()
        raise TLSError(inner.label, f"{call}(): {exc}") from None
    try:
        try:
            await stream.handshake()
        except TimeoutError:
            raise TLSError(
                stream.label, f"{call}(): no handshake within {settings.timeout:g} seconds"
            ) from None
        except ssl.SSLError as exc:
            raise TLSError(stream.label, f"{call}(): {_reason(exc)}") from None
        stream.established()
    except BaseException:
        await stream.aclose()
        raise
    return stream


async def connect(address: Address, ctx: OpenContext) -> Stream:
    """Open ``OPENSSL:<host>:<port>``: TCP connect, handshake, certificate checks."""
    if not address.params[0]:
        # An empty name would disable the commonName check.
        raise OpenError(address_text(address), f"{address.keyword}: empty host name")
    settings = _Settings(address, server=False)
    inner = await tcp.connect(Address("TCP", address.params, address.options), ctx)
    try:
        return await _start(inner, settings, server=False)
    except TLSError as exc:
        if "certificate verify failed" not in exc.reason:
            raise
        # The chain check failed inside OpenSSL, which keeps the certificate to
        # itself; fetch it once more, unchecked, to name it in the message.
        seen = await _probe(address, ctx)
        raise TLSError(exc.address, f"{exc.reason} ({seen})" if seen else exc.reason) from None


async def _probe(address: Address, ctx: OpenContext) -> str | None:
    probe = Address(address.keyword, address.params, Options({**address.options, "verify": False}))
    settings = _Settings(probe, server=False)
    settings.timeout = min(settings.timeout, 5.0)
    try:
        inner = await tcp.connect(Address("TCP", probe.params, probe.options), ctx)
        stream = TLSStream(inner, settings, server=False)
        try:
            await stream.handshake()
            certificate = stream.peer_certificate()
            return None if certificate is None else f"peer certificate {certificate.describe()}"
        finally:
            await stream.aclose()
    except (RelayError, ssl.SSLError, OSError, TimeoutError, TypeError):
        return None


class TLSListener(Listener):
    """``OPENSSL-LISTEN``: a TCP listener whose connections are handshaken before use.

    Without ``fork`` the one connection's handshake failure is the address's
    failure, as socat exits then. With ``fork`` handshakes run concurrently,
    each bounded by a timeout; a failure is logged and ends that connection
    only, and ``accept()`` returns connections whose handshake succeeded.
    """

    def __init__(self, address: Address, inner: Listener, settings: _Settings) -> None:
        self.address, self.inner, self.settings = address, inner, settings
        self.label = inner.label
        self.fork = address.options.flag("fork")
        self._ready: asyncio.Queue[TLSStream | BaseException] = asyncio.Queue(MAX_READY)
        self._slots = asyncio.Semaphore(MAX_HANDSHAKES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = False

    async def accept(self) -> Stream:
        if not self.fork:
            return await _start(await self.inner.accept(), self.settings, server=True)
        if not self._accepting:
            self._accepting = True
            self._spawn(self._accept_loop())
        ready = await self._ready.get()
        if isinstance(ready, BaseException):
            raise ready
        return ready

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self) -> None:
        try:
            while True:
                await self._slots.acquire()
                try:
                    inner = await self.inner.accept()
                except BaseException:
                    self._slots.release()
                    raise
                self._spawn(self._handshake(inner))
        except RelayError as exc:
            await self._ready.put(exc)  # the listening socket itself failed

    async def _handshake(self, inner: Stream) -> None:
        try:
            stream = await _start(inner, self.settings, server=True)
        except RelayError as exc:
            logger.error("%s", exc)
            return
        finally:
            self._slots.release()
        try:
            await self._ready.put(stream)
        except BaseException:
            await stream.aclose()
            raise

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._ready.empty():
            left = self._ready.get_nowait()
            if isinstance(left, TLSStream):
                await left.aclose()
        await self.inner.aclose()


async def listen(address: Address, ctx: OpenContext) -> Listener:
    """Listen for ``OPENSSL-LISTEN:<port>``; ``accept()`` yields handshaken TLS streams."""
    settings = _Settings(address, server=True)
    inner = await tcp.listen(Address("TCP-LISTEN", address.params, address.options), ctx)
    return TLSListener(address, inner, settings)
