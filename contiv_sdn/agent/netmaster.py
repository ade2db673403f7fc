"""The agent's client for the netmaster's plugin and inspect routes (over HTTP, with treq).

Contiv's netmaster answers every error with HTTP 500 and a text body; that
text is what a user needs to see (``network not found``…), so
:class:`NetmasterError` carries it verbatim.  An unreachable netmaster is a
different failure (retry later), hence :class:`NetmasterUnavailable`.

Every reply is decoded into its declared shape (:mod:`contiv_sdn.model.plugin_api`
for ``/plugin/*``, :data:`NETWORK_INSPECT` / :data:`GROUP_INSPECT` here) before the
agent acts on it, with Go's strict parser (no NaN/Infinity, bounded depth): a reply
that does not fit is :class:`NetmasterBadReply` ("netmaster sent a malformed reply
to createEndpoint: json: cannot unmarshal ..."), never a dict where a string was
meant travelling on into a veth, an OVS record or a log line.

With a netmaster that runs ``--auth``, the agent is a user of role ``node``
named after its host (issue 13): :class:`NetmasterSession` logs in with
Contiv's own protocol (``POST /api/v1/auth_proxy/login/``), sends the token as
``X-Auth-Token``, and logs in again once when a call is answered 401 (the
token expired or was revoked) before repeating that call.  A refused login is
:class:`NetmasterLoginFailed`, naming the user and the password file; further
logins wait out a doubling back-off, so a wrong password never becomes a hot
loop of scrypt work on the netmaster.  The session also carries the TLS trust
(``--netmaster-ca``) and is shared by every client of one netplugin process.

Several netmasters (``--netmaster URL1,URL2``): any netmaster answers any call
(the state is in Redis, tokens included), so a call that cannot reach one, or is
answered 503, goes to the next; the one that answered is tried first next time.
A call that may have reached a netmaster without an answer moves on only if it
is safe to repeat (``idempotent``: every call the agent makes is).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import quote

import treq
from treq.client import HTTPClient
from twisted.internet import defer, ssl
from twisted.internet.error import ConnectError, ConnectingCancelledError, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool,
                                RequestNotSent, RequestTransmissionFailed, ResponseFailed,
                                ResponseNeverReceived)

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.plugin_api import ENDPOINT_REPLY, HOST_STATE
from contiv_sdn.model.shapes import INT, STR, Struct, loads

log = Logger()

#: ``GET /api/v1/inspect/networks/<tenant>:<net>/``: the parts of it the agents use.
NETWORK_INSPECT = Struct("NetworkInspect", [("Config", Struct("Network", [
    ("key", STR), ("tenantName", STR), ("networkName", STR), ("encap", STR),
    ("subnet", STR), ("gateway", STR), ("ipv6Subnet", STR), ("ipv6Gateway", STR),
    ("nwType", STR), ("cfgdTag", STR), ("pktTag", INT),
]))])

#: ``GET /api/v1/inspect/endpointGroups/<tenant>:<group>/``: the parts of it the agents use.
GROUP_INSPECT = Struct("EndpointGroupInspect", [("Config", Struct("EndpointGroup", [
    ("key", STR), ("tenantName", STR), ("groupName", STR), ("networkName", STR),
]))])


class QuietPool(HTTPConnectionPool):
    """A connection pool whose per-request client factories do not log start/stop lines."""

    class _factory(HTTPConnectionPool._factory):  # type: ignore[name-defined,misc]
        noisy = False


class NetmasterError(RuntimeError):
    """The netmaster refused a request; ``str()`` is its own message."""

    def __init__(self, status: int, text: str, what: str):
        self.status = status
        self.text = text.strip()
        super().__init__(f"netmaster: {what}: {self.text or f'HTTP {status}'}")


class NetmasterBadReply(NetmasterError):
    """The netmaster answered 200 with a body that does not fit the call's reply shape."""

    def __init__(self, call: str, why: str):
        message = f"netmaster sent a malformed reply to {call}: {why}"
        super().__init__(502, message, call)
        self.args = (message,)

    def __str__(self) -> str:
        return self.text


class NetmasterUnavailable(RuntimeError):
    """The netmaster could not be reached."""


class NetmasterLoginFailed(NetmasterError):
    """The netmaster refused this agent's credential (or throttles its logins)."""


LOGIN_PATH = "/api/v1/auth_proxy/login/"
#: First wait after a refused login, doubled per further refusal up to the cap.
LOGIN_BACKOFF = 2.0
LOGIN_BACKOFF_MAX = 120.0


def read_password_file(path: str) -> str:
    """The first line of ``path`` (the node's password); ``ValueError`` saying what
    is wrong with the file and what to do."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except OSError as e:
        raise ValueError(f"cannot read the netmaster password file {path}: {e.strerror}; "
                         "write the node user's password into it (mode 0600)") from None
    except UnicodeDecodeError:
        raise ValueError(f"the netmaster password file {path} is not UTF-8 text") from None
    if not password:
        raise ValueError(f"the netmaster password file {path} is empty; write the node "
                         "user's password (`netctl user add HOST --role node`) into it")
    return password


def load_trust_root(path: str) -> Any:
    """The CA certificates of a PEM bundle as a Twisted trust root; ``ValueError``
    naming the file when it holds none."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read the netmaster CA file {path}: {e.strerror}") from None
    marker = b"-----BEGIN CERTIFICATE-----"
    certs = []
    for chunk in data.split(marker)[1:]:
        try:
            certs.append(ssl.Certificate.loadPEM(marker + chunk))
        except Exception:  # noqa: BLE001 - OpenSSL's errors vary; the file is wrong
            raise ValueError(f"the netmaster CA file {path} holds a certificate that does "
                             "not parse (expected PEM certificates)") from None
    if not certs:
        raise ValueError(f"the netmaster CA file {path} holds no PEM certificate")
    return ssl.trustRootFromCertificates(certs)


def check_credentials(url: str, user: str, password_file: Optional[str], ca: Optional[str],
                      timeout: float = 5.0) -> None:
    """netplugin's start-up check of ``--netmaster-*`` (blocking: before the reactor).

    The CA file must hold certificates and the password file a password; with both
    readable, one login is tried: a netmaster that refuses it stops the start with
    what to fix (which user, which file, the ``netctl`` command), while one that
    cannot be reached now is left to the running agent's retries (it may start
    later).  The token obtained is revoked at once."""
    import ssl as std_ssl
    import urllib.error
    import urllib.request

    if ca:
        load_trust_root(ca)
    if not password_file:
        return
    password = read_password_file(password_file)
    base = split_urls(url)[0]  # several netmasters share their users: the first one checks
    context = None
    if base.startswith("https:"):
        context = std_ssl.create_default_context(cafile=ca) if ca else \
            std_ssl.create_default_context()

    def call(path: str, body: Dict[str, Any], token: str = "") -> bytes:
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("X-Auth-Token", token)
        with urllib.request.urlopen(req, timeout=timeout, context=context) as reply:
            return reply.read()

    try:
        answer = call(LOGIN_PATH, {"username": user, "password": password})
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace").strip()[:300]
        if e.code == 401:
            raise ValueError(f"the netmaster at {base} refused user {user!r} with the "
                             f"password in {password_file} ({text}); put that user's password "
                             f"in the file, or have an admin create the user with `netctl "
                             f"user add {user} --role node` (or pass --netmaster-user)") from None
        if e.code == 404:
            raise ValueError(f"the netmaster at {base} has no login ({LOGIN_PATH} is 404): "
                             f"it runs without --auth; drop --netmaster-password-file") from None
        return  # throttled, or a server error: the agent's own retries will see
    except std_ssl.SSLError as e:
        raise ValueError(f"TLS with the netmaster at {base} failed ({e.reason or e}); pass "
                         f"the CA that signed its certificate with --netmaster-ca") from None
    except (OSError, ValueError) as e:
        cause = getattr(e, "reason", None)
        if isinstance(cause, std_ssl.SSLError):
            raise ValueError(f"TLS with the netmaster at {base} failed ({cause.reason or cause}); "
                             f"pass the CA that signed its certificate with "
                             f"--netmaster-ca") from None
        return  # not reachable yet: the agent retries once running
    try:
        token = json.loads(answer).get("token", "")
        if isinstance(token, str) and token:
            call("/api/v1/auth_proxy/logout/", {}, token)
    except Exception:  # noqa: BLE001 - revoking the check's token is a courtesy
        pass


class NetmasterSession:
    """What every netmaster client of one process shares: the TLS trust, the
    credential and its current token.

    ``user``/``password_file``: log in as that user (a ``node`` user named after
    the host) with the password read from the file at each login, so a rotated
    file takes effect without a restart; without ``password_file`` no login is
    made (a netmaster without ``--auth``).  ``ca``: a PEM bundle that verifies an
    ``https`` netmaster (else the system's trust store).
    """

    def __init__(self, user: str = "", password_file: Optional[str] = None,
                 ca: Optional[str] = None, clock: Callable[[], float] = time.monotonic):
        self.user = user
        self.password_file = password_file
        self.ca = ca
        self.clock = clock
        self.token: Optional[str] = None
        self._policy = BrowserLikePolicyForHTTPS(load_trust_root(ca)) if ca else None
        self._login: Optional[defer.Deferred] = None
        self._waiters: list = []
        #: the last refusal, and until when no new login is tried
        self._refused: Optional[NetmasterLoginFailed] = None
        self._retry_at = 0.0
        self._backoff = LOGIN_BACKOFF

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "NetmasterSession":
        """From netplugin's options (``--netmaster-user``, ``--netmaster-password-file``,
        ``--netmaster-ca``)."""
        return cls(user=options.get("netmaster-user") or options.get("host") or "",
                   password_file=options.get("netmaster-password-file") or None,
                   ca=options.get("netmaster-ca") or None)

    @property
    def enabled(self) -> bool:
        return bool(self.password_file)

    def http_client(self, reactor: Any, pool: HTTPConnectionPool) -> HTTPClient:
        if self._policy is None:
            return HTTPClient(Agent(reactor, pool=pool))
        return HTTPClient(Agent(reactor, contextFactory=self._policy, pool=pool))

    def headers(self) -> Dict[bytes, list]:
        return {b"X-Auth-Token": [self.token.encode("ascii")]} if self.token else {}

    def forget(self, token: Optional[str]) -> None:
        """The netmaster said 401 to ``token``: the next call logs in again."""
        if token is not None and self.token == token:
            self.token = None

    async def ensure(self, client: "NetmasterClient") -> None:
        """A token, logging in if there is none: one login at a time, whose outcome
        every caller waiting meanwhile shares."""
        if not self.enabled or self.token is not None:
            return
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        if self._login is None:
            self._login = defer.ensureDeferred(self._do_login(client))
            self._login.addBoth(self._login_done)
        await waiter

    def _login_done(self, result: Any) -> None:
        self._login = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    async def _do_login(self, client: "NetmasterClient") -> None:
        now = self.clock()
        if self._refused is not None and now < self._retry_at:
            raise self._refused  # the back-off: no new attempt yet
        try:
            password = read_password_file(self.password_file or "")
        except ValueError as e:
            self._refuse(NetmasterLoginFailed(0, str(e), f"log in as {self.user}"))
            raise self._refused from None  # type: ignore[misc]
        try:
            answer = await client.request("POST", LOGIN_PATH, f"log in as {self.user}",
                                          {"username": self.user, "password": password},
                                          authenticate=False)
        except NetmasterError as e:
            if e.status in (401, 403, 429):
                hint = ("the netmaster throttles logins after failures; it will be retried"
                        if e.status == 429 else
                        f"check the password in {self.password_file} against the netmaster's "
                        f"user {self.user!r} (an admin makes it with `netctl user add "
                        f"{self.user} --role node`)")
                self._refuse(NetmasterLoginFailed(e.status, f"{e.text}; {hint}",
                                                  f"log in as {self.user}"))
                raise self._refused from None  # type: ignore[misc]
            raise
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or not token.isascii():
            raise NetmasterBadReply("login", "the reply has no token string")
        if self._refused is not None:
            log.info("logged in to the netmaster as {user} (after refusals)", user=self.user)
        self._refused, self._backoff = None, LOGIN_BACKOFF
        self.token = token

    def _refuse(self, err: NetmasterLoginFailed) -> None:
        """Remember a refusal; no login is tried again before the back-off passed."""
        if self._refused is None or self._refused.text != err.text:
            log.error("netmaster login refused: {err}; next attempt in {wait:g}s",
                      err=err, wait=self._backoff)
        self._refused = err
        self._retry_at = self.clock() + self._backoff
        self._backoff = min(self._backoff * 2, LOGIN_BACKOFF_MAX)


def split_urls(value: str) -> list:
    """``URL1,URL2`` -> the netmaster URLs without trailing slashes."""
    urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    return urls or [value.rstrip("/")]


class _Unreached(Exception):
    """One netmaster did not answer; ``safe``: the call surely did not reach it."""

    def __init__(self, error: "NetmasterUnavailable", safe: bool):
        super().__init__(str(error))
        self.error, self.safe = error, safe


class NetmasterClient:
    def __init__(self, url: str, timeout: float = 30.0, reactor: Any = None,
                 session: Optional[NetmasterSession] = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.urls = split_urls(url)
        self._current = 0
        self.timeout = timeout
        self.reactor = reactor
        #: credential, token and TLS trust, shared with the process's other clients
        self.session = session or NetmasterSession()
        # Persistent: every attach and detach makes one to three calls, and a new TCP
        # connection each time (through the host's OVS, in the lab) costs more than the
        # call.  close() (the service's stop) closes the idle ones.
        self._pool = QuietPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        self._http = self.session.http_client(reactor, self._pool)

    async def request(self, method: str, path: str, what: str,
                       body: Optional[Dict[str, Any]] = None, idempotent: bool = False,
                       reply: Optional[Struct] = None, authenticate: bool = True) -> Any:
        """One call; ``idempotent`` (GETs always are) allows one retry when a kept-alive
        connection turns out to be dead (netmaster restarted) before any answer came.

        With a credential (:class:`NetmasterSession`) the call carries the token; a
        401 answer (token expired or revoked) costs one new login and one repeat of
        the call (the netmaster refused it before doing anything).

        A 200 answer is decoded into ``reply`` (every declared field present, typed),
        or, without one, strictly parsed as free-form JSON; either failing is
        :class:`NetmasterBadReply` naming the route."""
        if not authenticate or not self.session.enabled:
            return await self._request(method, path, what, body, idempotent, reply, None)
        await self.session.ensure(self)
        token = self.session.token
        try:
            return await self._request(method, path, what, body, idempotent, reply, token)
        except NetmasterError as e:
            if e.status != 401 or isinstance(e, NetmasterLoginFailed):
                raise
            log.info("netmaster refused the token ({what}: {err}); logging in again",
                     what=what, err=e.text[:200])
        self.session.forget(token)
        await self.session.ensure(self)
        return await self._request(method, path, what, body, idempotent, reply,
                                   self.session.token)

    @property
    def url(self) -> str:
        """The netmaster that answered last (the first one before any call)."""
        return self.urls[self._current]

    async def _request(self, method: str, path: str, what: str,
                       body: Optional[Dict[str, Any]], idempotent: bool,
                       reply: Optional[Struct], token: Optional[str]) -> Any:
        n = len(self.urls)
        may_repeat = idempotent or method == "GET"
        last: Optional[NetmasterUnavailable] = None
        for i in range(n):
            index = (self._current + i) % n
            try:
                result = await self._request_one(self.urls[index], method, path, what, body,
                                                 idempotent, reply, token, busy_is_error=i < n - 1)
            except _Unreached as e:
                last = e.error
                if i < n - 1 and (e.safe or may_repeat):
                    log.info("{err}; trying the netmaster at {next}", err=e.error,
                             next=self.urls[(index + 1) % n])
                    continue
                raise e.error from None
            if i:
                log.info("netmaster at {url} answers ({what})", url=self.urls[index], what=what)
            self._current = index
            return result
        assert last is not None
        raise last

    async def _request_one(self, base: str, method: str, path: str, what: str,
                           body: Optional[Dict[str, Any]], idempotent: bool,
                           reply: Optional[Struct], token: Optional[str],
                           busy_is_error: bool = False) -> Any:
        url = base + path
        kw: Dict[str, Any] = {"timeout": self.timeout, "reactor": self.reactor}
        headers: Dict[bytes, list] = {}
        if body is not None:
            kw["data"] = json.dumps(body).encode()
            headers[b"Content-Type"] = [b"application/json"]
        if token:
            headers[b"X-Auth-Token"] = [token.encode("ascii")]
        if headers:
            kw["headers"] = headers
        may_repeat = idempotent or method == "GET"
        for attempt in (1, 2):
            try:
                response = await self._http.request(method, url, **kw)
                # treq's timeout ends at the response headers: bound the body too
                content = await treq.content(response).addTimeout(self.timeout, self.reactor)
                break
            except RequestNotSent as e:
                failed: Exception = e  # nothing reached the netmaster: safe to send again
            except (RequestTransmissionFailed, ResponseNeverReceived) as e:
                failed = e
                if not may_repeat:
                    raise _Unreached(self._unavailable(what, e, base), False) from None
            except (ConnectError, ConnectingCancelledError) as e:
                raise _Unreached(self._unavailable(what, e, base), True) from None
            except (TimeoutError, ResponseFailed, defer.CancelledError, defer.TimeoutError) as e:
                raise _Unreached(self._unavailable(what, e, base), False) from None
            if attempt == 2:
                raise _Unreached(self._unavailable(what, failed, base),
                                 isinstance(failed, RequestNotSent)) from None
        if response.code == 503 and busy_is_error:
            # that netmaster cannot serve now (its Redis is unreachable): nothing was done
            raise _Unreached(NetmasterUnavailable(
                f"netmaster at {base} answered 503 ({what}): "
                f"{content.decode('utf-8', 'replace').strip()[:200]}"), True)
        if response.code != 200:
            raise NetmasterError(response.code, content.decode("utf-8", "replace"), what)
        call = path[len("/plugin/"):] if path.startswith("/plugin/") else what
        try:
            if reply is not None:
                return reply.load(content)
            return loads(content) if content.strip() else {}
        except DecodeError as e:
            raise NetmasterBadReply(call, str(e)) from None

    def _unavailable(self, what: str, e: BaseException,
                     base: Optional[str] = None) -> "NetmasterUnavailable":
        return NetmasterUnavailable(f"netmaster at {base or self.url} is not reachable ({what}): "
                                    f"{e.__class__.__name__}: {e}")

    async def create_endpoint(self, tenant: str, network: str, group: str, endpoint_id: str,
                              container_name: str, container_id: str, host: str,
                              ip: str, intf_name: str,
                              labels: Optional[Dict[str, str]] = None,
                              vtep_ip: str = "") -> Dict[str, Any]:
        """Allocate the endpoint (address, MAC, group id); fires with ``EndpointConfig``."""
        body = {
            "TenantName": tenant, "NetworkName": network, "ServiceName": group,
            "EndpointID": endpoint_id, "EPCommonName": container_name,
            # "ContainerID"/"VtepIP" besides Contiv's "Container": our netmaster reads those
            "ConfigEP": {"Container": container_id, "ContainerID": container_id, "Host": host,
                         "VtepIP": vtep_ip, "IPAddress": ip or "",
                         "IPv6Address": "", "ServiceName": group, "IntfName": intf_name,
                         "Labels": dict(labels or {})},
        }
        # the netmaster answers a repeated create of the same endpoint id with the first one
        try:
            answer = await self.request("POST", "/plugin/createEndpoint",
                                         f"create endpoint {endpoint_id[:12]}", body,
                                         idempotent=True, reply=ENDPOINT_REPLY)
            config = answer["EndpointConfig"]
            if config["id"] != endpoint_id:
                raise NetmasterBadReply("createEndpoint", "EndpointConfig is for endpoint "
                                        f"{json.dumps(config['id'][:64])}, not "
                                        f"{json.dumps(endpoint_id[:64])}")
        except NetmasterBadReply as e:
            # the netmaster did allocate, but what it allocated is unknown to the caller,
            # who therefore cannot undo it: release it here, before reporting the failure
            await self._release_after_bad_reply(tenant, network, group, endpoint_id, e)
            raise
        return config

    async def _release_after_bad_reply(self, tenant: str, network: str, group: str,
                                       endpoint_id: str, err: Exception) -> None:
        try:
            await self.delete_endpoint(tenant, network, group, endpoint_id)
        except NetmasterError as e:
            if "not found" not in e.text.lower():
                log.warn("endpoint {id}: netmaster sent a malformed reply ({err}) and the "
                         "allocation could not be released: {rel}", id=endpoint_id[:12],
                         err=err, rel=e)
        except NetmasterUnavailable as e:
            log.warn("endpoint {id}: netmaster sent a malformed reply ({err}) and the "
                     "allocation could not be released: {rel}", id=endpoint_id[:12],
                     err=err, rel=e)

    async def delete_endpoint(self, tenant: str, network: str, group: str, endpoint_id: str,
                              ip: str = "") -> Any:
        """Release the endpoint's allocations."""
        body = {"TenantName": tenant, "NetworkName": network, "ServiceName": group,
                "EndpointID": endpoint_id, "IPv4Address": ip or ""}
        return await self.request("POST", "/plugin/deleteEndpoint",
                                   f"delete endpoint {endpoint_id[:12]}", body, idempotent=True,
                                   reply=ENDPOINT_REPLY)

    async def register_host(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """Register (or refresh) this host's record (``RegisterHostRequest``); fires
        with the stored ``HostState``.  Hosts write the store only through calls like
        this one (see :mod:`contiv_sdn.master.hosts`); repeating it is harmless."""
        answer = await self.request("POST", "/plugin/registerHost",
                                     f"register host {record.get('name', '')}", record,
                                     idempotent=True, reply=HOST_STATE)
        if answer["name"] != record.get("name"):
            raise NetmasterBadReply("registerHost", "HostState is for host "
                                    f"{json.dumps(answer['name'][:64])}, not "
                                    f"{json.dumps(str(record.get('name'))[:64])}")
        return answer

    async def network(self, tenant: str, network: str) -> Dict[str, Any]:
        """The network's configuration (``Config``: subnet, gateway, encap…)."""
        key = quote(f"{tenant}:{network}", safe=":")
        answer = await self.request("GET", f"/api/v1/inspect/networks/{key}/",
                                     f"inspect network {tenant}:{network}",
                                     reply=NETWORK_INSPECT)
        return answer["Config"]

    def close(self) -> defer.Deferred:
        return self._pool.closeCachedConnections()
