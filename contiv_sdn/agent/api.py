"""The agent's local HTTP API, on a root-only UNIX socket.

Runtimes' drivers (Docker, CNI) and the tests ask the agent for endpoints here.
Every answer is JSON; every error is ``{"error": "<what was wrong and what to
do>"}`` with a 4xx/5xx status, so a caller can show it as it is.

Routes::

    POST   /v1/endpoints         create (body: id, netns, network, [ifname, tenant, group,
                                 ip, name, containerID, labels])
    GET    /v1/endpoints         list
    GET    /v1/endpoints/<id>    one
    DELETE /v1/endpoints/<id>    delete (idempotent)
    POST   /v1/reconcile         reap endpoints whose container is gone (also runs by itself)
    GET    /v1/status            host, vtepIP, dpid, bridge, ready
    POST   /v1/cni               one run of the CNI plugin for the C shim (drivers/cni/shim.c):
                                 binary body, the plugin's stdout back (agent/cni_route.py)

Request bodies are decoded into their declared shape (:data:`CREATE_REQUEST`, Go's
rules via :mod:`contiv_sdn.model.shapes`: strict JSON without NaN/Infinity, bounded
depth, typed fields) before anything else looks at them, so a wrong type is a 400
naming the field (``json: cannot unmarshal number into Go struct field
EndpointRequest.netns of type string``), never a traceback or a Python repr.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.application.internet import UNIXServer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from contiv_sdn.agent.cni_route import CNIRoute
from contiv_sdn.agent.endpoints import BadRequest, EndpointError, EndpointManager, EndpointRequest
from contiv_sdn.agent.netmaster import NetmasterBadReply, NetmasterError, NetmasterUnavailable
from contiv_sdn.agent.ovsdb import OvsdbError
from contiv_sdn.agent.plumbing import InterfaceExists, NetnsNotFound, PlumbingError
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import STR, STR_MAP, Struct
from contiv_sdn.ops import metrics

log = Logger()

#: ``POST /v1/endpoints``: what :class:`~contiv_sdn.agent.client.AgentClient` and the CNI
#: plugin (``drivers/cni``) send.  Absent fields decode to "" and take their defaults in
#: :meth:`EndpointRequest.from_json` (ifname eth0, tenant default).
CREATE_REQUEST = Struct("EndpointRequest", [
    ("id", STR), ("netns", STR), ("network", STR), ("ifname", STR), ("tenant", STR),
    ("group", STR), ("ip", STR), ("name", STR), ("containerID", STR), ("labels", STR_MAP),
])


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, EndpointError):
        return exc.status
    if isinstance(exc, NetnsNotFound):
        return 400
    if isinstance(exc, InterfaceExists):
        return 409
    if isinstance(exc, (NetmasterUnavailable, OvsdbError)):
        return 503
    if isinstance(exc, NetmasterBadReply):
        return 502
    if isinstance(exc, NetmasterError):
        # the netmaster's own refusal (unknown network, address taken...): pass it on
        return 400 if exc.status < 500 else 500
    return 500


class AgentAPI:
    app = Klein()

    def __init__(self, endpoints: EndpointManager, status: Callable[[], Dict[str, Any]]):
        self.endpoints = endpoints
        self.status = status
        self.cni = CNIRoute()

    # -- plumbing of the HTTP layer --------------------------------------------
    @staticmethod
    def _json(request: Any, code: int, body: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body, sort_keys=True).encode() + b"\n"

    async def _guard(self, request: Any, what: str, fn: Callable[[], Any]) -> bytes:
        started = time.perf_counter()
        try:
            code, body = await fn()
        except (EndpointError, NetnsNotFound, InterfaceExists, PlumbingError, NetmasterError,
                NetmasterUnavailable, OvsdbError) as e:
            status = _status_of(e)
            log.info("{what}: {status} {err}", what=what, status=status, err=e)
            metrics.plugin_call("agent", what, "refused" if status < 500 else "error",
                                time.perf_counter() - started)
            return self._json(request, status, {"error": str(e)})
        except Exception as e:  # a bug: say so, keep the process alive
            log.failure("{what} failed unexpectedly", what=what)
            metrics.plugin_call("agent", what, "error", time.perf_counter() - started)
            return self._json(request, 500, {"error": f"internal error in the agent ({what}): "
                                                      f"{e.__class__.__name__}: {e}; see its log"})
        metrics.plugin_call("agent", what, "ok" if code < 400 else "refused",
                            time.perf_counter() - started)
        return self._json(request, code, body)

    @staticmethod
    def _body(request: Any, shape: Struct) -> Dict[str, Any]:
        """The request body decoded into ``shape``; :class:`BadRequest` (400) otherwise."""
        raw = request.content.read() if request.content is not None else b""
        if not raw.strip():
            raise BadRequest(f"the body is empty; send a JSON object with the fields of "
                             f"{shape.go_name} ({', '.join(shape.fields)})")
        try:
            return shape.load(raw)
        except DecodeError as e:
            raise BadRequest(f"the body is not a valid {shape.go_name}: {e}") from None

    # -- routes -------------------------------------------------------------------
    @app.route("/v1/status", methods=["GET"])
    def get_status(self, request: Any) -> bytes:
        return self._json(request, 200, self.status())

    @app.route("/v1/endpoints", methods=["POST"])
    async def create(self, request: Any) -> bytes:
        async def run() -> Any:
            req = EndpointRequest.from_json(self._body(request, CREATE_REQUEST))
            return 200, await self.endpoints.create(req)
        return await self._guard(request, "create endpoint", run)

    @app.route("/v1/endpoints", methods=["GET"])
    async def list(self, request: Any) -> bytes:
        async def run() -> Any:
            return 200, await self.endpoints.list()
        return await self._guard(request, "list endpoints", run)

    @app.route("/v1/endpoints/<string:endpoint_id>", methods=["GET"])
    async def get(self, request: Any, endpoint_id: str) -> bytes:
        async def run() -> Any:
            record = await self.endpoints.get(endpoint_id)
            if record is None:
                return 404, {"error": f"endpoint {endpoint_id} is not on this host"}
            return 200, record
        return await self._guard(request, "get endpoint", run)

    @app.route("/v1/endpoints/<string:endpoint_id>", methods=["DELETE"])
    async def delete(self, request: Any, endpoint_id: str) -> bytes:
        async def run() -> Any:
            existed = await self.endpoints.delete(endpoint_id)
            return 200, {"id": endpoint_id, "deleted": existed}
        return await self._guard(request, "delete endpoint", run)

    @app.route("/v1/reconcile", methods=["POST"])
    async def reconcile(self, request: Any) -> bytes:
        async def run() -> Any:
            return 200, await self.endpoints.reconcile()
        return await self._guard(request, "reconcile", run)

    @app.route("/v1/cni", methods=["POST"])
    async def cni_call(self, request: Any) -> bytes:
        """The CNI plugin's answer for the shim: 200, its stdout, ``X-CNI-Exit``; 400 for
        a body that is not a framed call (the shim then runs the Python plugin)."""
        raw = request.content.read() if request.content is not None else b""
        code, headers, body = await self.cni.call(raw)
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/octet-stream" if code == 200
                          else b"text/plain; charset=utf-8")
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return body

    @app.handle_errors(Exception)
    def _unhandled(self, request: Any, failure: Any) -> bytes:
        from werkzeug.exceptions import MethodNotAllowed, NotFound
        if failure.check(NotFound):
            return self._json(request, 404, {"error": f"no such route: {request.path.decode()} "
                                                      "(see GET /v1/status, /v1/endpoints)"})
        if failure.check(MethodNotAllowed):
            return self._json(request, 405, {"error": f"method {request.method.decode()} not "
                                                      f"allowed on {request.path.decode()}"})
        log.failure("unhandled error in the local API", failure)
        return self._json(request, 500, {"error": "internal error in the agent; see its log"})

    def site(self) -> Site:
        site = _Site(_PathGuard(self.app.resource()), self.cni.stop)
        site.displayTracebacks = False
        site.noisy = False
        return site


class _Site(Site):
    """The API's site; stopping it (netplugin's stopService) also stops the CNI route's
    worker threads."""

    def __init__(self, resource: Resource, on_stop: Callable[[], None]):
        super().__init__(resource)
        self._on_stop = on_stop

    def stopFactory(self) -> None:
        self._on_stop()
        super().stopFactory()


class _PathGuard(Resource):
    """Klein decodes the path as UTF-8 before routing and logs a traceback when it is
    not (``/v1/endpoints/%ff``): such a path is refused here, in the API's JSON."""

    isLeaf = True

    def __init__(self, inner: Resource):
        super().__init__()
        self.inner = inner

    def render(self, request: Any) -> Any:
        try:
            unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            log.info("refused a request whose path is not UTF-8")
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"error": "the request path is not valid UTF-8 once "
                                        "percent-decoded"}).encode() + b"\n"
        return self.inner.render(request)


def unix_server(path: str, site: Site) -> UNIXServer:
    """A root-only listening socket (mode 0600) in a directory created if needed.

    ``wantPID`` makes Twisted keep a lock file next to the socket, so a stale
    socket left by a killed agent is replaced but a live agent's is not.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    return UNIXServer(path, site, mode=0o600, wantPID=True)
