"""A small Docker Engine API client: treq over the engine's UNIX socket.

Only what netplugin needs: networks (list, inspect, create, remove), containers
(inspect, list), ``/_ping`` and the ``/events`` stream.  Paths are unversioned,
so the engine answers in its own current API version (Docker 20.10 is 1.41).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import quote, urlencode

from treq import collect
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from contiv_sdn.agent.client import UnixEndpoints


class DockerAPIError(RuntimeError):
    def __init__(self, status: int, message: str, what: str):
        self.status = status
        self.message = message
        super().__init__(f"dockerd: {what}: {message or f'HTTP {status}'}")


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message", ""))
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace").strip()


def socket_path(url: str) -> str:
    """``unix:///var/run/docker.sock`` or a plain path → the path."""
    if url.startswith("unix://"):
        return url[len("unix://"):]
    if "://" in url:
        raise ValueError(f"docker endpoint {url!r}: only unix:// sockets are supported")
    return url


class DockerClient:
    def __init__(self, url: str, reactor: Any = None, timeout: float = 30.0):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.path = socket_path(url)
        self.reactor = reactor
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(reactor, UnixEndpoints(reactor, self.path, 10),
                                           pool=self._pool)
        self._http = HTTPClient(agent)

    def close(self) -> defer.Deferred:
        return self._pool.closeCachedConnections()

    async def _call(self, method: str, path: str, what: str, body: Any = None,
                    ok: tuple = (200, 201, 204), missing_ok: bool = False) -> Any:
        kw: Dict[str, Any] = {"timeout": self.timeout}
        if body is not None:
            kw["data"] = json.dumps(body).encode()
            kw["headers"] = {b"Content-Type": [b"application/json"]}
        response = await self._http.request(method, "http://docker" + path, **kw)
        raw = await response.content()
        if missing_ok and response.code == 404:
            return None
        if response.code not in ok:
            raise DockerAPIError(response.code, _message(raw), what)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    async def ping(self) -> bool:
        try:
            return (await self._call("GET", "/_ping", "ping")) == "OK"
        except Exception:
            return False

    # -- networks ------------------------------------------------------------------
    async def list_networks(self, driver: Optional[str] = None) -> List[Dict[str, Any]]:
        path = "/networks"
        if driver:
            path += "?" + urlencode({"filters": json.dumps({"driver": [driver]})})
        return await self._call("GET", path, "list networks") or []

    async def inspect_network(self, network: str) -> Optional[Dict[str, Any]]:
        return await self._call("GET", f"/networks/{quote(network, safe='')}",
                                f"inspect network {network}", missing_ok=True)

    async def create_network(self, spec: Dict[str, Any]) -> str:
        answer = await self._call("POST", "/networks/create",
                                  f"create network {spec.get('Name')}", spec)
        return answer.get("Id", "") if isinstance(answer, dict) else ""

    async def remove_network(self, network: str) -> bool:
        """False when it was already gone."""
        response = await self._http.request("DELETE", "http://docker/networks/"
                                            + quote(network, safe=""), timeout=self.timeout)
        raw = await response.content()
        if response.code == 404:
            return False
        if response.code not in (200, 204):
            raise DockerAPIError(response.code, _message(raw), f"remove network {network}")
        return True

    # -- containers ----------------------------------------------------------------
    async def inspect_container(self, container: str) -> Optional[Dict[str, Any]]:
        return await self._call("GET", f"/containers/{quote(container, safe='')}/json",
                                f"inspect container {container[:12]}", missing_ok=True)

    async def list_containers(self, all: bool = False) -> List[Dict[str, Any]]:
        path = "/containers/json" + ("?all=1" if all else "")
        return await self._call("GET", path, "list containers") or []

    # -- events --------------------------------------------------------------------
    def events(self, filters: Dict[str, List[str]],
               on_event: Callable[[Dict[str, Any]], None]) -> defer.Deferred:
        """Stream ``/events``; ``on_event`` gets each decoded event.

        Fires (None) when the stream ends — dockerd stopped — or fails when it
        cannot be opened; cancel the Deferred to stop listening.
        """
        path = "/events?" + urlencode({"filters": json.dumps(filters)})
        buffer = bytearray()

        def chunk(data: bytes) -> None:
            buffer.extend(data)
            while True:
                # events are newline-delimited JSON objects
                nl = buffer.find(b"\n")
                if nl < 0:
                    return
                line = bytes(buffer[:nl]).strip()
                del buffer[:nl + 1]
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    on_event(event)

        d = self._http.request("GET", "http://docker" + path, unbuffered=True)

        def refused(raw: bytes, code: int) -> None:
            raise DockerAPIError(code, _message(raw), "events")

        def opened(response: Any) -> Any:
            if response.code != 200:
                return response.content().addCallback(refused, response.code)
            return collect(response, chunk)

        d.addCallback(opened)
        return d
