"""The agent's client for the netmaster's plugin and inspect routes (over HTTP, with treq).

Contiv's netmaster answers every error with HTTP 500 and a text body; that
text is what a user needs to see (``network not found``…), so
:class:`NetmasterError` carries it verbatim.  An unreachable netmaster is a
different failure (retry later), hence :class:`NetmasterUnavailable`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional
from urllib.parse import quote

import treq
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectingCancelledError, TimeoutError
from twisted.web.client import (HTTPConnectionPool, RequestNotSent, RequestTransmissionFailed,
                                ResponseFailed, ResponseNeverReceived)


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

    async def _request(self, method: str, path: str, what: str,
                       body: Optional[Dict[str, Any]] = None, idempotent: bool = False) -> Any:
        """One call; ``idempotent`` (GETs always are) allows one retry when a kept-alive
        connection turns out to be dead (netmaster restarted) before any answer came."""
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
                content = await treq.content(response)
                break
            except RequestNotSent as e:
                failed: Exception = e  # nothing reached the netmaster: safe to send again
            except (RequestTransmissionFailed, ResponseNeverReceived) as e:
                failed = e
                if not may_repeat:
                    raise self._unavailable(what, e) from None
            except (ConnectError, ConnectingCancelledError, TimeoutError, ResponseFailed,
                    defer.CancelledError) as e:
                raise self._unavailable(what, e) from None
            if attempt == 2:
                raise self._unavailable(what, failed) from None
        text = content.decode("utf-8", "replace")
        if response.code != 200:
            raise NetmasterError(response.code, text, what)
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            raise NetmasterError(response.code, f"answer is not JSON: {text[:200]}", what) from None

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
        answer = await self._request("POST", "/plugin/createEndpoint",
                                     f"create endpoint {endpoint_id[:12]}", body, idempotent=True)
        config = answer.get("EndpointConfig") if isinstance(answer, dict) else None
        if not isinstance(config, dict):
            raise NetmasterError(200, f"createEndpoint answer has no EndpointConfig: {answer!r}",
                                 "create endpoint")
        return config

    async def delete_endpoint(self, tenant: str, network: str, group: str, endpoint_id: str,
                              ip: str = "") -> Any:
        """Release the endpoint's allocations."""
        body = {"TenantName": tenant, "NetworkName": network, "ServiceName": group,
                "EndpointID": endpoint_id, "IPv4Address": ip or ""}
        return await self._request("POST", "/plugin/deleteEndpoint",
                                   f"delete endpoint {endpoint_id[:12]}", body, idempotent=True)

    async def network(self, tenant: str, network: str) -> Dict[str, Any]:
        """The network's configuration (``Config``: subnet, gateway, encap…)."""
        key = quote(f"{tenant}:{network}", safe=":")
        answer = await self._request("GET", f"/api/v1/inspect/networks/{key}/",
                                     f"inspect network {tenant}:{network}")
        config = answer.get("Config") if isinstance(answer, dict) else None
        if not isinstance(config, dict):
            raise NetmasterError(200, f"inspect answer has no Config: {answer!r}",
                                 f"inspect network {tenant}:{network}")
        return config

    def close(self) -> defer.Deferred:
        return self._pool.closeCachedConnections()
