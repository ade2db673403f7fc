"""A small Docker Engine API client: treq over the engine's UNIX socket.

Only what netplugin needs: networks (list, inspect, create, remove), containers
(inspect, list), ``/_ping`` and the ``/events`` stream.  Paths are unversioned,
so the engine answers in its own current API version (Docker 20.10 is 1.41).

dockerd's replies are decoded into declared shapes (the Engine API's
``NetworkResource``, ``ContainerJSON``, ``events.Message``... reduced to the fields
netplugin reads) with Go's strict parser before anything acts on them: every
declared field is present and of its type, so a reply that does not fit is a
:class:`DockerAPIError` ("dockerd: inspect network N: malformed reply: ..."), not a
dict where a string was meant travelling on into the driver's state.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import quote, urlencode

from treq import collect
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from twisted.logger import Logger

from contiv_sdn.agent.client import UnixEndpoints
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.gojson import JObject, parse
from contiv_sdn.model.shapes import BOOL, INT, STR, STR_MAP, ListOf, MapOf, Struct

log = Logger()

_IPAM_CONFIG = Struct("IPAMConfig", [("Subnet", STR), ("IPRange", STR), ("Gateway", STR),
                                     ("AuxAddress", STR_MAP)])
#: ``GET /networks/{id}`` and each entry of ``GET /networks``.
NETWORK = Struct("NetworkResource", [
    ("Name", STR), ("Id", STR), ("Scope", STR), ("Driver", STR), ("Internal", BOOL),
    ("Options", STR_MAP), ("Labels", STR_MAP),
    ("IPAM", Struct("IPAM", [("Driver", STR), ("Options", STR_MAP),
                             ("Config", ListOf(_IPAM_CONFIG))])),
    ("Containers", MapOf(Struct("EndpointResource", [
        ("Name", STR), ("EndpointID", STR), ("MacAddress", STR), ("IPv4Address", STR),
        ("IPv6Address", STR)]))),
])
NETWORK_LIST = ListOf(NETWORK)
NETWORK_CREATED = Struct("NetworkCreateResponse", [("Id", STR), ("Warning", STR)])
#: ``GET /containers/{id}/json``.
CONTAINER = Struct("ContainerJSON", [
    ("Id", STR), ("Name", STR),
    ("State", Struct("ContainerState", [("Status", STR), ("Running", BOOL), ("Pid", INT)])),
    ("Config", Struct("Config", [("Labels", STR_MAP)])),
    ("NetworkSettings", Struct("NetworkSettings", [("Networks", MapOf(Struct(
        "EndpointSettings", [("NetworkID", STR), ("EndpointID", STR), ("IPAddress", STR),
                             ("MacAddress", STR)])))])),
])
#: One line of ``GET /events``.
EVENT = Struct("Message", [
    ("Type", STR), ("Action", STR), ("status", STR), ("id", STR),
    ("Actor", Struct("Actor", [("ID", STR), ("Attributes", STR_MAP)])),
])
#: ``GET /info``, reduced to whether this engine manages a swarm.
INFO = Struct("SystemInfo", [("Swarm", Struct("SwarmInfo", [
    ("NodeID", STR), ("LocalNodeState", STR), ("ControlAvailable", BOOL)]))])
_ERROR = Struct("ErrorResponse", [("message", STR)])


def _decode(shape: Any, raw: bytes) -> Any:
    """``raw`` decoded into ``shape`` (a :class:`Struct` or a ``ListOf`` one)."""
    if isinstance(shape, Struct):
        return shape.load(raw)
    value = parse(raw)
    if not isinstance(value, list) or isinstance(value, JObject):
        kind = ("object" if isinstance(value, JObject) else "string" if isinstance(value, str)
                else "bool" if isinstance(value, bool) else "number")
        raise DecodeError(f"json: cannot unmarshal {kind} into Go value of type {shape.go}")
    return shape.decode(value, None, shape.elem.go, [])


class DockerAPIError(RuntimeError):
    def __init__(self, status: int, message: str, what: str):
        self.status = status
        self.message = message
        super().__init__(f"dockerd: {what}: {message or f'HTTP {status}'}")


def _message(raw: bytes) -> str:
    """dockerd's error text: its ``message``, else the body itself (cut short)."""
    try:
        message = _ERROR.load(raw)["message"]
    except DecodeError:
        message = ""
    return message or raw.decode("utf-8", "replace").strip()[:2000]


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
                    ok: tuple = (200, 201, 204), missing_ok: bool = False,
                    reply: Any = None) -> Any:
        """One call; a 2xx body is decoded into ``reply`` (None: returned as text)."""
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
        if reply is None:
            return raw.decode("utf-8", "replace")
        try:
            return _decode(reply, raw)
        except DecodeError as e:
            raise DockerAPIError(502, f"malformed reply: {e}", what) from None

    async def ping(self) -> bool:
        try:
            return (await self._call("GET", "/_ping", "ping")) == "OK"
        except Exception:
            return False

    async def swarm(self) -> Dict[str, Any]:
        """This engine's swarm membership: ``LocalNodeState`` ("active" in a swarm) and
        ``ControlAvailable`` (a manager, which sees every swarm network)."""
        info = await self._call("GET", "/info", "info", reply=INFO) or {}
        return info.get("Swarm") or {}

    # -- networks ------------------------------------------------------------------
    async def list_networks(self, driver: Optional[str] = None) -> List[Dict[str, Any]]:
        path = "/networks"
        if driver:
            path += "?" + urlencode({"filters": json.dumps({"driver": [driver]})})
        return await self._call("GET", path, "list networks", reply=NETWORK_LIST) or []

    async def inspect_network(self, network: str) -> Optional[Dict[str, Any]]:
        return await self._call("GET", f"/networks/{quote(network, safe='')}",
                                f"inspect network {network[:64]}", missing_ok=True,
                                reply=NETWORK)

    async def create_network(self, spec: Dict[str, Any]) -> str:
        answer = await self._call("POST", "/networks/create",
                                  f"create network {spec.get('Name')}", spec,
                                  reply=NETWORK_CREATED)
        return answer["Id"] if answer else ""

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
                                f"inspect container {container[:12]}", missing_ok=True,
                                reply=CONTAINER)

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
                    event = EVENT.load(line)
                except DecodeError as e:
                    log.info("ignoring a malformed docker event: {err}", err=e)
                    continue
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
