"""A client for the agent's local API over its UNIX socket (Twisted, treq).

For in-process users on a reactor (drivers, tests).  Errors come back as
:class:`AgentAPIError` carrying the agent's own ``error`` text.  Answers are parsed
with Go's strict parser (:func:`contiv_sdn.model.shapes.loads`: no NaN/Infinity,
bounded depth, no recursion), so an odd answer is an error, not a crash.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from contiv_sdn.agent.netmaster import QuietPool
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import loads


class AgentAPIError(RuntimeError):
    def __init__(self, status: int, error: str):
        self.status = status
        self.error = error
        super().__init__(f"netplugin answered {status}: {error}")


@implementer(IAgentEndpointFactory)
class UnixEndpoints:
    """Every request of a twisted.web ``Agent`` goes to one unix socket."""

    def __init__(self, reactor: Any, path: str, timeout: float):
        self.reactor, self.path, self.timeout = reactor, path, timeout

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self.reactor, self.path, timeout=self.timeout)


class AgentClient:
    def __init__(self, socket_path: str, timeout: float = 60.0, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.timeout = timeout
        self.reactor = reactor
        pool = QuietPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(reactor, UnixEndpoints(reactor, socket_path, 10),
                                           pool=pool)
        self._http = HTTPClient(agent)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        kw: Dict[str, Any] = {"timeout": self.timeout}
        if body is not None:
            kw["data"] = json.dumps(body).encode()
            kw["headers"] = {b"Content-Type": [b"application/json"]}
        response = await self._http.request(method, "http://netplugin" + path, **kw)
        raw = await response.content()
        try:
            answer = loads(raw) if raw.strip() else None
        except DecodeError as e:
            if response.code < 400:
                raise AgentAPIError(502, f"netplugin sent a malformed answer to {method} {path}: "
                                         f"{e}") from None
            answer = {"error": raw.decode("utf-8", "replace").strip()[:2000]}
        if response.code >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise AgentAPIError(response.code, error if isinstance(error, str) and error
                                else f"HTTP {response.code}")
        return answer

    async def status(self) -> Dict[str, Any]:
        return await self.request("GET", "/v1/status")

    async def create_endpoint(self, endpoint_id: str, netns: str, network: str,
                              tenant: str = "default", group: str = "", ifname: str = "eth0",
                              ip: str = "", name: str = "", container_id: str = "",
                              labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        body = {"id": endpoint_id, "netns": netns, "network": network, "tenant": tenant,
                "group": group, "ifname": ifname, "name": name, "containerID": container_id,
                "labels": dict(labels or {})}
        if ip:
            body["ip"] = ip
        return await self.request("POST", "/v1/endpoints", body)

    async def delete_endpoint(self, endpoint_id: str) -> Dict[str, Any]:
        return await self.request("DELETE", "/v1/endpoints/" + quote(endpoint_id, safe=""))

    async def endpoints(self) -> Any:
        return await self.request("GET", "/v1/endpoints")
