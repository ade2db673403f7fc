"""The plugin's HTTP face: ``POST /<Interface>.<Method>`` → a :class:`DockerDriver` call.

Twisted web on a UNIX socket; each call runs as a coroutine on the reactor and
its answer is written when it finishes (``NOT_DONE_YET``).  Statuses follow
:mod:`drivers.docker.protocol`: 200 with the call's JSON, 400 for a malformed
body, 404 for an unknown call, 405 for anything but POST, 500 with ``{"Err"}``
for a call that failed.  Unexpected exceptions are logged with their traceback
and answered with a short ``Err`` (never a traceback: Docker shows it to users).
"""

from __future__ import annotations

import json
import os
import time
import weakref
from typing import Any

from twisted.application.internet import UNIXServer
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from contiv_sdn.ops import metrics
from drivers.docker.protocol import CALLS, CONTENT_TYPE, BadRequest, DriverError, error_body, parse

log = Logger()


class DockerPluginResource(resource.Resource):
    isLeaf = True

    def __init__(self, driver: Any):
        super().__init__()
        self.driver = driver

    def render(self, request: server.Request) -> Any:
        call = request.path.decode("utf-8", "replace").lstrip("/")
        if getattr(request.site, "closed", False):
            request.setHeader(b"Connection", b"close")
            return self._answer(request, 503, error_body("netplugin is stopping; retry"))
        if call not in CALLS:
            return self._answer(request, 404, error_body(
                f"netplugin does not implement {call or '(no method)'}"))
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            return self._answer(request, 405, error_body(f"{call} must be called with POST"))
        raw = request.content.read() if request.content is not None else b""
        try:
            body = parse(call, raw)
        except BadRequest as e:
            log.info("plugin call {call}: bad request: {err}", call=call, err=e)
            return self._answer(request, 400, error_body(str(e)))
        started = time.perf_counter()

        def done(result: Any) -> None:
            metrics.plugin_call("docker", call, "ok", time.perf_counter() - started)
            self._finish(request, 200, json.dumps(result).encode())

        def failed(f: Any) -> None:
            refused = f.check(DriverError, BadRequest) and \
                getattr(f.value, "status", 400) < 500
            metrics.plugin_call("docker", call, "refused" if refused else "error",
                                time.perf_counter() - started)
            self._fail(request, call, f)

        d = defer.ensureDeferred(self.driver.handle(call, body))
        d.addCallbacks(done, failed)
        request.notifyFinish().addErrback(lambda _: None)  # client gone: nothing to write to
        return server.NOT_DONE_YET

    @staticmethod
    def _answer(request: server.Request, status: int, body: bytes) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        return body

    def _finish(self, request: server.Request, status: int, body: bytes) -> None:
        if request._disconnected or request.finished:
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.write(body)
        request.finish()

    def _fail(self, request: server.Request, call: str, failure: Any) -> None:
        if failure.check(DriverError):
            err = failure.value
            log.info("plugin call {call} failed: {err}", call=call, err=err)
            self._finish(request, err.status, error_body(str(err)))
            return
        if failure.check(BadRequest):
            self._finish(request, 400, error_body(str(failure.value)))
            return
        log.failure("plugin call {call} failed unexpectedly", failure, call=call)
        self._finish(request, 500, error_body(
            f"netplugin: internal error in {call} ({failure.type.__name__}); "
            "see the netplugin log"))


class PluginSite(server.Site):
    """A Site that can drop its open connections.

    dockerd keeps plugin connections alive between calls; without closing them
    on stop, a stopped driver would go on answering on connections accepted
    before (the listening socket alone closes nothing).
    """

    def __init__(self, res: resource.Resource):
        super().__init__(res)
        self.displayTracebacks = False
        self.noisy = False
        self.connections: "weakref.WeakSet[Any]" = weakref.WeakSet()
        #: Set on stop: calls still arriving are refused (dockerd retries elsewhere/later).
        self.closed = False

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        if proto is not None:
            self.connections.add(proto)
        return proto

    def close_connections(self) -> None:
        self.closed = True
        for proto in list(self.connections):
            # the generic HTTP protocol wraps the channel that owns the transport
            channel = getattr(proto, "_channel", proto)
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()


def plugin_site(driver: Any) -> PluginSite:
    return PluginSite(DockerPluginResource(driver))


def plugin_server(path: str, site: server.Site) -> UNIXServer:
    """Listen on ``path`` (the plugin folder is created; a stale socket is replaced).

    Mode 0660: dockerd runs as root; nobody else may drive the network.
    ``wantPID`` keeps a lock next to the socket so a live netplugin's socket is
    never taken over, while a killed one's is.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    return UNIXServer(path, site, mode=0o660, wantPID=True)
