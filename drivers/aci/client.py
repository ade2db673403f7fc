"""An APIC REST client on Twisted (treq): login, token refresh, re-login, failover, counting.

Why its own client and not Cisco's cobra SDK: cobra is Python 2-era, blocking,
and shipped only from an APIC; the netmaster runs on the reactor.  The calls
are the documented REST ones (Cisco APIC REST API Configuration Guide, 4.2(x)
and later, "Using the REST API"):

* password login: ``POST /api/aaaLogin.json`` ``{"aaaUser":{"attributes":
  {"name","pwd"}}}``; the token comes back as ``imdata[0].aaaLogin.attributes.token``
  and the ``APIC-cookie`` cookie, with ``refreshTimeoutSeconds``.  The client
  refreshes it (``GET /api/aaaRefresh.json``) at half that interval, and when
  a call is refused for its token anyway (APIC restarted, session reaped, clock
  jump: ``403`` ``Token was invalid``/``Need a valid webtoken cookie``) it logs in
  again and repeats the call once.  With ``challenge`` it asks for
  ``gui-token-request=yes`` and sends the ``urlToken`` back in ``APIC-challenge``.
* certificate ("signature-based") authentication: no session at all; every
  request carries the cookies ``APIC-Certificate-DN=uni/userext/user-U/usercert-C``,
  ``APIC-Certificate-Algorithm=v1.0``, ``APIC-Certificate-Fingerprint=fingerprint``
  and ``APIC-Request-Signature`` = base64(RSA-SHA256(method + path?query + body)).
* several APIC URLs (a cluster): a connection failure moves to the next one.

Every HTTP call is counted in :attr:`ApicClient.calls` (by kind) so tests and
``bench/aci.py`` can hold the reconciler to its call budget.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote, urlencode

import treq
from twisted.internet import defer, error as net_error
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool, ResponseFailed

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import loads

log = Logger()

_TOKEN_REFUSALS = ("Token was invalid", "Need a valid webtoken", "token")
_NET_ERRORS = (net_error.ConnectError, net_error.ConnectionLost, net_error.TimeoutError,
               ResponseFailed, defer.CancelledError, net_error.DNSLookupError)


class ApicError(Exception):
    """The APIC refused a call: its error code and text (what to fix is in the text)."""

    def __init__(self, code: str, text: str, http: int = 400, what: str = ""):
        super().__init__(f"APIC refused {what}: {text} (code {code}, HTTP {http})"
                         if what else f"{text} (code {code}, HTTP {http})")
        self.code, self.text, self.http = code, text, http


class ApicUnavailable(Exception):
    """No APIC answered (all URLs failed to connect or timed out)."""


class ApicClient:
    def __init__(self, urls: Sequence[str], user: str, password: Optional[str] = None,
                 cert_key: Any = None, cert_name: Optional[str] = None,
                 timeout: float = 15.0, challenge: bool = False, reactor: Any = None):
        if not urls:
            raise ValueError("at least one APIC URL is needed")
        if password is None and cert_key is None:
            raise ValueError("a password or a certificate key is needed to authenticate")
        from twisted.internet import reactor as default_reactor

        self.reactor = reactor or default_reactor
        self.urls = [u.rstrip("/") for u in urls]
        self.user = user
        self.password = password
        self.cert_key = cert_key
        self.cert_dn = f"uni/userext/user-{user}/usercert-{cert_name}" if cert_key else ""
        self.timeout = timeout
        self.challenge = challenge
        self.calls: Counter = Counter()
        self.token: Optional[str] = None
        self.url_token: str = ""
        self.refresh_seconds = 0.0
        self._current = 0
        self._refresher = None
        self._login_waiters: Optional[List[defer.Deferred]] = None
        self._pool = HTTPConnectionPool(self.reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        self._pool.retryAutomatically = False
        self._closed = False

    @property
    def url(self) -> str:
        return self.urls[self._current]

    # -- public calls ------------------------------------------------------------
    async def post(self, dn: str, payload: dict) -> None:
        """POST one MO (with nested children) at ``/api/mo/<dn>.json``."""
        await self._call("POST", f"/api/mo/{_quote_dn(dn)}.json", payload, kind="POST mo")

    async def delete(self, dn: str) -> None:
        await self._call("DELETE", f"/api/mo/{_quote_dn(dn)}.json", None, kind="DELETE mo")

    async def get_mo(self, dn: str, **query: str) -> List[dict]:
        """``imdata`` of ``GET /api/mo/<dn>.json`` (query keys with ``_`` for ``-``)."""
        return await self._call("GET", f"/api/mo/{_quote_dn(dn)}.json{_qs(query)}", None,
                                kind="GET mo")

    async def get_class(self, cls: str, **query: str) -> List[dict]:
        return await self._call("GET", f"/api/class/{cls}.json{_qs(query)}", None,
                                kind="GET class")

    async def close(self) -> None:
        """Stop refreshing, log out (best effort, bounded) and close connections."""
        self._closed = True
        self._stop_refresh()
        if self.token is not None and self.password is not None:
            try:
                await self._http("POST", "/api/aaaLogout.json",
                                 {"aaaUser": {"attributes": {"name": self.user}}},
                                 kind="logout", timeout=2.0)
            except Exception:
                pass  # logging out is a courtesy; the token expires by itself
        self.token = None
        await self._pool.closeCachedConnections()

    # -- authentication ------------------------------------------------------------
    async def login(self) -> None:
        """Log in (once, even if several calls need it at the same time)."""
        if self.cert_key is not None:
            return
        if self._login_waiters is not None:
            d: defer.Deferred = defer.Deferred()
            self._login_waiters.append(d)
            await d
            return
        self._login_waiters = []
        try:
            await self._login()
        except Exception as e:
            waiters, self._login_waiters = self._login_waiters, None
            for w in waiters:
                w.errback(e)
            raise
        waiters, self._login_waiters = self._login_waiters, None
        for w in waiters:
            w.callback(None)

    async def _login(self) -> None:
        self.token = None
        path = "/api/aaaLogin.json" + ("?gui-token-request=yes" if self.challenge else "")
        body = {"aaaUser": {"attributes": {"name": self.user, "pwd": self.password}}}
        last: Optional[Exception] = None
        for _ in range(len(self.urls)):
            try:
                reply = await self._http("POST", path, body, kind="login", auth=False)
            except ApicUnavailable as e:
                last = e
                self._current = (self._current + 1) % len(self.urls)
                continue
            self._take_token(reply, "aaaLogin")
            log.info("logged in to the APIC at {url} as {user}", url=self.url, user=self.user)
            return
        raise last or ApicUnavailable("no APIC URL answered")

    def _take_token(self, reply: List[dict], what: str) -> None:
        try:
            attrs = reply[0]["aaaLogin"]["attributes"]
            token = attrs["token"]
            refresh = float(attrs.get("refreshTimeoutSeconds") or 600)
        except (IndexError, KeyError, TypeError, ValueError):
            raise ApicError("0", f"the APIC's {what} reply has no aaaLogin token", 200, what)
        if not isinstance(token, str) or not token:
            raise ApicError("0", f"the APIC's {what} reply has an empty token", 200, what)
        self.token = token
        self.url_token = str(attrs.get("urlToken") or "")
        self.refresh_seconds = refresh
        self._stop_refresh()
        self._refresher = self.reactor.callLater(max(1.0, refresh / 2), self._refresh_soon)

    def _stop_refresh(self) -> None:
        if self._refresher is not None and self._refresher.active():
            self._refresher.cancel()
        self._refresher = None

    def _refresh_soon(self) -> None:
        self._refresher = None
        if self._closed:
            return
        d = defer.ensureDeferred(self._refresh())
        d.addErrback(lambda f: None)

    async def _refresh(self) -> None:
        try:
            reply = await self._http("GET", "/api/aaaRefresh.json", None, kind="refresh")
            self._take_token(reply, "aaaRefresh")
        except (ApicError, ApicUnavailable) as e:
            # the next call logs in again
            log.info("APIC token refresh failed ({err}); logging in again on the next call",
                     err=str(e))
            self.token = None

    # -- requests ---------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: Optional[dict], kind: str) -> List[dict]:
        if self.cert_key is None and self.token is None:
            await self.login()
        try:
            return await self._http(method, path, body, kind=kind)
        except ApicError as e:
            if self.cert_key is not None or e.http not in (401, 403) or \
                    not any(t in e.text for t in _TOKEN_REFUSALS):
                raise
        except ApicUnavailable:
            if len(self.urls) == 1:
                raise
            self._current = (self._current + 1) % len(self.urls)
        await self.login()
        return await self._http(method, path, body, kind=kind)

    async def _http(self, method: str, path: str, body: Optional[dict], kind: str,
                    auth: bool = True, timeout: Optional[float] = None) -> List[dict]:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {b"Content-Type": [b"application/json"]} if body is not None else {}
        cookies: Dict[str, str] = {}
        if auth:
            if self.cert_key is not None:
                cookies = self._signature(method, path, data)
            elif self.token:
                cookies = {"APIC-cookie": self.token}
                if self.url_token:
                    headers[b"APIC-challenge"] = [self.url_token.encode()]
        self.calls[kind] += 1
        try:
            resp = await treq.request(method, self.url + path, data=data or None,
                                      headers=headers, cookies=cookies, pool=self._pool,
                                      timeout=timeout or self.timeout, reactor=self.reactor)
            raw = await treq.content(resp)
        except _NET_ERRORS as e:
            raise ApicUnavailable(f"APIC {self.url} did not answer {method} {path}: "
                                  f"{e.__class__.__name__}")
        try:
            doc = loads(raw) if raw else {}
        except DecodeError as e:
            raise ApicError("0", f"the APIC answered {method} {path} with HTTP {resp.code} "
                                 f"and a body that is not JSON ({e})", resp.code, kind)
        imdata = doc.get("imdata") if isinstance(doc, dict) else None
        if not isinstance(imdata, list):
            raise ApicError("0", f"the APIC answered {method} {path} without an imdata "
                                 f"list (HTTP {resp.code})", resp.code, kind)
        if resp.code >= 400 or (imdata and isinstance(imdata[0], dict) and "error" in imdata[0]):
            err = {}
            if imdata and isinstance(imdata[0], dict):
                err = (imdata[0].get("error") or {}).get("attributes") or {}
            raise ApicError(str(err.get("code", resp.code)), str(err.get("text", "")),
                            resp.code, f"{method} {path}")
        return imdata

    def _signature(self, method: str, path: str, data: bytes) -> Dict[str, str]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        sig = self.cert_key.sign(method.encode() + path.encode() + data, padding.PKCS1v15(),
                                 hashes.SHA256())
        return {"APIC-Certificate-Algorithm": "v1.0",
                "APIC-Certificate-Fingerprint": "fingerprint",
                "APIC-Certificate-DN": self.cert_dn,
                "APIC-Request-Signature": base64.b64encode(sig).decode()}


def _quote_dn(dn: str) -> str:
    return quote(dn, safe="/-_.:~")


def _qs(query: Dict[str, str]) -> str:
    if not query:
        return ""
    return "?" + urlencode({k.replace("_", "-"): v for k, v in query.items()}, safe=",()\".")
