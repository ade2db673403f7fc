"""A small Kubernetes API client on treq: list, streaming watch, get, patch.

Only what the netmaster's watcher and the lab's kubelet need.  Every answer is parsed
by :func:`contiv_sdn.model.shapes.loads` (strict JSON, integers exact); the objects in
it are decoded by the caller through :mod:`drivers.kubernetes.objects`.

A watch is one long HTTP response of newline-delimited JSON events
(``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": {...}}``);
:class:`LineSplitter` cuts the byte stream into lines whatever the chunk boundaries
are, and bounds a line's length so that a broken server cannot make us buffer
without end.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

import treq
from twisted.internet import defer, protocol, reactor as default_reactor
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, \
    platformTrust
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import loads
from drivers.kubernetes.config import KubeConfig
from drivers.kubernetes.objects import LIST_META, STATUS

log = Logger()

#: Largest list answer / single watch event we accept.
MAX_BODY = 64 << 20
MAX_LINE = 16 << 20


class ApiError(Exception):
    """An answer other than success from the API server (``status`` = HTTP code, 0 when
    the server could not be reached)."""

    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason


class Gone(ApiError):
    """``410 Gone``: the resourceVersion asked for is older than the server's history;
    the caller must list again."""


class StreamCut(Exception):
    """The watch connection ended other than by the server's clean end of body."""


@implementer(IPolicyForHTTPS)
class _TLSPolicy:
    """Verification against the kubeconfig's CA (or the system's), with the client
    certificate if there is one; ``insecure-skip-tls-verify`` verifies nothing."""

    def __init__(self, cfg: KubeConfig):
        self.cfg = cfg
        self.trust = Certificate.loadPEM(cfg.ca_pem) if cfg.ca_pem else platformTrust()
        self.client = None
        if cfg.client_cert_pem and cfg.client_key_pem:
            self.client = PrivateCertificate.loadPEM(cfg.client_cert_pem + b"\n" +
                                                     cfg.client_key_pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        name = self.cfg.tls_server_name or hostname.decode("ascii")
        if self.cfg.insecure:
            from twisted.internet.ssl import CertificateOptions
            opts = CertificateOptions(
                verify=False, **({"privateKey": self.client.privateKey.original,
                                  "certificate": self.client.original} if self.client else {}))
            return _Unverified(opts.getContext(), name)
        kwargs: Dict[str, Any] = {"trustRoot": self.trust}
        if self.client is not None:
            kwargs["clientCertificate"] = self.client
        return optionsForClientTLS(name, **kwargs)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """``insecure-skip-tls-verify``: TLS without checking the server (SNI still sent)."""

    def __init__(self, context: Any, hostname: str):
        self.context = context
        self.hostname = hostname

    def clientConnectionForTLS(self, tls_protocol: Any) -> Any:
        from OpenSSL import SSL
        conn = SSL.Connection(self.context, None)
        conn.set_app_data(tls_protocol)
        try:
            conn.set_tlsext_host_name(self.hostname.encode("idna"))
        except (UnicodeError, ValueError):
            pass  # an IP address: no SNI
        return conn


class LineSplitter:
    """Bytes in, complete lines out (without the newline), across any chunking."""

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        self._buf += data
        lines = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                break
            line = bytes(self._buf[:i]).rstrip(b"\r")
            del self._buf[:i + 1]
            if line.strip():
                lines.append(line)
        if len(self._buf) > self.max_line:
            raise ValueError(f"a watch event is longer than {self.max_line >> 20} MiB")
        return lines

    def rest(self) -> bytes:
        """What is left without a newline at the end of the stream."""
        return bytes(self._buf).strip()


class _Stream(protocol.Protocol):
    """Feeds a response body's lines to ``on_line``; ``done`` fires at the end (None
    for a clean end, a :class:`StreamCut` failure otherwise)."""

    def __init__(self, on_line: Callable[[bytes], None]):
        self.on_line = on_line
        self.split = LineSplitter()
        self.done: defer.Deferred = defer.Deferred()
        self.aborted = False

    def dataReceived(self, data: bytes) -> None:
        try:
            for line in self.split.feed(data):
                self.on_line(line)
        except Exception as e:  # a bad line or a bug in on_line: end the watch
            self.abort()
            if not self.done.called:
                self.done.errback(StreamCut(str(e) or e.__class__.__name__))

    def abort(self) -> None:
        self.aborted = True
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone) and not self.aborted:
            rest = self.split.rest()
            try:
                if rest:
                    self.on_line(rest)
            except Exception as e:
                self.done.errback(StreamCut(str(e)))
                return
            self.done.callback(None)
        else:
            why = reason.getErrorMessage() if not self.aborted else "aborted"
            if hasattr(reason.value, "reasons"):  # ResponseFailed wraps the cause
                why = "; ".join(r.getErrorMessage() for r in reason.value.reasons) or why
            self.done.errback(StreamCut(why))


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # one "Starting factory" line per watch connection says nothing useful


def _pool(reactor: Any, persistent: bool) -> HTTPConnectionPool:
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool._factory = _QuietFactory
    return pool


class KubeClient:
    """Requests to one API server with one set of credentials."""

    def __init__(self, cfg: KubeConfig, reactor: Any = None, user_agent: str = "contiv-sdn"):
        self.cfg = cfg
        self.reactor = reactor or default_reactor
        self.user_agent = user_agent
        split = urlsplit(cfg.server)
        self.base = cfg.server.rstrip("/")
        policy = _TLSPolicy(cfg) if split.scheme == "https" else None
        self.pool = _pool(self.reactor, True)
        self.pool.maxPersistentPerHost = 4
        kw = {"contextFactory": policy} if policy is not None else {}
        self._agent = Agent(self.reactor, pool=self.pool, **kw)
        # watches get their own connections (a persistent one would be reused mid-stream)
        self._watch_agent = Agent(self.reactor, pool=_pool(self.reactor, False), **kw)
        self.http = treq.client.HTTPClient(self._agent)
        self.watch_http = treq.client.HTTPClient(self._watch_agent)

    def headers(self, content_type: Optional[str] = None) -> Dict[bytes, List[bytes]]:
        h = {b"Accept": [b"application/json"], b"User-Agent": [self.user_agent.encode()]}
        token = self.cfg.bearer()
        if token:
            h[b"Authorization"] = [b"Bearer " + token.encode("ascii", "replace")]
        elif self.cfg.username:
            cred = f"{self.cfg.username}:{self.cfg.password}".encode()
            h[b"Authorization"] = [b"Basic " + base64.b64encode(cred)]
        if content_type:
            h[b"Content-Type"] = [content_type.encode()]
        return h

    def url(self, path: str, params: Optional[Dict[str, str]] = None) -> str:
        return self.base + path + (("?" + urlencode(params)) if params else "")

    async def close(self) -> None:
        await self.pool.closeCachedConnections()

    @staticmethod
    def _error(status: int, body: bytes, what: str) -> ApiError:
        message, reason = body.decode("utf-8", "replace")[:300], ""
        try:
            st = STATUS.coerce(loads(body))
            message, reason, status = st["message"] or message, st["reason"], st["code"] or status
        except (DecodeError, ValueError):
            pass
        cls = Gone if status == 410 else ApiError
        return cls(status, f"{what}: HTTP {status}: {message}", reason)

    async def request(self, method: str, path: str, params: Optional[Dict[str, str]] = None,
                      body: Optional[bytes] = None, content_type: Optional[str] = None,
                      timeout: float = 30.0) -> Any:
        """One request; the answer parsed (strict JSON), or :class:`ApiError`."""
        what = f"{method} {path}"
        try:
            resp = await self.http.request(method, self.url(path, params),
                                           headers=self.headers(content_type), data=body,
                                           timeout=timeout)
            data = await resp.content()
        except Exception as e:  # connection refused, timeout, TLS: not the server's answer
            raise ApiError(0, f"{what}: cannot reach the Kubernetes API at {self.base}: "
                              f"{_reason(e)}") from None
        if len(data) > MAX_BODY:
            raise ApiError(resp.code, f"{what}: answer larger than {MAX_BODY >> 20} MiB")
        if not 200 <= resp.code < 300:
            raise self._error(resp.code, data, what)
        try:
            return loads(data)
        except DecodeError as e:
            raise ApiError(resp.code, f"{what}: the answer is not JSON: {e}") from None

    async def list(self, path: str, params: Optional[Dict[str, str]] = None
                   ) -> Tuple[List[Any], str]:
        """Every item (plain JSON, following ``continue``) and the list's resourceVersion."""
        items: List[Any] = []
        params = dict(params or {})
        while True:
            doc = await self.request("GET", path, params)
            if not isinstance(doc, dict):
                raise ApiError(200, f"GET {path}: the answer is not a list object")
            try:
                meta = LIST_META.coerce(doc.get("metadata") or {})
            except DecodeError as e:
                raise ApiError(200, f"GET {path}: {e}") from None
            got = doc.get("items") or []
            if not isinstance(got, list):
                raise ApiError(200, f"GET {path}: 'items' is not a list")
            items.extend(got)
            if not meta["continue"]:
                return items, meta["resourceVersion"]
            params["continue"] = meta["continue"]

    def watch(self, path: str, resource_version: str, on_event: Callable[[str, Any], None],
              params: Optional[Dict[str, str]] = None, timeout_seconds: int = 300,
              ) -> Tuple[defer.Deferred, Callable[[], None]]:
        """Start a watch from ``resource_version``: ``on_event(type, object)`` for every
        event (``object`` plain JSON).  Returns (done, cancel): ``done`` fires None when
        the server ends the watch, with :class:`Gone` on ``410``, :class:`ApiError` for
        another refusal, :class:`StreamCut` when the connection breaks."""
        q = dict(params or {})
        q.update({"watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)})
        state: Dict[str, Any] = {"stream": None, "cancelled": False}
        done: defer.Deferred = defer.Deferred()
        # The server ends the watch after timeoutSeconds; a connection that stays silent
        # far beyond that is dead (a peer that vanished without a RST): cut it.
        guard = self.reactor.callLater(timeout_seconds + 30, lambda: cancel("no end"))

        def finish(result: Any) -> None:
            if guard.active():
                guard.cancel()
            if not done.called:
                if isinstance(result, Failure):
                    done.errback(result)
                else:
                    done.callback(result)

        def cancel(why: str = "cancelled") -> None:
            state["cancelled"] = True
            if state["stream"] is not None:
                state["stream"].abort()
            elif not req.called:
                req.cancel()
            finish(Failure(StreamCut(why)))

        def on_line(line: bytes) -> None:
            doc = loads(line)
            if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
                raise ValueError("a watch event without a type")
            if doc["type"] == "ERROR":
                st = STATUS.coerce(doc.get("object") or {})
                cls = Gone if st["code"] == 410 else ApiError
                stream.abort()
                finish(Failure(cls(st["code"], f"watch {path}: {st['message']}",
                                   st["reason"])))
                return
            on_event(doc["type"], doc.get("object"))

        stream = _Stream(on_line)

        def got(resp: Any) -> Any:
            if state["cancelled"]:
                return None
            if resp.code != 200:
                d = resp.content()
                d.addCallback(lambda body: finish(Failure(self._error(resp.code, body,
                                                                      f"watch {path}"))))
                return d
            state["stream"] = stream
            resp.deliverBody(stream)
            stream.done.addBoth(finish)
            return None

        def failed(f: Failure) -> None:
            if not state["cancelled"]:
                finish(Failure(StreamCut(f"cannot reach the Kubernetes API at {self.base}: "
                                         f"{_reason(f.value)}")))

        req = self.watch_http.request("GET", self.url(path, q), headers=self.headers(),
                                      unbuffered=True)
        req.addCallbacks(got, failed)
        return done, cancel


def _reason(e: BaseException) -> str:
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(e) or e.__class__.__name__
