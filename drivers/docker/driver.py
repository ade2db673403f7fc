"""The semantics of Docker's remote network driver and IPAM driver calls, on Contiv's model.

Order of calls Docker makes for ``docker run --net web.contiv-net [--ip A]``
(observed on Docker 20.10)::

    IpamDriver.RequestAddress {PoolID, Address: A or ""}     -> we reserve at the netmaster
    NetworkDriver.CreateEndpoint {Interface.Address}         -> netmaster endpoint + veth + port
    NetworkDriver.Join {SandboxKey}                          -> name of the veth end to move
    NetworkDriver.ProgramExternalConnectivity, EndpointOperInfo
    ... container runs ...
    RevokeExternalConnectivity, Leave, DeleteEndpoint         -> port, veth, endpoint released
    IpamDriver.ReleaseAddress                                 -> only if never bound (see state)

Networks: ``docker network create -d netplugin --ipam-driver netplugin
--subnet S [--gateway G] -o/--ipam-opt tenant=T network=N [group=E] NAME``
(our reconciler does this for every Contiv network and group) gives
``RequestPool`` (pool id = placement + subnet), a gateway ``RequestAddress``
and ``CreateNetwork``.  The driver's scope is ``local`` (every host's
netplugin creates its own engine's networks; Docker 20.10 has no cluster store
for ``global``) with ``ConnectivityScope`` ``global``: the network itself spans
hosts.  IPv6 is not offered to Docker (the netmaster's v6 addresses are
allocated with the endpoint, after Docker's IPAM would have to answer).

Swarm mode (``scope="global"``: the same driver behind the managed plugin
``netplugin:swarm``, see :mod:`drivers.docker.v2plugin`; Docker refuses legacy
plugins for swarm networks).  Observed on Docker 20.10 for ``docker network
create -d netplugin:swarm --ipam-driver netplugin:swarm --opt contiv-tag=T
--ipam-opt contiv-tag=T NAME`` and a service on it::

    manager:  RequestPool {AddressSpace: global, Options: {contiv-tag}}
              RequestAddress (gateway), AllocateNetwork {Options: {contiv-tag}}
              RequestAddress {Address: ""} per task (and one per service VIP)
    worker:   RequestPool {AddressSpace: local, Pool: subnet}, RequestAddress (gateway)
              CreateNetwork {generic: the Options AllocateNetwork returned}
              RequestAddress {Address: the manager's}, CreateEndpoint, Join
    removal:  worker DeleteEndpoint, ReleaseAddress; manager ReleaseAddress

So the manager is the allocator: its pool (role ``manager``) reserves at the
netmaster and releases on its ReleaseAddress (the netmaster ignores a release
of an address an endpoint still holds); a worker's pool (role ``worker``)
echoes the address it is given and never releases (the endpoint's deletion
frees it, the manager's release is the one that counts).  Nothing is kept as
"pending" for swarm pools: the binding happens on another host.
AllocateNetwork answers the resolved placement as the driver options, which is
what the workers' CreateNetwork receives (the user's ``--opt`` are not passed on).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from twisted.logger import Logger

from contiv_sdn.agent.netmaster import NetmasterError, NetmasterUnavailable

from drivers.docker.endpoints import CreateFailed, container_ifname
from drivers.docker.names import (SWARM_MANAGER, SWARM_WORKER, Placement, PoolRef,
                                  parse_docker_name, placement_from_labels,
                                  placement_from_options, subnet_of)
from drivers.docker.netmaster import TagNotFound
from drivers.docker.protocol import DriverError
from drivers.docker.state import DriverState

log = Logger()

GATEWAY_REQUEST = "com.docker.network.gateway"
GENERIC = "com.docker.network.generic"
LOCAL_SPACE = "contiv-local"
GLOBAL_SPACE = "contiv-global"
#: The option naming a Contiv network's or group's tag on a swarm network (spec §3.10).
CONTIV_TAG = "contiv-tag"
#: Set by swarm on the IPAM options of every swarm-scoped network.
SWARM_SERIAL = "com.docker.network.ipam.serial"
#: Tenant of the Contiv networks made for tagless swarm networks.
SWARM_TENANT = "default"


def swarm_network_name(subnet: str) -> str:
    """The Contiv network made for a swarm network given only a subnet: ``swarm-10-1-0-0-24``.

    Derived from the subnet alone, so the manager (which creates it) and every
    worker (which only sees the subnet) name the same network.
    """
    return "swarm-" + subnet.replace(".", "-").replace("/", "-").replace(":", "-")


def _quote(text: str, limit: int = 64) -> str:
    """A caller's string in an error message: JSON-quoted and cut short."""
    return json.dumps(text[:limit]) + ("..." if len(text) > limit else "")


def _nm(e: Exception) -> DriverError:
    """A netmaster failure as the driver's error, keeping the netmaster's own words."""
    if isinstance(e, NetmasterUnavailable):
        return DriverError(f"{e}; is the netmaster running?", 503)
    if isinstance(e, NetmasterError):
        return DriverError(e.text or str(e), 500)
    return DriverError(str(e))


class DockerDriver:
    def __init__(self, endpoints: Any, netmaster: Any, state: DriverState,
                 docker: Any = None, host: str = "", scope: str = "local"):
        #: "local": the legacy plugin (networks made per host by the reconciler);
        #: "global": the swarm plugin (swarm-scoped networks, manager-side IPAM).
        self.scope = scope
        self.endpoints = endpoints
        self.netmaster = netmaster
        self.state = state
        self.docker = docker
        self.host = host
        #: swarm manager: (pool placement key, address) -> how many of its RequestAddress
        #: answers are not yet released (see :meth:`release_address`)
        self._swarm_held: Dict[Tuple[str, str], int] = {}
        self._calls: Dict[str, Callable[[Dict[str, Any]], Awaitable[Dict[str, Any]]]] = {
            "Plugin.Activate": self.activate,
            "Plugin.Deactivate": self.nothing,
            "NetworkDriver.GetCapabilities": self.capabilities,
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.AllocateNetwork": self.allocate_network,
            "NetworkDriver.FreeNetwork": self.free_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_oper_info,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.nothing,
            "NetworkDriver.DiscoverNew": self.nothing,
            "NetworkDriver.DiscoverDelete": self.nothing,
            "NetworkDriver.ProgramExternalConnectivity": self.nothing,
            "NetworkDriver.RevokeExternalConnectivity": self.nothing,
            "IpamDriver.GetCapabilities": self.ipam_capabilities,
            "IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.nothing,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    async def handle(self, call: str, body: Dict[str, Any]) -> Dict[str, Any]:
        # the body is decoded and typed (protocol.parse); its Options may still be deep,
        # so only the call is logged, never the body's repr
        log.debug("plugin call {call}", call=call)
        return await self._calls[call](body)

    # -- trivial calls -----------------------------------------------------------------
    async def nothing(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    async def activate(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    async def capabilities(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return {"Scope": self.scope, "ConnectivityScope": "global"}

    async def ipam_capabilities(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    async def address_spaces(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return {"LocalDefaultAddressSpace": LOCAL_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_SPACE}

    async def allocate_network(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Swarm manager: a swarm network is created.  Contiv already holds the network's
        state; what matters is the answer: its Options become the driver options every
        worker's CreateNetwork gets, so they carry the resolved placement."""
        if self.scope != "global":
            # Docker calls it only for global-scope drivers; the legacy plugin just echoes
            return {"Options": body["Options"]}
        options = {k: v for k, v in body["Options"].items() if isinstance(v, str)}
        p = await self.swarm_placement(options, body["IPv4Data"])
        if p is None:
            raise DriverError("a netplugin swarm network needs --opt contiv-tag=TAG (the "
                              "cfgdTag of a Contiv network or group) or a --subnet", 400)
        await self._contiv_network(p)
        await self._record_docknet(p, body["NetworkID"])
        options.update({"tenant": p.tenant, "network": p.network})
        if p.group:
            options["group"] = p.group
        log.info("swarm network {id} = {place}", id=body["NetworkID"][:12], place=p.docker_name)
        return {"Options": options}

    async def _record_docknet(self, p: Placement, network_id: str) -> None:
        """The netmaster's ``oper/docknet`` mapping (Contiv's netplugin wrote it itself).

        A refusal (the object already maps to another docker network, or was just
        deleted) fails the allocation: Docker then refuses the network.  A netmaster
        without the route (404, older) or unreachable only loses the mapping's
        protection: logged, the network still works."""
        try:
            await self.netmaster.create_docknet(p, network_id)
        except NetmasterError as e:
            if e.status != 404:
                raise DriverError(f"swarm network {network_id[:12]} -> {p.docker_name}: "
                                  f"{e.text or e}", 400) from None
            log.warn("netmaster does not record docker networks (no /plugin/createDocknet): "
                     "{place} can be deleted while swarm network {id} uses it",
                     place=p.docker_name, id=network_id[:12])
        except NetmasterUnavailable as e:
            log.warn("swarm network {id} -> {place} not recorded at the netmaster: {err}",
                     id=network_id[:12], place=p.docker_name, err=e)

    async def free_network(self, body: Dict[str, Any]) -> Dict[str, Any]:
        if self.scope == "global":
            try:
                await self.netmaster.delete_docknet(body["NetworkID"])
            except NetmasterError as e:
                if e.status != 404:
                    raise _nm(e) from None
            except NetmasterUnavailable as e:
                # swarm only logs a failed deallocation and does not repeat it
                log.warn("swarm network {id} removed but its mapping is kept at the "
                         "netmaster ({err}); once it is back: POST /plugin/deleteDocknet "
                         '{{"DocknetUUID": "{id}"}}', id=body["NetworkID"], err=e)
        log.info("swarm network {id} removed", id=body["NetworkID"][:12])
        return {}

    async def swarm_placement(self, options: Dict[str, Any], v4: Any = ()) -> Optional[Placement]:
        """Placement of a swarm network: its contiv-tag, explicit placement options, or
        (spec §3.10: "a subnet in the docker command creates a contiv network") the
        Contiv network named after its subnet, created here if it does not exist."""
        tag = options.get(CONTIV_TAG)
        if isinstance(tag, str) and tag:
            try:
                return await self.netmaster.resolve_tag(tag)
            except TagNotFound:
                raise DriverError(f"no contiv network or endpoint group has the tag "
                                  f"{_quote(tag)}; create one with netctl net create "
                                  f"--nw-tag {tag} (or group create --epg-tag {tag})", 400) \
                    from None
            except (NetmasterError, NetmasterUnavailable) as e:
                raise _nm(e) from None
        p = placement_from_options(options)
        if p is not None:
            return p
        pool = ""
        gateway = ""
        for entry in v4 or ():
            pool = str(entry.get("Pool") or "")
            gateway = str(entry.get("Gateway") or "").split("/")[0]
        if not pool:
            return None
        try:
            subnet = str(ipaddress.ip_network(pool, strict=False))
        except ValueError:
            raise DriverError(f"pool {_quote(pool)} is not a subnet", 400) from None
        p = Placement(SWARM_TENANT, swarm_network_name(subnet), "")
        try:
            await self.netmaster.ensure_network(p, subnet, gateway)
        except (NetmasterError, NetmasterUnavailable) as e:
            raise _nm(e) from None
        return p

    # -- networks -------------------------------------------------------------------------
    async def _contiv_network(self, p: Placement) -> Dict[str, Any]:
        try:
            net = await self.netmaster.network(p.tenant, p.network)
        except NetmasterError as e:
            raise DriverError(f"contiv network {p.network} (tenant {p.tenant}) does not exist: "
                              f"{e.text or e}; create it with netctl net create") from None
        except NetmasterUnavailable as e:
            raise _nm(e) from None
        if p.group:
            try:
                await self.netmaster.group(p.tenant, p.group)
            except NetmasterError as e:
                raise DriverError(f"contiv endpoint group {p.group} (tenant {p.tenant}) does not "
                                  f"exist: {e.text or e}; create it with netctl group create") \
                    from None
            except NetmasterUnavailable as e:
                raise _nm(e) from None
        return net

    async def create_network(self, body: Dict[str, Any]) -> Dict[str, Any]:
        options = body["Options"]
        generic = options.get(GENERIC) if isinstance(options.get(GENERIC), dict) else {}
        p = placement_from_options(generic)
        v4 = body["IPv4Data"]
        if body["IPv6Data"]:
            raise DriverError("netplugin does not give IPv6 addresses through Docker; create the "
                              "docker network without --ipv6", 400)
        if len(v4) > 1:
            raise DriverError("a netplugin network has exactly one IPv4 subnet", 400)
        pool = str(v4[0].get("Pool") or "") if v4 else ""
        gateway = str(v4[0].get("Gateway") or "") if v4 else ""
        if p is None:
            # created by hand without -o network=...: learn the placement later from Docker
            log.info("docker network {id} has no contiv placement options; it will be looked "
                     "up when used", id=body["NetworkID"][:12])
            return {}
        await self._contiv_network(p)
        self.state.set_network(body["NetworkID"], p, pool=pool or None,
                               gateway=gateway.split("/")[0] or None)
        log.info("docker network {id} = {place}", id=body["NetworkID"][:12], place=p.docker_name)
        return {}

    async def delete_network(self, body: Dict[str, Any]) -> Dict[str, Any]:
        self.state.drop_network(body["NetworkID"])
        return {}

    async def placement(self, network_id: str) -> Placement:
        """The placement of a Docker network: our record, else what Docker says about it."""
        p = self.state.network(network_id)
        if p is not None:
            return p
        if self.docker is not None:
            try:
                net = await self.docker.inspect_network(network_id)
            except Exception as e:
                raise DriverError(f"docker network {network_id[:12]} is unknown to netplugin and "
                                  f"dockerd could not be asked about it: {e}") from None
            if net:
                p = (placement_from_labels(net.get("Labels"))
                     or placement_from_options((net.get("IPAM") or {}).get("Options"))
                     or placement_from_options(net.get("Options")))
                if p is None and net.get("Name"):
                    p = parse_docker_name(str(net["Name"]))
                if p is not None:
                    cfg = ((net.get("IPAM") or {}).get("Config") or [{}])[0] or {}
                    self.state.set_network(network_id, p, pool=cfg.get("Subnet") or None,
                                           gateway=cfg.get("Gateway") or None)
                    return p
        raise DriverError(f"docker network {network_id[:12]} is not a contiv network known to "
                          "netplugin (create docker networks with netctl, or with -o network=NAME "
                          "[-o tenant=T -o group=G])")

    # -- endpoints ------------------------------------------------------------------------
    async def create_endpoint(self, body: Dict[str, Any]) -> Dict[str, Any]:
        p = await self.placement(body["NetworkID"])
        iface = body["Interface"] or {}
        if iface.get("AddressIPv6"):
            raise DriverError("netplugin does not give IPv6 addresses through Docker", 400)
        address = str(iface.get("Address") or "")
        ip = address.split("/")[0]
        mac = str(iface.get("MacAddress") or "")
        ep_id = body["EndpointID"]
        if ip:
            # the gateway is reserved (spec §3.5): Contiv's IPAM never hands it out, and an
            # endpoint holding it would answer for every container's default route
            try:
                gateway = str((await self.endpoints.network(p)).get("gateway") or "")
            except (NetmasterError, NetmasterUnavailable) as e:
                raise _nm(e) from None
            if ip == gateway:
                raise DriverError(f"address {ip} is the gateway of network {p.network_key}; "
                                  f"give the endpoint another address (or none: netplugin's "
                                  f"IPAM picks one)", 400)
        try:
            record = await self.endpoints.create(ep_id, p, ip, mac)
        except CreateFailed as e:
            if ip and e.released:
                self.state.drop_pending(p.key, ip)
            raise
        if ip and record.get("ipAddress") != ip:
            # the endpoint existed (a retry answers it as it is) with another address: the
            # new one stays a pending reservation, so Docker's ReleaseAddress still frees it
            raise DriverError(f"endpoint {ep_id[:12]} exists with address "
                              f"{record.get('ipAddress') or '(none)'}, not {ip}; delete it "
                              f"before creating it with another address", 400)
        if ip:
            self.state.drop_pending(p.key, ip)
        answer: Dict[str, Any] = {}
        if not mac:
            answer["MacAddress"] = record["macAddress"]
        if not address:
            answer["Address"] = f"{record['ipAddress']}/{record['prefixLen']}"
        return {"Interface": answer}

    async def endpoint_oper_info(self, body: Dict[str, Any]) -> Dict[str, Any]:
        record = await self.endpoints.get(body["EndpointID"])
        if record is None:
            return {"Value": {}}
        value = {k: record.get(k) for k in ("id", "network", "group", "epgId", "ipAddress",
                                              "macAddress", "intfName", "homingHost", "vtepIP",
                                              "containerName")
                 if record.get(k) not in (None, "")}
        return {"Value": value}

    async def delete_endpoint(self, body: Dict[str, Any]) -> Dict[str, Any]:
        try:
            await self.endpoints.delete(body["EndpointID"])
        except (NetmasterError, NetmasterUnavailable) as e:
            # port and veth are gone; the agent keeps a pending delete and retries the release
            log.warn("endpoint {id}: netmaster release deferred: {err}",
                     id=body["EndpointID"][:12], err=e)
        return {}

    async def join(self, body: Dict[str, Any]) -> Dict[str, Any]:
        record = await self.endpoints.get(body["EndpointID"])
        if record is None:
            raise DriverError(f"endpoint {body['EndpointID'][:12]} does not exist on "
                              f"{self.host or 'this host'} (was CreateEndpoint refused?)")
        answer: Dict[str, Any] = {
            "InterfaceName": {"SrcName": record.get("ifname") or
                              container_ifname(body["EndpointID"]), "DstPrefix": "eth"},
        }
        gateway = str(record.get("gateway") or "")
        if gateway:
            answer["Gateway"] = gateway
        else:
            # no default route in a gateway-less network; Docker must not attach
            # docker_gwbridge either
            answer["DisableGatewayService"] = True
        return answer

    # -- IPAM ------------------------------------------------------------------------------
    async def request_pool(self, body: Dict[str, Any]) -> Dict[str, Any]:
        if body["V6"]:
            raise DriverError("netplugin does not give IPv6 addresses through Docker; create the "
                              "docker network without --ipv6", 400)
        options = body["Options"]
        # swarm marks its networks' IPAM options "serial"; without --ipam-opt the
        # manager's request still comes in the global space
        swarm = self.scope == "global" and (CONTIV_TAG in options or SWARM_SERIAL in options
                                            or body["AddressSpace"] == GLOBAL_SPACE)
        if swarm:
            p = await self.swarm_placement(options, [{"Pool": body["Pool"]}])
        else:
            p = placement_from_options(options)
        if p is None:
            raise DriverError("netplugin IPAM needs the contiv network: --ipam-opt network=NAME "
                              "[--ipam-opt tenant=T --ipam-opt group=G] (networks made by "
                              "netctl get docker networks automatically)", 400)
        net = await self._contiv_network(p)
        contiv_subnet = str(net.get("subnet") or "")
        if not contiv_subnet:
            raise DriverError(f"contiv network {p.network_key} has no IPv4 subnet", 400)
        subnet, _ = subnet_of(contiv_subnet)
        pool = body["Pool"] or subnet
        try:
            asked = ipaddress.ip_network(pool, strict=False)
        except ValueError:
            raise DriverError(f"pool {_quote(pool)} is not a subnet", 400) from None
        if str(asked) != subnet:
            raise DriverError(f"subnet {pool} does not match contiv network {p.network} "
                              f"({contiv_subnet})", 400)
        role = ""
        if swarm:
            role = SWARM_MANAGER if body["AddressSpace"] == GLOBAL_SPACE else SWARM_WORKER
        return {"PoolID": PoolRef(p, subnet, role).encode(), "Pool": subnet, "Data": {}}

    async def request_address(self, body: Dict[str, Any]) -> Dict[str, Any]:
        try:
            ref = PoolRef.decode(body["PoolID"])
        except ValueError as e:
            raise DriverError(str(e), 400) from None
        plen = ipaddress.ip_network(ref.pool, strict=False).prefixlen
        wanted = body["Address"]
        if wanted:
            try:
                ipaddress.IPv4Address(wanted)
            except ValueError:
                raise DriverError(f"{_quote(wanted)} is not an IPv4 address", 400) \
                    from None
        options = body["Options"]
        if options.get("RequestAddressType") == GATEWAY_REQUEST:
            # the netmaster reserved the gateway when the network was created
            if wanted:
                return {"Address": f"{wanted}/{plen}", "Data": {}}
            net = await self._contiv_network(ref.placement)
            gateway = str(net.get("gateway") or "")
            # no gateway: answer the network address, which is never handed out
            addr = gateway or str(ipaddress.ip_network(ref.pool, strict=False).network_address)
            return {"Address": f"{addr}/{plen}", "Data": {}}
        if ref.role == SWARM_WORKER and wanted:
            # the swarm manager reserved it at the netmaster when it placed the task
            return {"Address": f"{wanted}/{plen}", "Data": {}}
        try:
            addr = await self.netmaster.alloc_address(ref.placement, ref.pool, wanted)
        except (NetmasterError, NetmasterUnavailable) as e:
            raise _nm(e) from None
        if ref.role == SWARM_MANAGER:
            held = (ref.placement.key, addr.split("/")[0])
            self._swarm_held[held] = self._swarm_held.get(held, 0) + 1
            log.info("IPAM: {addr} reserved in {net} for swarm", addr=addr,
                     net=ref.placement.network_key)
            return {"Address": addr, "Data": {}}
        self.state.add_pending(ref.placement.key, addr.split("/")[0])
        log.info("IPAM: {addr} reserved in {net}", addr=addr, net=ref.placement.network_key)
        return {"Address": addr, "Data": {}}

    async def release_address(self, body: Dict[str, Any]) -> Dict[str, Any]:
        try:
            ref = PoolRef.decode(body["PoolID"])
        except ValueError as e:
            raise DriverError(str(e), 400) from None
        ip = body["Address"].split("/")[0]
        key = ref.placement.key
        if ref.role == SWARM_WORKER:
            # the manager's reservation: released by the manager's own ReleaseAddress
            return {}
        if ref.role == SWARM_MANAGER:
            # the netmaster keeps an address an endpoint still holds (its deletion frees it).
            # A release that comes after the task's endpoint is gone may be late: if this
            # manager was handed the same address again meanwhile (the endpoint's deletion
            # freed it), the release is the old task's and the address is the new one's.
            held = (key, ip)
            count = self._swarm_held.get(held, 0)
            if count > 1:
                self._swarm_held[held] = count - 1
                log.info("IPAM: {ip} in {net}: late release of an earlier task; the address "
                         "is held again", ip=ip, net=key)
                return {}
            self._swarm_held.pop(held, None)
            try:
                await self.netmaster.release_address(ref.placement, ip)
            except (NetmasterError, NetmasterUnavailable) as e:
                raise _nm(e) from None
            log.info("IPAM: {ip} released in {net} by swarm", ip=ip, net=key)
            return {}
        if not self.state.is_pending(key, ip):
            # bound to an endpoint (released with it) or the gateway: nothing to do
            return {}
        try:
            await self.netmaster.release_address(ref.placement, ip)
        except (NetmasterError, NetmasterUnavailable) as e:
            raise _nm(e) from None
        self.state.drop_pending(key, ip)
        log.info("IPAM: {ip} released in {net}", ip=ip, net=key)
        return {}

    async def release_stale(self, max_age: float) -> int:
        """Release addresses reserved more than ``max_age`` seconds ago and never bound.

        Docker releases an unused reservation itself (``ReleaseAddress`` after a failed
        ``CreateEndpoint``) — unless dockerd died in between; this catches that.
        """
        released = 0
        for key, ip in self.state.stale_pending(max_age):
            p = Placement.from_key(key)
            try:
                await self.netmaster.release_address(p, ip)
            except (NetmasterError, NetmasterUnavailable) as e:
                log.warn("IPAM: stale reservation {ip} in {net} not released yet: {err}",
                         ip=ip, net=p.network_key, err=e)
                continue
            self.state.drop_pending(key, ip)
            released += 1
            log.info("IPAM: {ip} in {net} was reserved but never used; released", ip=ip,
                     net=p.network_key)
        return released
