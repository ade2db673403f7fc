"""The netmaster's HTTP server: Twisted's parser with Go ``net/http``'s refusals.

Twisted's :class:`~twisted.web.http.HTTPChannel` already bounds what it
buffers (one line, all header bytes, the header count), but it answers a
breach in three different ways, none of them Go's: a line longer than
``LineReceiver.MAX_LENGTH`` (one 16 KiB header, an overlong path) closes the
connection without a word, too many header bytes or headers get a bare
``400``, and it accepts a request body of any size.  Contiv's clients (and
operators reading ``curl`` output) expect what the Go netmaster says:

* headers too large → ``431 Request Header Fields Too Large`` (Go's exact
  status line and body), then close;
* a malformed request → ``400 Bad Request`` in the same plain-text form;
* a body over :data:`MAX_BODY_BYTES` → ``413`` before the body is read;
* an exception that escapes the resource (a bug) → one logged traceback and
  ``500 internal error`` as text, never Twisted's "Processing Failed" HTML.

The hooks sit where Twisted enforces its limits (``lineReceived``,
``lineLengthExceeded``, ``headerReceived``, ``allHeadersReceived``,
``_respondToBadRequestAndDisconnect``) so Twisted still does all of the
HTTP parsing.
"""

from __future__ import annotations

import re
from typing import Optional

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import IResource

log = Logger()

#: Request line plus all header lines, in bytes.  Go allows 1 MiB
#: (``http.DefaultMaxHeaderBytes``), but no Contiv client sends more than a few
#: hundred bytes of headers; Twisted's own 16 KiB default keeps a hostile
#: client's unparsed bytes small, and one header or path that alone exceeds it
#: gets 431 like Go's over-limit answer.
MAX_HEADER_BYTES = 16 * 1024

#: Header count.  Go has only the byte limit; Twisted's default is 500.  No
#: Contiv client sends more than about ten, and each header costs a parse and
#: a dictionary entry, so 100 is generous and still small.
MAX_HEADERS = 100

#: Largest request body accepted.  The biggest legitimate body is one model
#: object (a policy with its rules, a network with a long tag list): a few KiB.
#: 1 MiB leaves room for any real object while bounding what one request can
#: make the netmaster buffer and parse (bodies are held in memory and parsed
#: as one JSON document).
MAX_BODY_BYTES = 1024 * 1024

#: Idle keep-alive connections are closed after this many seconds (Twisted's
#: default is 12 hours: a client that opens connections and goes silent would
#: hold sockets that long).  The timer is off while a request is processed.
IDLE_TIMEOUT = 120

HEADERS_TOO_LARGE = "431 Request Header Fields Too Large"
BAD_REQUEST = "400 Bad Request"
BODY_TOO_LARGE = "413 Request Entity Too Large"
BODY_TOO_LARGE_TEXT = (f"http: request body too large: the netmaster accepts at most "
                       f"{MAX_BODY_BYTES} bytes")


def _refusal(status: str, body: Optional[str] = None) -> bytes:
    """Go's connection-level refusal (``net/http`` server.go): status line, plain
    text, ``Connection: close``; the body defaults to the status itself."""
    text = (status if body is None else body).encode("utf-8")
    return (f"HTTP/1.1 {status}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Connection: close\r\n"
            f"Content-Length: {len(text)}\r\n\r\n").encode("ascii") + text


def _peer(transport) -> str:
    try:
        addr = transport.getPeer()
        return f"{addr.host}:{addr.port}"
    except Exception:  # a UNIX socket or a test transport
        return "?"


class ContivChannel(http.HTTPChannel):
    """An :class:`HTTPChannel` whose limit breaches answer like Go and then stop
    reading: after a refusal nothing more from the peer is parsed or buffered."""

    MAX_LENGTH = MAX_HEADER_BYTES
    totalHeadersSize = MAX_HEADER_BYTES
    maxHeaders = MAX_HEADERS

    _refused = False

    def refuse(self, status: str, body: Optional[str] = None) -> None:
        """Answer ``status`` once, close, and ignore whatever the peer still sends."""
        if self._refused:
            return
        self._refused = True
        log.debug("refused HTTP request from {peer}: {status}", peer=_peer(self.transport),
                  status=status)
        self.setRawMode()  # no more lines: later bytes go to rawDataReceived and are dropped
        if self.transport is not None:
            self.transport.write(_refusal(status, body))
        self.loseConnection()

    # -- Twisted's limit hooks ------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        """One line (request line or header) over the limit: LineReceiver would
        just drop the connection."""
        self.refuse(HEADERS_TOO_LARGE)

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(HEADERS_TOO_LARGE)
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(HEADERS_TOO_LARGE)
            return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:
        """Refuse a declared body over the limit before reading (or 100-continuing) it.
        Chunked bodies are counted as they arrive (:meth:`ContivRequest.handleContentChunk`)."""
        if self.length is not None and self.length > MAX_BODY_BYTES:
            self.refuse(BODY_TOO_LARGE, BODY_TOO_LARGE_TEXT)
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        if not self._refused:  # a body refused midway is never handed to a resource
            super().allContentReceived()

    def timeoutConnection(self) -> None:
        """Close an idle keep-alive connection; Twisted's version logs one info
        line per idle client, which for agents holding connections is noise."""
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's single exit for malformed requests (bad request line, bad
        # header, bad Content-Length or chunking); it writes a bare 400.
        self.refuse(BAD_REQUEST)


class ContivRequest(server.Request):
    """Counts the body as it arrives and turns an escaped exception into text."""

    _body_bytes = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Nothing here reads request.args: don't parse form bodies (Contiv's
        # Python client labels JSON as form-encoded).
        self._parsePOSTFormSubmission = False

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if isinstance(channel, ContivChannel) and channel._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > MAX_BODY_BYTES:
            if isinstance(channel, ContivChannel):
                channel.refuse(BODY_TOO_LARGE, BODY_TOO_LARGE_TEXT)
            return
        super().handleContentChunk(data)

    def _handleStar(self) -> None:
        # Twisted answers a ``*`` target itself (405 for anything but OPTIONS)
        # before any resource sees it.  Go's server: ``OPTIONS *`` is an empty
        # 200, any other method on ``*`` reaches the router, which has no such
        # route: ``404 page not found``.
        if self.method == b"OPTIONS":
            self.setResponseCode(http.OK)
            self.setHeader(b"Content-Length", b"0")
            self.finish()
            return
        self._plain(http.NOT_FOUND, b"404 page not found\n")

    def _plain(self, code: int, body: bytes) -> None:
        """Answer as Go's ``http.Error`` does: status, text, nosniff."""
        self.setResponseCode(code)
        self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self.setHeader(b"X-Content-Type-Options", b"nosniff")
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def processingFailed(self, reason):
        """A bug below the router (the router itself catches everything it
        calls): log it once with its traceback, answer Go-style text."""
        log.failure("{method} request failed", reason,
                    method=self.method.decode("latin-1"))
        if self.finished or self._disconnected:
            return reason
        self._plain(http.INTERNAL_SERVER_ERROR, b"internal error\n")
        return reason


class ContivSite(server.Site):
    """A :class:`Site` built on :class:`ContivChannel` and :class:`ContivRequest`;
    no per-request access log (it halves throughput, and refusals log themselves)."""

    requestFactory = ContivRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, resource: IResource) -> None:
        super().__init__(resource, requestFactory=ContivRequest, timeout=IDLE_TIMEOUT)

    def log(self, request) -> None:
        pass

    def protocol(self) -> http.HTTPChannel:  # type: ignore[override]
        # HTTPFactory builds ``self.protocol(self)``; a plain channel (no TLS/ALPN
        # switch to HTTP/2 is ever negotiated here) with our limits.
        return ContivChannel()


def make_site(resource: IResource) -> server.Site:
    """The :class:`Site` the netmaster serves its API resource with."""
    return ContivSite(resource)


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def tls_options(cert_path: str, key_path: str):
    """Server TLS (1.2 at least) from PEM files: ``cert_path`` holds the
    certificate, then any intermediates; ``key_path`` its private key.

    Read and checked once at start (a key that does not match its
    certificate is refused here, with both paths named, not at the first
    handshake).  Raises :class:`ValueError` with what to fix."""
    from OpenSSL import SSL, crypto
    from twisted.internet.ssl import CertificateOptions, TLSVersion
    try:
        with open(cert_path, "rb") as f:
            blocks = _PEM_CERT.findall(f.read())
        with open(key_path, "rb") as f:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
        if not blocks:
            raise ValueError(f"no PEM certificate in {cert_path}")
        certs = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
        options = CertificateOptions(privateKey=key, certificate=certs[0],
                                     extraCertChain=certs[1:],
                                     raiseMinimumTo=TLSVersion.TLSv1_2)
        options.getContext()  # checks that the key matches the certificate
    except (OSError, SSL.Error, crypto.Error, ValueError) as e:
        raise ValueError(f"cannot serve TLS with --tls-cert {cert_path} --tls-key {key_path}: "
                         f"{e}; give a PEM certificate and its matching private key") from None
    return options


def make_tls_site(site: server.Site, cert_path: str, key_path: str):
    """``site`` behind TLS, for any listening endpoint (tcp, tcp6, unix)."""
    from twisted.protocols.tls import TLSMemoryBIOFactory
    factory = TLSMemoryBIOFactory(tls_options(cert_path, key_path), False, site)
    factory.noisy = False
    return factory


__all__ = ["make_site", "make_tls_site", "tls_options", "ContivSite", "ContivChannel", "ContivRequest",
           "MAX_HEADER_BYTES", "MAX_HEADERS", "MAX_BODY_BYTES", "IDLE_TIMEOUT"]
