"""Endpoint lifecycle on one host: allocate (netmaster), plumb (veth), attach (OVS port).

Create is ``POST /plugin/createEndpoint`` (with the network's inspect — prefix
length, gateway, encapsulation — read meanwhile) → veth pair, its container end
created straight in the container namespace → the container end's address and
route, while the host end becomes an OVS port with ``external_ids`` naming the
endpoint.  A failure at any step undoes the earlier ones (port, veth,
allocation), so a failed create leaves nothing behind.  This is the one create
path: the local API and CNI use it as it is, the Docker driver
(``drivers/docker``) with ``handoff=True`` — the container end is left in the
host's namespace for dockerd to move into the sandbox — and its cached network
shapes (see :meth:`EndpointManager.create`).

The local record of an endpoint IS its OVS port's ``external_ids`` (it survives
an agent restart, and OVS deletes it with the port).  A delete first writes a
small tombstone file in the state directory, then removes the veth while it
removes the port and then releases the allocation at the netmaster, and drops
the tombstone once all of that succeeded: if the
netmaster is down, a retried delete (or the periodic reconcile) still knows
which tenant/network to release, so addresses do not leak.

An endpoint belongs to the host its record names (``homingHost``): this agent
creates, updates and deletes only its own host's (issue 13, item 5).  A
create whose id the netmaster already holds for another host, or a
delete/update of a local record naming another host, is refused
(:class:`ForeignEndpoint`, 403) without touching that host's allocation — so
neither CNI nor the Docker driver, both on this path, can be used to release
or take over another host's endpoint.

:meth:`EndpointManager.reconcile` (on start and periodically) reaps endpoints
whose container namespace is gone (path missing, or now a different namespace)
or whose host-side veth vanished, and finishes pending deletes.  Live endpoints
are not touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from contiv_sdn.agent.locks import KeyedLocks

from contiv_sdn.agent.netmaster import NetmasterClient, NetmasterError
from contiv_sdn.agent.ovsdb import Ovsdb, PortInfo
from contiv_sdn.agent.plumbing import NetnsNotFound, Plumber, VethRequest, netns_id
from contiv_sdn.model.addressing import endpoint_mac
from contiv_sdn.ops.metrics import endpoint_op
from contiv_sdn.pipeline.mtu import container_mtu

log = Logger()

#: external_ids keys on the endpoint's OVS port.
K_ID = "endpoint-id"
K_NET = "contiv-network"
K_GROUP = "contiv-group"
K_NETNS = "contiv-netns"
K_NETNS_ID = "contiv-netns-id"
K_IFNAME = "contiv-ifname"
K_RECORD = "contiv-endpoint"

_HEX = re.compile(r"[0-9a-f]{12,}")
_IFNAME = re.compile(r"[^/\s]{1,15}")


def port_name(endpoint_id: str) -> str:
    """The host-side veth (= OVS port) name: ``cv`` + 12 hex characters.

    Docker-style hex ids keep their first 12 characters, so the port reads like
    the short id; any other id is hashed.
    """
    low = endpoint_id.lower()
    if _HEX.fullmatch(low):
        return "cv" + low[:12]
    return "cv" + hashlib.sha256(endpoint_id.encode()).hexdigest()[:12]


def prefix_len(subnet: str) -> int:
    """``10.1.1.0/24`` or the range form ``10.1.1.10-10.1.1.20/24`` → 24."""
    try:
        return int(subnet.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"network subnet {subnet!r} has no prefix length") from None


#: How the create path reads a network's shape: ``(tenant, network)`` → its inspect ``Config``.
NetworkLookup = Callable[[str, str], Awaitable[Dict[str, Any]]]


@dataclass(frozen=True)
class _Shape:
    """What an endpoint takes from its network."""

    prefix_len: int
    gateway: str
    encap: str
    mtu: int


@dataclass
class _Progress:
    """What a create has made so far, i.e. what its undo must remove."""

    veth: bool = False
    port: bool = False


def _mac_refusal(asked: str, mac: str, ip: str) -> str:
    return (f"MAC address {asked[:64]} cannot be used: netplugin derives MACs from addresses "
            f"({mac} for {ip}); drop --mac-address")


class EndpointError(Exception):
    """A request the agent cannot carry out; ``status`` is the HTTP status to answer."""

    status = 500


class BadRequest(EndpointError):
    status = 400


class Conflict(EndpointError):
    status = 409


class NotReady(EndpointError):
    status = 503


class ForeignEndpoint(EndpointError):
    """The endpoint is another host's: this agent manages only its own host's."""

    status = 403

    def __init__(self, endpoint_id: str, owner: str, host: str, verb: str):
        super().__init__(f"endpoint {endpoint_id[:64]} belongs to host {owner[:64] or '?'}, "
                         f"not this host ({host}): this agent may not {verb} it; use an id "
                         f"of this host's container, or remove it on host {owner[:64] or '?'} "
                         f"(or as a netmaster admin)")


@dataclass(frozen=True)
class EndpointRequest:
    id: str
    netns: str
    network: str
    ifname: str = "eth0"
    tenant: str = "default"
    group: str = ""
    ip: str = ""
    name: str = ""
    container_id: str = ""
    labels: Dict[str, str] = field(default_factory=dict)
    #: A MAC asked for (Docker's ``--mac-address``): refused unless it is the derived one.
    mac: str = ""
    #: Who made the endpoint (``docker``), recorded as ``owner`` so reconcilers tell theirs.
    owner: str = ""

    @classmethod
    def from_json(cls, body: Any) -> "EndpointRequest":
        """Validate the local API's JSON body; raises :class:`BadRequest` with what to fix."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")

        def text(key: str, default: Optional[str] = None) -> str:
            value = body.get(key, default)
            if value is None:
                raise BadRequest(f"{key!r} is required")
            if not isinstance(value, str):
                raise BadRequest(f"{key!r} must be a string")
            return value

        ep_id = text("id")
        if not ep_id or len(ep_id) > 255:
            raise BadRequest("'id' must be 1-255 characters")
        netns = text("netns")
        if not netns.startswith("/"):
            raise BadRequest("'netns' must be a path (/var/run/netns/NAME or /proc/PID/ns/net)")
        network = text("network")
        if not network:
            raise BadRequest("'network' is required")
        ifname = text("ifname", "eth0") or "eth0"
        if not _IFNAME.fullmatch(ifname):
            raise BadRequest(f"'ifname' {ifname!r} is not a valid interface name "
                             "(1-15 characters, no '/' or spaces)")
        ip = text("ip", "")
        if ip:
            import ipaddress
            try:
                ipaddress.IPv4Address(ip.split("/")[0])
            except ValueError:
                raise BadRequest(f"'ip' {ip!r} is not an IPv4 address") from None
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
            raise BadRequest("'labels' must be an object of strings")
        return cls(id=ep_id, netns=netns, network=network, ifname=ifname,
                   tenant=text("tenant", "default") or "default", group=text("group", ""),
                   ip=ip.split("/")[0], name=text("name", ""),
                   container_id=text("containerID", "") or ep_id, labels=dict(labels))


class EndpointManager:
    def __init__(self, *, host: str, vtep_ip: str, bridge: str, underlay_mtu: int,
                 ovsdb: Ovsdb, plumber: Plumber, netmaster: NetmasterClient, state_dir: str):
        self.host = host
        self.vtep_ip = vtep_ip
        self.bridge = bridge
        self.underlay_mtu = underlay_mtu
        self.ovsdb = ovsdb
        self.plumber = plumber
        self.netmaster = netmaster
        self.state_dir = state_dir
        #: Set by the service once br-int is in place; endpoint calls wait for nothing else.
        self.ready = False
        self._locks = KeyedLocks()

    @property
    def host_netns(self) -> str:
        """The path of the namespace that holds the host ends (where a container runtime
        such as dockerd runs, so where a handoff leaves the container end)."""
        return self.plumber.host_netns or "/proc/self/ns/net"

    # -- helpers ----------------------------------------------------------------
    def _require_ready(self) -> None:
        if not self.ready:
            raise NotReady(f"the agent is still setting up bridge {self.bridge} "
                           "(OVSDB not reachable yet?); retry in a moment")

    async def _locked(self, endpoint_id: str, fn: Any) -> Any:
        return await self._locks.run(endpoint_id, fn)

    @property
    def _tomb_dir(self) -> str:
        return os.path.join(self.state_dir, "pending-deletes")

    def _tomb_path(self, endpoint_id: str) -> str:
        return os.path.join(self._tomb_dir,
                            hashlib.sha256(endpoint_id.encode()).hexdigest()[:32] + ".json")

    def _write_tomb(self, tomb: Dict[str, Any]) -> None:
        os.makedirs(self._tomb_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tomb_dir, prefix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(tomb, f)
        os.replace(tmp, self._tomb_path(tomb["id"]))

    def _read_tomb(self, endpoint_id: str) -> Optional[Dict[str, Any]]:
        try:
            with open(self._tomb_path(endpoint_id)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _drop_tomb(self, endpoint_id: str) -> None:
        try:
            os.unlink(self._tomb_path(endpoint_id))
        except FileNotFoundError:
            pass

    def pending_deletes(self) -> List[Dict[str, Any]]:
        out = []
        try:
            names = sorted(os.listdir(self._tomb_dir))
        except FileNotFoundError:
            return []
        for name in names:
            if name.endswith(".json"):
                try:
                    with open(os.path.join(self._tomb_dir, name)) as f:
                        out.append(json.load(f))
                except (OSError, ValueError):
                    log.warn("ignoring unreadable pending delete {name}", name=name)
        return out

    @staticmethod
    def _record_of(port: PortInfo) -> Optional[Dict[str, Any]]:
        ids = port.external_ids
        if K_ID not in ids:
            return None
        try:
            record = json.loads(ids.get(K_RECORD, "{}"))
        except ValueError:
            record = {}
        record.setdefault("id", ids[K_ID])
        record.setdefault("network", ids.get(K_NET, ""))
        record.setdefault("group", ids.get(K_GROUP, ""))
        record.setdefault("netns", ids.get(K_NETNS, ""))
        record.setdefault("ifname", ids.get(K_IFNAME, ""))
        record.setdefault("intfName", port.name)
        record["ofport"] = port.ofport
        return record

    async def _ports(self) -> List[PortInfo]:
        return [p for p in await self.ovsdb.list_ports(self.bridge) if K_ID in p.external_ids]

    async def _find(self, endpoint_id: str) -> Optional[PortInfo]:
        for port in await self._ports():
            if port.external_ids.get(K_ID) == endpoint_id:
                return port
        return None

    # -- queries ------------------------------------------------------------------
    async def list(self) -> List[Dict[str, Any]]:
        self._require_ready()
        return [r for r in (self._record_of(p) for p in await self._ports()) if r]

    async def get(self, endpoint_id: str) -> Optional[Dict[str, Any]]:
        self._require_ready()
        port = await self._find(endpoint_id)
        return self._record_of(port) if port else None

    # -- create ---------------------------------------------------------------------
    async def create(self, req: EndpointRequest, *, handoff: bool = False,
                     network: Optional[NetworkLookup] = None,
                     on_rollback: Optional[Callable[[bool], None]] = None) -> Dict[str, Any]:
        """Allocate (netmaster), plumb (veth) and attach (OVS port) one endpoint; its record.

        The one create path of the agent's API, CNI and the Docker driver.  What differs
        for Docker is a parameter, not a second copy:

        ``handoff``: the container end is left, with MAC, MTU and TX offload set but no
        address or route, in ``req.netns`` (the namespace where the container runtime
        runs) under ``req.ifname``, for the runtime to move into its sandbox (Docker's
        remote driver reports only its name).  A leftover link of that name (a Leave moved
        it back and no delete followed) is removed first, in the same thread hop; and the
        OVS port is not waited for (the runtime needs only the veth now, and the
        controller programs the port whenever ovs-vswitchd applies it).
        ``network``: how the network's shape (prefix, gateway, encapsulation) is read;
        the netmaster's inspect by default, the Docker driver's cache for Docker.
        ``on_rollback``: told, when a create whose allocation the netmaster had made is
        undone, whether the netmaster released it (the Docker driver's IPAM reservation
        of that address is spent or not accordingly).
        """
        self._require_ready()
        return await endpoint_op("attach", self._locked(
            req.id, lambda: self._create(req, handoff, network, on_rollback)))

    async def _create(self, req: EndpointRequest, handoff: bool,
                      network: Optional[NetworkLookup],
                      on_rollback: Optional[Callable[[bool], None]]) -> Dict[str, Any]:
        """Allocation ∥ network shape; the veth as soon as its MAC is known; then the port.

        The MAC is derived from the address (:func:`endpoint_mac`), so when the address is
        given the veth is made while the netmaster still allocates (its MTU needs only the
        network's shape, usually quicker): all of it for a handoff (nothing in it waits for
        the allocation), else its host end, the container end's address and route
        following the allocation's answer, meanwhile the host end becomes an OVS port
        (ovs-vswitchd applying the port and the container's address are independent).
        """
        ns_id = netns_id(req.netns)
        if ns_id is None:
            shown = req.netns if len(req.netns) <= 200 else req.netns[:200] + "..."
            raise BadRequest(f"network namespace {shown} does not exist "
                             "(is the container running?)")
        predicted = self._mac_for(req, req.ip) if req.ip else None
        existing = await self._find(req.id)
        if existing is not None:
            if existing.external_ids.get(K_NETNS_ID) == ns_id:
                log.info("endpoint {id} exists already; returning it", id=req.id[:12])
                return self._record_of(existing)  # type: ignore[return-value]
            raise Conflict(f"endpoint {req.id} exists in another namespace "
                           f"({existing.external_ids.get(K_NETNS)}); delete it first")
        if self._read_tomb(req.id) is not None:
            raise Conflict(f"endpoint {req.id} is still being deleted "
                           "(the netmaster has not confirmed the release); retry later")
        name = port_name(req.id)
        taken = await self.ovsdb.find_port(name)
        if taken is not None:
            raise Conflict(f"OVS port {name} (for endpoint {req.id}) is already used by "
                           f"endpoint {taken[1].external_ids.get(K_ID, '?')}")
        lookup = network or self.netmaster.network
        net_d = defer.ensureDeferred(lookup(req.tenant, req.network))
        allocating = defer.ensureDeferred(self.netmaster.create_endpoint(
            req.tenant, req.network, req.group, req.id, req.name, req.container_id, self.host,
            req.ip, name, req.labels, vtep_ip=self.vtep_ip))
        made = _Progress()

        async def before_allocation() -> Tuple[_Shape, Any]:
            shape = self._shape_of(req, await net_d)
            if predicted is None:
                return shape, None
            return shape, await self._make_veth(req, name, predicted, shape, handoff, made)

        early = defer.ensureDeferred(before_allocation())
        (alloc_ok, config), (early_ok, early_value) = await defer.DeferredList(
            [allocating, early], consumeErrors=True)
        if not alloc_ok:
            if made.veth:
                await self._quietly(self.plumber.delete(name), "veth", name)
            config.raiseException()
        owner = str(config.get("homingHost") or self.host)
        if owner != self.host:
            # the netmaster answered another host's endpoint of that id (a retry's
            # answer): not ours to plumb, and not ours to release in an undo
            if made.veth:
                await self._quietly(self.plumber.delete(name), "veth", name)
            log.info("refused creating endpoint {id}: it is host {owner}'s", id=req.id[:12],
                     owner=owner[:64])
            raise ForeignEndpoint(req.id, owner, self.host, "create")
        try:
            if not early_ok:
                early_value.raiseException()
            shape, plumbed = early_value
            ip = str(config.get("ipAddress") or "").split("/")[0]
            if not ip:
                raise EndpointError(f"netmaster allocated no IPv4 address for {req.id}")
            if req.ip and ip != req.ip:
                raise EndpointError(f"netmaster gave {ip} to endpoint {req.id[:12]}, not the "
                                    f"requested {req.ip}")
            mac = str(config.get("macAddress") or "").lower() or self._mac_for(req, ip)
            if req.mac and req.mac.lower() != mac:
                raise BadRequest(_mac_refusal(req.mac, mac, ip))
            if predicted is None:
                plumbed = await self._make_veth(req, name, mac, shape, handoff, made)
            elif mac != predicted:
                raise EndpointError(f"netmaster gave MAC {mac} to {ip}, the veth has {predicted}")
            record = self._record(req, config, name, ip, mac, shape)
            made.port = True
            if handoff:
                info = await self._add_port(req.id, ns_id, record, wait_applied=False)
            else:
                # the container end's address and route ∥ the port (waited for: CNI's
                # answer carries the real ofport)
                vreq = self._veth_request(req, name, mac, shape, ip)
                results = await defer.DeferredList(
                    [self.plumber.configure_container_end(vreq),
                     defer.ensureDeferred(self._add_port(req.id, ns_id, record))],
                    consumeErrors=True)
                for ok, value in results:
                    if not ok:
                        value.raiseException()
                plumbed, info = results[0][1], results[1][1]
            if (str(plumbed["macAddress"]).lower(), plumbed["mtu"]) != (mac, shape.mtu):
                raise EndpointError(f"veth {name} came up with MAC {plumbed['macAddress']} "
                                    f"MTU {plumbed['mtu']}, not {mac} {shape.mtu}")
            record["ofport"] = info.ofport
        except BaseException as exc:
            log.warn("creating endpoint {id} failed ({err}); undoing", id=req.id[:12], err=exc)
            released = await self._undo(req, name, port=made.port, veth=made.veth,
                                        ip=str(config.get("ipAddress") or req.ip))
            if on_rollback is not None:
                on_rollback(released)
            raise
        log.info("endpoint {id}: {ip}/{plen} {mac} on {port} (ofport {ofport}) in {netns} "
                 "as {ifname}", id=req.id[:12], ip=ip, plen=shape.prefix_len, mac=mac, port=name,
                 ofport=record["ofport"], netns=req.netns, ifname=req.ifname)
        return record

    @staticmethod
    def _mac_for(req: EndpointRequest, ip: str) -> str:
        """The endpoint's MAC by the rule; a MAC asked for must be that one (400 before
        anything is allocated, when the address is known)."""
        try:
            mac = endpoint_mac(ip)
        except ValueError:
            raise BadRequest(f"'ip' {ip[:64]!r} is not an IPv4 address") from None
        if req.mac and req.mac.lower() != mac:
            raise BadRequest(_mac_refusal(req.mac, mac, ip))
        return mac

    def _shape_of(self, req: EndpointRequest, net: Dict[str, Any]) -> "_Shape":
        encap = str(net.get("encap") or "vxlan")
        try:
            return _Shape(prefix_len(str(net.get("subnet", ""))),
                          str(net.get("gateway") or ""), encap,
                          container_mtu(encap, self.underlay_mtu))
        except ValueError as e:
            raise EndpointError(f"network {req.tenant}:{req.network}: {e}") from None

    @staticmethod
    def _veth_request(req: EndpointRequest, name: str, mac: str, shape: "_Shape",
                      ip: Optional[str]) -> VethRequest:
        return VethRequest(host_ifname=name, netns=req.netns, ifname=req.ifname, mac=mac,
                           ipv4=ip, prefix_len=shape.prefix_len if ip else None,
                           gateway=(shape.gateway or None) if ip else None, mtu=shape.mtu)

    async def _make_veth(self, req: EndpointRequest, name: str, mac: str, shape: "_Shape",
                         handoff: bool, made: "_Progress") -> Any:
        """The part of the veth that needs no allocation: the whole pair for a handoff
        (fires with its facts), else the host end (the container end stays down)."""
        vreq = self._veth_request(req, name, mac, shape, None)
        if handoff:
            plumbed = await self.plumber.create(vreq, remove_first=(req.ifname,))
        else:
            plumbed = await self.plumber.create_host_end(vreq)
        made.veth = True
        return plumbed

    def _record(self, req: EndpointRequest, config: Dict[str, Any], name: str, ip: str,
                mac: str, shape: "_Shape") -> Dict[str, Any]:
        """The endpoint's local record: the netmaster's, completed with the plumbing's facts."""
        record = dict(config)
        record.update({
            "id": req.id,
            "network": config.get("network") or f"{req.tenant}:{req.network}",
            "group": config.get("group") or (f"{req.tenant}:{req.group}" if req.group else ""),
            "ipAddress": ip,
            "macAddress": mac,
            "homingHost": config.get("homingHost") or self.host,
            "intfName": name,
            "vtepIP": config.get("vtepIP") or self.vtep_ip,
            "containerID": config.get("containerID") or req.container_id,
            "containerName": config.get("containerName") or req.name,
            "ifname": req.ifname,
            "mtu": shape.mtu,
            "prefixLen": shape.prefix_len,
            "gateway": shape.gateway,
            "encap": shape.encap,
            "netns": req.netns,
        })
        if req.owner:
            record["owner"] = req.owner
        return record

    async def _add_port(self, endpoint_id: str, ns_id: str, record: Dict[str, Any],
                        wait_applied: bool = True) -> PortInfo:
        """The endpoint's OVS port, its record in ``external_ids``; with ``wait_applied``
        it waits until ovs-vswitchd applied it, so the answer's ``ofport`` is real."""
        return await self.ovsdb.ensure_port(
            self.bridge, record["intfName"],
            external_ids={K_ID: endpoint_id, K_NET: record["network"], K_GROUP: record["group"],
                          K_NETNS: record["netns"], K_NETNS_ID: ns_id,
                          K_IFNAME: record["ifname"],
                          K_RECORD: json.dumps(record, sort_keys=True)},
            iface_external_ids={"iface-id": endpoint_id, "attached-mac": record["macAddress"],
                                "iface-status": "active"},
            wait_applied=wait_applied)

    @staticmethod
    async def _quietly(d: Any, what: str, name: str) -> None:
        try:
            await d
        except Exception as e:
            log.error("undo: cannot remove {what} {name}: {err}", what=what, name=name, err=e)

    async def _undo(self, req: EndpointRequest, name: str, *, port: bool, veth: bool,
                    ip: str) -> bool:
        """Best-effort rollback of a failed create; every step runs even if one fails.

        True when the netmaster released the allocation; else a pending delete is left
        for :meth:`reconcile` to finish, so the address does not leak."""
        if port:
            await self._quietly(self.ovsdb.delete_port(self.bridge, name, wait_applied=False),
                                "OVS port", name)
        if veth:
            await self._quietly(self.plumber.delete(name), "veth", name)
        tomb = {"id": req.id, "tenant": req.tenant, "network": req.network, "group": req.group,
                "ip": ip.split("/")[0], "port": name}
        try:
            await self.netmaster.delete_endpoint(req.tenant, req.network, req.group, req.id,
                                                 tomb["ip"])
            return True
        except Exception as e:
            log.error("undo: netmaster did not release endpoint {id}: {err}; will retry",
                      id=req.id[:12], err=e)
            try:
                self._write_tomb(tomb)
            except OSError as e2:
                log.error("cannot record pending delete of {id}: {err}", id=req.id[:12], err=e2)
            return False

    async def update_record(self, record: Dict[str, Any]) -> None:
        """Store ``record`` (one :meth:`get` returned, amended) as its endpoint's record.

        For facts learnt after the create (the Docker driver's container name and labels,
        once Docker started the container); the caller serializes this with the
        endpoint's delete."""
        self._require_ready()
        self._check_own(record, "update")
        stored = {k: v for k, v in record.items() if k != "ofport"}
        await self.ovsdb.ensure_port(self.bridge, stored["intfName"],
                                     external_ids={K_RECORD: json.dumps(stored, sort_keys=True)},
                                     wait_applied=False)

    def _check_own(self, record: Dict[str, Any], verb: str) -> None:
        """Refuse (:class:`ForeignEndpoint`) a record that names another host."""
        owner = str(record.get("homingHost") or self.host)
        if owner != self.host:
            log.info("refused to {verb} endpoint {id}: it is host {owner}'s", verb=verb,
                     id=str(record.get("id", ""))[:12], owner=owner[:64])
            raise ForeignEndpoint(str(record.get("id", "")), owner, self.host, verb)

    # -- delete ---------------------------------------------------------------------
    async def delete(self, endpoint_id: str, also_links: Sequence[str] = ()) -> bool:
        """Remove port, veth and allocation; False when the endpoint was not known.

        ``also_links``: further host-side links of this endpoint to remove with its veth
        (the Docker driver's container end), if they exist — also when the endpoint
        itself is unknown (a container end can outlive its host end).
        """
        self._require_ready()
        return await endpoint_op("detach", self._locked(
            endpoint_id, lambda: self._delete(endpoint_id, also_links)))

    async def _delete(self, endpoint_id: str, also_links: Sequence[str] = ()) -> bool:
        """Port, then release ∥ veth; the tombstone goes only when all three succeeded.

        The veth's removal is the slow part (the kernel waits for an RCU grace period), so
        the OVS port and the netmaster release happen meanwhile.  The port goes before the
        release, so the address is never free while a port still carries it; ovs-vswitchd's
        applying the removal is not waited for (nothing depends on it, and a later add of
        the same name is ordered after it in OVSDB).
        """
        port = await self._find(endpoint_id)
        tomb = self._read_tomb(endpoint_id)
        if port is None and tomb is None:
            if also_links:
                # a container end left alone (its host end is gone) still goes
                await self.plumber.delete(also_links[0], also=tuple(also_links[1:]))
            return False
        if port is not None:
            record = self._record_of(port) or {}
            self._check_own(record, "delete")
            tenant, _, network = str(record.get("network", "")).partition(":")
            if not network:
                tenant, network = "default", tenant
            tomb = {"id": endpoint_id, "tenant": tenant, "network": network,
                    "group": record.get("group", ""), "ip": record.get("ipAddress", ""),
                    "port": port.name}
            self._write_tomb(tomb)
        assert tomb is not None
        final = tomb

        async def port_then_release() -> None:
            if port is not None:
                await self.ovsdb.delete_port(self.bridge, port.name, wait_applied=False)
            await self._release(final)

        results = await defer.DeferredList(
            [defer.ensureDeferred(port_then_release()),
             self.plumber.delete(tomb["port"], also=tuple(also_links))],
            consumeErrors=True)
        for ok, value in results:
            if not ok:
                value.raiseException()
        self._drop_tomb(endpoint_id)
        log.info("endpoint {id} deleted ({port})", id=endpoint_id[:12], port=tomb["port"])
        return True

    async def _release(self, tomb: Dict[str, Any]) -> None:
        """The netmaster forgets the endpoint (an unknown one counts as released)."""
        try:
            await self.netmaster.delete_endpoint(tomb["tenant"], tomb["network"],
                                                 tomb.get("group", ""), tomb["id"],
                                                 tomb.get("ip", ""))
        except NetmasterError as e:
            if "not found" not in e.text.lower():
                raise
            log.info("netmaster no longer knows endpoint {id}; treating as released",
                     id=tomb["id"][:12])

    # -- reconcile -------------------------------------------------------------------
    async def reconcile(self) -> Dict[str, List[str]]:
        """Reap endpoints whose container is gone, finish pending deletes; report both."""
        self._require_ready()
        reaped: List[str] = []
        released: List[str] = []
        for port in await self._ports():
            ids = port.external_ids
            ep_id = ids[K_ID]
            path = ids.get(K_NETNS)
            why = None
            if path and netns_id(path) != ids.get(K_NETNS_ID):
                why = f"namespace {path} is gone"
            elif not await self.plumber.host_link_exists(port.name):
                why = f"veth {port.name} is gone"
            if why is None:
                continue
            log.info("reaping endpoint {id}: {why}", id=ep_id[:12], why=why)
            try:
                if await self._locked(ep_id, lambda: self._delete(ep_id)):
                    reaped.append(ep_id)
            except Exception as e:
                log.warn("reaping endpoint {id} not finished: {err}", id=ep_id[:12], err=e)
        for tomb in self.pending_deletes():
            ep_id = tomb.get("id")
            if not ep_id or ep_id in reaped:
                continue
            try:
                await self._locked(ep_id, lambda: self._delete(ep_id))
                released.append(ep_id)
            except Exception as e:
                log.warn("pending delete of {id} not finished: {err}", id=ep_id[:12], err=e)
        return {"reaped": reaped, "released": released}


__all__ = ["EndpointManager", "EndpointRequest", "EndpointError", "BadRequest", "Conflict",
           "NotReady", "ForeignEndpoint", "NetnsNotFound", "port_name", "prefix_len"]
