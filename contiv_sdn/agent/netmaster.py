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
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional
from urllib.parse import quote

import treq
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectingCancelledError, TimeoutError
from twisted.logger import Logger
from twisted.web.client import (HTTPConnectionPool, RequestNotSent, RequestTransmissionFailed,
                                ResponseFailed, ResponseNeverReceived)

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


class NetmasterClient:
    def __init__(self, url: str, timeout: float = 30.0, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.reactor = reactor
        # Persistent: every attach and detach makes one to three calls, and a new TCP
        # connection each time (through the host's OVS, in the lab) costs more than the
        # call.  close() (the service's stop) closes the idle ones.
        self._pool = QuietPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4

    async def request(self, method: str, path: str, what: str,
                       body: Optional[Dict[str, Any]] = None, idempotent: bool = False,
                       reply: Optional[Struct] = None) -> Any:
        """One call; ``idempotent`` (GETs always are) allows one retry when a kept-alive
        connection turns out to be dead (netmaster restarted) before any answer came.

        A 200 answer is decoded into ``reply`` (every declared field present, typed),
        or, without one, strictly parsed as free-form JSON; either failing is
        :class:`NetmasterBadReply` naming the route."""
        url = self.url + path
        kw: Dict[str, Any] = {"timeout": self.timeout, "pool": self._pool,
                              "reactor": self.reactor}
        if body is not None:
            kw["data"] = json.dumps(body).encode()
            kw["headers"] = {b"Content-Type": [b"application/json"]}
        may_repeat = idempotent or method == "GET"
        for attempt in (1, 2):
            try:
                response = await treq.request(method, url, **kw)
                # treq's timeout ends at the response headers: bound the body too
                content = await treq.content(response).addTimeout(self.timeout, self.reactor)
                break
            except RequestNotSent as e:
                failed: Exception = e  # nothing reached the netmaster: safe to send again
            except (RequestTransmissionFailed, ResponseNeverReceived) as e:
                failed = e
                if not may_repeat:
                    raise self._unavailable(what, e) from None
            except (ConnectError, ConnectingCancelledError, TimeoutError, ResponseFailed,
                    defer.CancelledError, defer.TimeoutError) as e:
                raise self._unavailable(what, e) from None
            if attempt == 2:
                raise self._unavailable(what, failed) from None
        if response.code != 200:
            raise NetmasterError(response.code, content.decode("utf-8", "replace"), what)
        call = path[len("/plugin/"):] if path.startswith("/plugin/") else what
        try:
            if reply is not None:
                return reply.load(content)
            return loads(content) if content.strip() else {}
        except DecodeError as e:
            raise NetmasterBadReply(call, str(e)) from None

    def _unavailable(self, what: str, e: BaseException) -> "NetmasterUnavailable":
        return NetmasterUnavailable(f"netmaster at {self.url} is not reachable ({what}): "
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
