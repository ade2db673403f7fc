"""The netmaster's HTTP surface: one leaf resource routed like gorilla/mux.

Contiv's netmaster answers anything its router does not match — an unknown
path, a missing trailing slash, a method the route does not take, a made-up
method — with ``404 page not found`` as text.  So every request, whatever its
method or path bytes, reaches :meth:`NetmasterAPI.render`, which matches an
explicit table of (methods, pattern) → handler exactly.

This is a plain Twisted leaf resource rather than a Klein app on purpose:
Klein's method filter answers unrouted methods (TRACE, PROPFIND) with
werkzeug's HTML 405, werkzeug's ``path`` converter does not match a path with
a newline (``%0d%0a``: HTML 404), and Klein turns a path that is not UTF-8
(``%ff``) into an HTML 400 plus a logged traceback — all before any of our
code runs.  Connection-level limits (header size, body size) are
:mod:`contiv_sdn.api.site`'s.

Authentication (``--auth``, :mod:`contiv_sdn.api.auth`): the login route
comes first; every other request, an unknown path included, needs a valid
``X-Auth-Token`` (401) and a role that may make it (403) before any handler
runs.  Without ``--auth`` nothing here changes.

Errors: a refusal (:class:`HttpError`, :class:`MasterError`,
:class:`ModelError` — the client's mistake) is answered with its text and
logged as one short debug line; a store that does not answer
(:class:`StoreUnavailable`) is ``503`` with its text; anything else is a bug:
one ``log.failure`` with the traceback, ``internal error`` to the client.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from contiv_sdn.api import auth as A
from contiv_sdn.api.http import NOT_FOUND_BODY, HttpError, NotFound, send_error, send_json
from contiv_sdn.api.plugin import PluginRoutes
from contiv_sdn.api.rest import ModelRoutes
from contiv_sdn.master import Master, MasterError
from contiv_sdn.model import ModelError, by_collection
from contiv_sdn.ops import metrics as ops_metrics
from contiv_sdn.ops import openapi
from contiv_sdn.ops import webview
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.store import StoreUnavailable

log = Logger()

_KEY = r"([^/]+)"
Handler = Callable[..., Awaitable[Any]]

#: No route takes a path with control characters (CR/LF, NUL, DEL...): no
#: Contiv name may contain them, and refusing them at the router keeps them out
#: of store keys and log lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: Longest path or reason text quoted in a refusal's log line.
_LOG_TEXT_MAX = 160


def decode_path(raw: bytes) -> Optional[str]:
    """The request path percent-decoded as UTF-8 (what gorilla matches on), or
    ``None`` when no route can match it: not UTF-8 after decoding, or
    containing a control character."""
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(path):
        return None
    return path


def _brief(text: str) -> str:
    """Client-supplied text made safe for one log line: escaped, bounded."""
    text = text.encode("unicode_escape").decode("ascii")
    if len(text) > _LOG_TEXT_MAX:
        text = text[:_LOG_TEXT_MAX] + "..."
    return text


def _unavailable(exc: BaseException) -> Optional[StoreUnavailable]:
    """The :class:`StoreUnavailable` behind ``exc``, if any.

    The semantics layer re-raises every ``StoreError`` as ``MasterError(str(e))``
    inside its ``except`` block, so the store's refusal is the implicit context
    (or explicit cause) of the ``MasterError`` the router sees.
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, StoreUnavailable):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _status(exc: BaseException) -> int:
    if _unavailable(exc) is not None:
        return 503
    status = getattr(exc, "status", 500)
    return status if isinstance(status, int) and 400 <= status <= 599 else 500


class NetmasterAPI(Resource):
    """Build with a :class:`Master`; serve :meth:`resource` (e.g. with
    :func:`contiv_sdn.api.site.make_site`)."""

    isLeaf = True

    def __init__(self, master: Master, listen_address: Callable[[], str] = lambda: "",
                 auth: Optional["A.Auth"] = None):
        super().__init__()
        self.master = master
        self.model = ModelRoutes(master)
        self.plugin = PluginRoutes(master, listen_address)
        #: with it, every request but the login needs a valid X-Auth-Token and a
        #: role that may make it (see contiv_sdn.api.auth); without, none does
        self.auth = auth
        self.routes: List[Tuple[frozenset, re.Pattern, Handler, bool]] = []
        r = self._route
        if auth is not None:
            # first: the model routes' /api/v1/<coll>/<key>/ would match these paths
            r("POST", re.escape(A.LOGIN_PATH), self._login)
            r("POST", re.escape(A.LOGOUT_PATH), self._logout)
            r(("GET", "POST"), re.escape(A.USERS_PATH), self._users)
            r(("GET", "PATCH", "DELETE"), re.escape(A.USERS_PATH) + _KEY + "/", self._user)
        r("GET", r"/api/v1/inspect/([^/]+)/" + _KEY + "/", self._inspect)
        r("GET", r"/api/v1/([^/]+)/", self._list)
        r(("GET", "POST", "PUT", "DELETE"), r"/api/v1/([^/]+)/" + _KEY + "/", self._object)
        r("POST", r"/plugin/(allocAddress|releaseAddress|createEndpoint|deleteEndpoint|"
                  r"updateEndpoint)", self._plugin, json_only=True)
        r("POST", r"/plugin/(registerHost)", self._register_host, json_only=True)
        # swarm mode (issue 17): a manager's plugin reports which docker network maps to
        # which Contiv object; the principal is passed like every plugin call's
        r("POST", r"/plugin/(createDocknet|deleteDocknet)", self._plugin, json_only=True)
        r("GET", r"/version", self._version)
        r("GET", r"/info", self._info)
        r("GET", r"/services", self._services)
        r("GET", r"/service/" + _KEY, self._service)
        r("GET", r"/debug/ofnet", self._ofnet)
        r("DELETE", r"/debug/epcleanup/tenant/" + _KEY + "/" + _KEY + "/" + _KEY, self._epcleanup)
        r("GET", re.escape(openapi.DOCUMENT_PATH), self._openapi)
        # the read-only web view (contiv_sdn.ops.webview): its page, state and live feed
        self.web = webview.WebView(lambda: master.store, _controller_of(listen_address))
        r("GET", re.escape(webview.WEB_PATH) + r"(|app\.js|style\.css)", self._web_file)
        r("GET", re.escape(webview.STATE_PATH), self._web_state)
        r("GET", re.escape(webview.EVENTS_PATH), self._web_events)

    def _route(self, methods, pattern: str, handler: Handler, json_only: bool = False) -> None:
        if isinstance(methods, str):
            methods = (methods,)
        self.routes.append((frozenset(methods), re.compile(pattern), handler, json_only))

    def resource(self) -> "NetmasterAPI":
        return self

    def _match(self, method: str, path: str, content_type: str):
        for methods, pattern, handler, json_only in self.routes:
            m = pattern.fullmatch(path)
            if m is None or method not in methods:
                continue
            if json_only and content_type.split(";")[0].strip().lower() != "application/json":
                continue
            return handler, m.groups()
        return None, ()

    # -- twisted.web ------------------------------------------------------------
    def render(self, request) -> Any:
        """Every method and every path lands here (a leaf with no ``render_*``)."""
        method = request.method.decode("latin-1")
        path = decode_path(request.path)
        ops_metrics.track_request(request, path)
        handler, args = (None, ())
        if path is not None:
            ctype = (request.getHeader(b"content-type") or b"").decode("latin-1")
            handler, args = self._match(method, path, ctype)
        if handler is None:
            if self.auth is None:
                self._answer(request, send_error(request, NOT_FOUND_BODY.decode().rstrip("\n"),
                                                 404))
                return NOT_DONE_YET
            # with auth, an unauthenticated client learns nothing, not even which paths exist
            handler, args, path = self._not_found, (), path or ""
        gone: List[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = ensureDeferred(self._dispatch(request, method, path, handler, args))
        # The handler runs to completion even if the client hangs up (no half
        # write); only its answer is dropped.
        d.addCallback(lambda body: None if gone else self._answer(request, body))
        d.addErrback(lambda f: log.failure("{method} {path}: answering failed", f,
                                           method=method, path=_brief(path)))
        return NOT_DONE_YET

    @staticmethod
    def _answer(request, body: bytes) -> None:
        """Send ``body`` with its length (Go sets Content-Length on small answers;
        a HEAD gets the headers only, without Twisted's "eating the body" log line)."""
        if body is webview.STREAMING:  # the stream writes and finishes the request itself
            return
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()

    async def _dispatch(self, request, method: str, path: str, handler: Handler,
                        args: tuple) -> bytes:
        try:
            body = request.content.read() if request.content is not None else b""
            if self.auth is not None and handler not in (self._login, self._web_file):  # the page holds no data
                request.principal = await self._authorize(request, method, path, handler)
            value = await handler(request, method, body, *args)
        except NotFound:
            return send_error(request, NOT_FOUND_BODY.decode().rstrip("\n"), 404)
        except (HttpError, MasterError, ModelError, StoreUnavailable) as e:
            if isinstance(e, A.Throttled):
                request.setHeader(b"Retry-After", b"%d" % e.retry_after)
            status = _status(e)
            log.debug("refused {method} {path} ({status}): {reason}", method=method,
                      path=_brief(path), status=status, reason=_brief(str(e)))
            return send_error(request, str(e), status)
        except Exception:
            log.failure("{method} {path} failed", method=method, path=_brief(path))
            return send_error(request, "internal error")
        if value is webview.STREAMING:
            return value
        if isinstance(value, webview.Reply):
            return value.send(request)
        return send_json(request, value)

    # -- authentication (--auth) ----------------------------------------------
    async def _authorize(self, request, method: str, path: str, handler: Handler):
        """401 without a valid token, 403 when the token's role may not do this;
        an unknown path is 404 only once the client has proved who it is."""
        principal = await self.auth.authenticate(request.getHeader(b"x-auth-token"))
        if handler == self._not_found or handler == self._logout:
            return principal
        if not A.may(principal.role, method, path):
            log.info("refused {method} {path} to user {user} (role {role})", method=method,
                     path=_brief(path), user=principal.user, role=principal.role)
            what = "change anything" if method not in ("GET", "HEAD") else "read this"
            raise A.Forbidden(principal.user, principal.role, what)
        return principal

    async def _not_found(self, request, method, body):
        raise NotFound()

    async def _login(self, request, method, body):
        """Contiv's auth_proxy login: ``{"username","password"}`` → ``{"token"}``."""
        peer = getattr(request.getClientAddress(), "host", "") or "local"
        return await self.auth.login(body, peer)

    async def _logout(self, request, method, body):
        """Revoke the token this request came with (our extension)."""
        return await self.auth.logout(request.principal)

    async def _users(self, request, method, body):
        """``local_users/``: GET lists users, POST ``{"username","password","role"}``
        creates one (admin only, like every change)."""
        if method == "GET":
            return await self.auth.users()
        req = self._user_body(body)
        return await self.auth.set_user(req["username"], req["password"],
                                        req["role"] or "ops", create_only=True)

    async def _user(self, request, method, body, name):
        """``local_users/<name>/``: GET, PATCH ``{"password"?, "role"?}``, DELETE."""
        if method == "GET":
            return await self.auth.user(name)
        if method == "DELETE":
            return await self.auth.remove_user(name)
        req = self._user_body(body)
        if req["username"] and req["username"] != name:
            raise HttpError(f"the body names user {req['username']!r}, the URL {name!r}", 400)
        if not req["password"] and not req["role"]:
            raise HttpError("nothing to change: give a password or a role", 400)
        await self.auth.user(name)  # 404 for an unknown user: PATCH does not create
        return await self.auth.set_user(name, req["password"] or None, req["role"] or None)

    @staticmethod
    def _user_body(body: bytes) -> dict:
        try:
            return A.USER_REQUEST.load(body)
        except DecodeError as e:
            raise HttpError(str(e), 400)

    # -- handlers -----------------------------------------------------------
    @staticmethod
    def _spec(coll: str, need_config: bool = True):
        spec = by_collection(coll)
        if spec is None or (need_config and not spec.has_config):
            raise NotFound()
        return spec

    async def _list(self, request, method, body, coll):
        return await self.model.list(self._spec(coll))

    async def _object(self, request, method, body, coll, key):
        spec = self._spec(coll)
        if method == "GET":
            return await self.model.get(spec, key)
        if method == "DELETE":
            return await self.model.delete(spec, key)
        return await self.model.post(spec, key, body)

    async def _inspect(self, request, method, body, coll, key):
        return await self.model.inspect(self._spec(coll, need_config=False), key)

    async def _plugin(self, request, method, body, name):
        # with --auth, the principal: a node's calls run for its own host only
        return await self.plugin.plugin(name, body, getattr(request, "principal", None))

    async def _register_host(self, request, method, body, name):
        """``POST /plugin/registerHost``: our extension, not Contiv's — its netplugin
        wrote its node into etcd directly; here hosts read Redis but write only
        through the netmaster (one writer to authenticate, records checked before
        the controller reads them).  Body: ``RegisterHostRequest``
        (:mod:`contiv_sdn.model.plugin_api`); answer: the stored ``HostState``;
        refusals are 500 with the reason, as for every ``/plugin`` call (403 for a
        ``node`` user registering another host)."""
        return await self.plugin.plugin(name, body, getattr(request, "principal", None))

    async def _version(self, request, method, body):
        return self.plugin.version()

    async def _info(self, request, method, body):
        return await self.plugin.info()

    async def _services(self, request, method, body):
        return await self.plugin.services()

    async def _service(self, request, method, body, ident):
        return await self.plugin.service(ident)

    async def _ofnet(self, request, method, body):
        return {}

    async def _epcleanup(self, request, method, body, tenant, category, ident):
        return await self.plugin.epcleanup(tenant, category, ident)

    async def _openapi(self, request, method, body):
        """This API's OpenAPI 3.1 document, generated from the model tables."""
        return openapi.document()

    async def _web_file(self, request, method, body, name):
        return self.web.file(name)

    async def _web_state(self, request, method, body):
        return await self.web.state()

    async def _web_events(self, request, method, body):
        return await self.web.events(request)


def _controller_of(listen_address: Callable[[], str]) -> Callable[[], Any]:
    """The OpenFlow controller of the netmaster serving this API, read when needed.

    The service hands the API its bound ``address`` method; its owner (the
    ``NetmasterService``) holds ``controller`` (``None`` without ``--ofp-listen``).
    Read, not passed, so the service's construction of the API is unchanged."""
    owner = getattr(listen_address, "__self__", None)
    return lambda: getattr(owner, "controller", None)


def make_resource(master: Master, listen_address: Optional[Callable[[], str]] = None,
                  auth: Optional["A.Auth"] = None):
    return NetmasterAPI(master, listen_address or (lambda: ""), auth)
