"""The netmaster calls only the Docker driver makes: address allocation and endpoint updates.

The agent's :class:`~contiv_sdn.agent.netmaster.NetmasterClient` already speaks
``createEndpoint``/``deleteEndpoint``/inspect; Docker's IPAM model adds an
address allocation *before* the endpoint exists (``RequestAddress`` precedes
``CreateEndpoint``), its release, a group inspect and the ``start`` update that
tells the netmaster a container's name once Docker has started it.  Those are
the routes of spec §1.4, with Contiv's request shapes.  Replies are decoded into
their declared shapes (:mod:`contiv_sdn.model.plugin_api`) before the driver acts on
them; one that does not fit is :class:`NetmasterBadReply`.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Dict, Optional
from urllib.parse import quote

from twisted.logger import Logger

from contiv_sdn.agent.netmaster import (GROUP_INSPECT, NetmasterBadReply, NetmasterClient,
                                       NetmasterError)
from contiv_sdn.model.plugin_api import (ALLOC_ADDRESS_REPLY, DOCKNET_STATE,
                                        UPDATE_ENDPOINT_REPLY)
from contiv_sdn.model.shapes import ListOf, STR, Struct, parse

from drivers.docker.names import Placement

log = Logger()

class ListReply:
    """A reply that is a JSON array (``[]T``): :meth:`load` like ``Struct.load``, same checks."""

    def __init__(self, elem: Struct):
        self.type = ListOf(elem)

    def load(self, body: Any) -> list:
        return self.type.decode(parse(body), [], self.type.go, [])


#: ``GET /api/v1/networks/`` and ``GET /api/v1/endpointGroups/``: what tag lookup reads.
NETWORK_LIST = ListReply(Struct("Network", [("tenantName", STR), ("networkName", STR),
                                            ("cfgdTag", STR)]))
GROUP_LIST = ListReply(Struct("EndpointGroup", [("tenantName", STR), ("groupName", STR),
                                                ("networkName", STR), ("cfgdTag", STR)]))


class TagNotFound(LookupError):
    """No Contiv network or group carries the ``contiv-tag`` a docker network names."""


def network_id(p: Placement) -> str:
    """Contiv's ``NetworkID`` of the plugin routes: ``net.tenant`` or ``net:group.tenant``."""
    return f"{p.network}:{p.group}.{p.tenant}" if p.group else f"{p.network}.{p.tenant}"


class PluginNetmaster(NetmasterClient):
    async def alloc_address(self, p: Placement, pool: str, preferred: str = "") -> str:
        """Reserve an address (``preferred`` or the lowest free); fires with ``a.b.c.d/len``."""
        try:
            answer = await self.request("POST", "/plugin/allocAddress",
                                         f"allocate an address in {p.network_key}", {
                                             "NetworkID": network_id(p), "AddressPool": pool,
                                             "PreferredIPv4Address": preferred or ""},
                                         reply=ALLOC_ADDRESS_REPLY)
            addr = answer["IPv4Address"]
            try:
                ok = "/" in addr and ipaddress.IPv4Interface(addr) is not None
            except ValueError:
                ok = False
            if not ok:
                raise NetmasterBadReply("allocAddress", "IPv4Address is "
                                        f"{json.dumps(addr[:64])}, not an address/prefix length")
        except NetmasterBadReply:
            if preferred:
                # what it reserved is the preferred address, if anything: give it back
                await self._release_quietly(p, preferred)
            raise
        return addr

    async def _release_quietly(self, p: Placement, address: str) -> None:
        try:
            await self.release_address(p, address)
        except Exception as e:
            log.warn("address {addr} in {net} could not be released after a malformed "
                     "allocAddress reply: {err}", addr=address, net=p.network_key, err=e)

    async def release_address(self, p: Placement, address: str) -> None:
        await self.request("POST", "/plugin/releaseAddress",
                            f"release {address} in {p.network_key}",
                            {"NetworkID": network_id(p), "IPv4Address": address})

    async def update_endpoint(self, p: Placement, endpoint_id: str, ip: str, container_id: str,
                              name: str, labels: Optional[Dict[str, str]] = None) -> None:
        """Tell the netmaster the container behind an endpoint (its name reaches DNS)."""
        await self.request("POST", "/plugin/updateEndpoint",
                            f"update endpoint {endpoint_id[:12]}", {
                                "IPAddress": ip, "ContainerID": container_id,
                                "Labels": dict(labels or {}), "Tenant": p.tenant,
                                "Network": p.network, "Event": "start",
                                "EndpointID": endpoint_id, "EPCommonName": name},
                            idempotent=True, reply=UPDATE_ENDPOINT_REPLY)

    async def create_docknet(self, p: Placement, network_id: str) -> None:
        """Tell the netmaster that swarm network ``network_id`` maps to ``p`` (its
        ``oper/docknet``: with ``--mode swarm-mode`` the object cannot be deleted while
        the docker network exists; ``netctl net/group inspect`` show it)."""
        await self.request("POST", "/plugin/createDocknet",
                           f"record docker network {network_id[:12]} for {p.docker_name}", {
                               "TenantName": p.tenant, "NetworkName": p.network,
                               "ServiceName": p.group, "DocknetUUID": network_id},
                           idempotent=True, reply=DOCKNET_STATE)

    async def delete_docknet(self, network_id: str) -> None:
        """Forget swarm network ``network_id``'s mapping (none is fine)."""
        await self.request("POST", "/plugin/deleteDocknet",
                           f"forget docker network {network_id[:12]}",
                           {"DocknetUUID": network_id}, idempotent=True)

    async def group(self, tenant: str, group: str) -> Dict[str, Any]:
        """The endpoint group's configuration (fails with the netmaster's text if unknown)."""
        key = quote(f"{tenant}:{group}", safe=":")
        answer = await self.request("GET", f"/api/v1/inspect/endpointGroups/{key}/",
                                     f"inspect endpoint group {tenant}:{group}",
                                     reply=GROUP_INSPECT)
        return answer["Config"]

    async def resolve_tag(self, tag: str) -> Placement:
        """The network or endpoint group whose tag is ``tag`` (swarm mode, spec §3.10).

        A tag is a configured ``cfgdTag`` or the default ``<name>.<tenant>``
        (``networkTag``/``groupTag``).  Groups are matched first: a group's tag
        says more (network *and* policy) than the network's.
        """
        groups = await self.request("GET", "/api/v1/endpointGroups/", "list endpoint groups",
                                    reply=GROUP_LIST)
        for g in groups:
            if tag in (g["cfgdTag"], f"{g['groupName']}.{g['tenantName']}"):
                return Placement(g["tenantName"] or "default", g["networkName"],
                                 g["groupName"])
        nets = await self.request("GET", "/api/v1/networks/", "list networks",
                                  reply=NETWORK_LIST)
        for n in nets:
            if tag in (n["cfgdTag"], f"{n['networkName']}.{n['tenantName']}"):
                return Placement(n["tenantName"] or "default", n["networkName"], "")
        raise TagNotFound(tag)

    async def ensure_network(self, p: Placement, subnet: str, gateway: str = "") -> None:
        """Create the Contiv network ``p`` with ``subnet`` unless it exists (swarm mode: a
        docker network created with a subnet and no contiv-tag, spec §3.10)."""
        try:
            await self.network(p.tenant, p.network)
            return
        except NetmasterError as e:
            # Contiv answers an unknown object 404 on the model routes, 500 "... not found"
            # on inspect
            if e.status != 404 and "not found" not in (e.text or "").lower():
                raise
        body: Dict[str, Any] = {"tenantName": p.tenant, "networkName": p.network,
                                "encap": "vxlan", "subnet": subnet, "cfgdTag": p.network}
        if gateway:
            body["gateway"] = gateway
        key = quote(f"{p.tenant}:{p.network}", safe=":")
        await self.request("POST", f"/api/v1/networks/{key}/",
                           f"create network {p.network_key} for a swarm network", body)
        log.info("contiv network {net} created for a swarm network on {subnet}",
                 net=p.network_key, subnet=subnet)
