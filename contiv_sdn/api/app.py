"""The netmaster's HTTP surface as one Klein app, routed like gorilla/mux.

Klein's own routing (werkzeug) redirects a path without its trailing slash;
Contiv's clients expect ``404 page not found`` there, and a 404 (not 405) for
a wrong method.  So a single catch-all Klein route hands every request to
an explicit table of (methods, pattern) → handler, matched exactly.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, List, Optional, Tuple
from urllib.parse import unquote

from klein import Klein
from twisted.logger import Logger

from contiv_sdn.api.http import NOT_FOUND_BODY, HttpError, NotFound, send_error, send_json
from contiv_sdn.api.plugin import PluginRoutes
from contiv_sdn.api.rest import ModelRoutes
from contiv_sdn.master import Master, MasterError
from contiv_sdn.model import by_collection

log = Logger()

_KEY = r"([^/]+)"
Handler = Callable[..., Awaitable[Any]]


class NetmasterAPI:
    """Build with a :class:`Master`; serve ``.app.resource()``."""

    app = Klein()

    def __init__(self, master: Master, listen_address: Callable[[], str] = lambda: ""):
        self.master = master
        self.model = ModelRoutes(master)
        self.plugin = PluginRoutes(master, listen_address)
        self.routes: List[Tuple[frozenset, re.Pattern, Handler]] = []
        r = self._route
        r("GET", r"/api/v1/inspect/([^/]+)/" + _KEY + "/", self._inspect)
        r("GET", r"/api/v1/([^/]+)/", self._list)
        r(("GET", "POST", "PUT", "DELETE"), r"/api/v1/([^/]+)/" + _KEY + "/", self._object)
        r("POST", r"/plugin/(allocAddress|releaseAddress|createEndpoint|deleteEndpoint|"
                  r"updateEndpoint)", self._plugin, json_only=True)
        r("GET", r"/version", self._version)
        r("GET", r"/info", self._info)
        r("GET", r"/services", self._services)
        r("GET", r"/service/" + _KEY, self._service)
        r("GET", r"/debug/ofnet", self._ofnet)
        r("DELETE", r"/debug/epcleanup/tenant/" + _KEY + "/" + _KEY + "/" + _KEY, self._epcleanup)

    def _route(self, methods, pattern: str, handler: Handler, json_only: bool = False) -> None:
        if isinstance(methods, str):
            methods = (methods,)
        self.routes.append((frozenset(methods), re.compile(pattern), handler, json_only))

    def resource(self):
        return self.app.resource()

    def _match(self, method: str, path: str, content_type: str):
        for methods, pattern, handler, json_only in self.routes:
            m = pattern.fullmatch(path)
            if m is None or method not in methods:
                continue
            if json_only and content_type.split(";")[0].strip().lower() != "application/json":
                continue
            return handler, m.groups()
        return None, ()

    @app.route("/", branch=True, methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH",
                                            "OPTIONS"])
    async def dispatch(self, request):
        method = request.method.decode("ascii", "replace")
        path = unquote(request.path.decode("utf-8", "replace"))
        ctype = (request.getHeader(b"content-type") or b"").decode("latin-1")
        handler, args = self._match(method, path, ctype)
        if handler is None:
            return send_error(request, NOT_FOUND_BODY.decode().rstrip("\n"), 404)
        try:
            body = request.content.read() if request.content is not None else b""
            value = await handler(request, method, body, *args)
        except NotFound:
            return send_error(request, "404 page not found", 404)
        except (HttpError, MasterError) as e:
            status = getattr(e, "status", 500)
            log.debug("{method} {path}: {err}", method=method, path=path, err=str(e))
            return send_error(request, str(e), status)
        except Exception:
            log.failure("{method} {path} failed", method=method, path=path)
            return send_error(request, "internal error")
        return send_json(request, value)

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
        return await self.plugin.plugin(name, body)

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


def make_resource(master: Master, listen_address: Optional[Callable[[], str]] = None):
    api = NetmasterAPI(master, listen_address or (lambda: ""))
    return api.resource()
