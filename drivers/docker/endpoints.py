"""Docker endpoints on the agent: the veth is left in the host for dockerd to move.

For CNI and the local API the agent creates the container's interface straight
in the container's namespace and configures it.  Docker works differently: the
remote driver's ``Join`` only *names* an interface in dockerd's own namespace
and dockerd moves it into the sandbox, renames it (``eth0``) and gives it the
address and gateway the driver reported (lab.md: "the plugin must create the
veth in the namespace where that dockerd runs").  So the container end is
created in the host namespace under a name derived from the endpoint id
(``ct`` + 12 hex, next to the host end ``cv`` + 12 hex) with MAC, MTU and TX
offload set (those survive the move), but without address or route.

Everything else is the agent's: the netmaster client, plumbing, OVSDB session
and — crucially — the record format (the OVS port's ``external_ids``), so
``GET /v1/endpoints``, deletion and the agent's reaper treat Docker endpoints
like any other.  The recorded namespace is the host's own; the agent reaps a
Docker endpoint when its host-side veth disappears, i.e. when the container's
namespace (holding the other end) died without Docker telling us.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional

from twisted.internet import defer
from twisted.logger import Logger

from contiv_sdn.agent.locks import KeyedLocks

from contiv_sdn.agent import endpoints as agent_eps
from contiv_sdn.agent.endpoints import (K_GROUP, K_ID, K_IFNAME, K_NET, K_NETNS, K_NETNS_ID,
                                        K_RECORD, port_name, prefix_len)
from contiv_sdn.agent.netmaster import NetmasterError, NetmasterUnavailable
from contiv_sdn.agent.plumbing import VethRequest, netns_id

from drivers.docker.names import Placement
from drivers.docker.netmaster import PluginNetmaster
from drivers.docker.protocol import DriverError

log = Logger()

#: Marks a Docker endpoint in its record (``owner``), so reconcilers can tell them apart.
OWNER = "docker"


def mac_of(ip: str) -> str:
    """Contiv's MAC for an address: ``02:02`` + the four bytes (spec §3.1)."""
    return "02:02:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def network_shape(net: Dict[str, Any]) -> tuple:
    """What an endpoint takes from its network: (prefix length, gateway, encapsulation).

    Works on the netmaster's inspect ``Config`` and on the network's state record in
    Redis alike (same field names); an unreadable subnet is a shape of its own.
    """
    try:
        plen: Any = prefix_len(str(net.get("subnet", "")))
    except ValueError:
        plen = None
    return (plen, str(net.get("gateway") or ""), str(net.get("encap") or "vxlan"))


def container_ifname(endpoint_id: str) -> str:
    """The container end's name while it waits in the host namespace: ``ct`` + 12 hex."""
    return "ct" + port_name(endpoint_id)[2:]


class CreateFailed(DriverError):
    """``released`` tells whether the address given to create was released by the undo."""

    def __init__(self, message: str, released: bool, status: int = 500):
        super().__init__(message, status)
        self.released = released


class DockerEndpoints:
    """Create/delete/look up Docker endpoints through the agent's parts (see module doc)."""

    def __init__(self, agent: Any, netmaster: PluginNetmaster):
        self.agent = agent
        self.manager = agent.endpoints
        self.netmaster = netmaster
        host_netns = getattr(agent.plumber, "host_netns", None)
        #: Where dockerd runs = where the host ends live.
        self.host_netns_path = host_netns if host_netns else "/proc/self/ns/net"
        self._locks = KeyedLocks()
        self._networks: Dict[str, Dict[str, Any]] = {}
        #: Networks whose change notification is being checked (see :meth:`revalidate`).
        self._checking: Dict[str, defer.Deferred] = {}
        #: Bumped by every forget/revalidate, so an answer read before is not cached after.
        self._epoch = 0

    @property
    def ready(self) -> bool:
        return bool(self.manager.ready)

    def _require_ready(self) -> None:
        if not self.ready:
            raise DriverError(f"netplugin on {self.agent.host} is still setting up its bridge; "
                              "retry in a moment")

    async def _locked(self, endpoint_id: str, fn: Any) -> Any:
        return await self._locks.run(endpoint_id, fn)

    # -- queries -------------------------------------------------------------------
    async def get(self, endpoint_id: str) -> Optional[Dict[str, Any]]:
        self._require_ready()
        return await self.manager.get(endpoint_id)

    async def list(self) -> list:
        self._require_ready()
        return [r for r in await self.manager.list() if r.get("owner") == OWNER]

    # -- create ----------------------------------------------------------------------
    async def create(self, endpoint_id: str, placement: Placement, ip: str,
                     mac: str = "") -> Dict[str, Any]:
        """Allocate (netmaster), make the veth in the host, attach the host end to br-int."""
        self._require_ready()
        return await self._locked(endpoint_id,
                                  lambda: self._create(endpoint_id, placement, ip, mac))

    async def network(self, p: Placement) -> Dict[str, Any]:
        """The network's configuration, cached: only its shape (prefix length, gateway,
        encapsulation) is used, and :meth:`forget` / :meth:`revalidate` keep the cache in step
        with Redis' change feed."""
        key = p.network_key
        net = self._networks.get(key)
        if net is None and key in self._checking:
            # a change notification is being checked: wait for its verdict
            await self._checking[key]
            net = self._networks.get(key)
        if net is None:
            epoch = self._epoch
            net = await self.netmaster.network(p.tenant, p.network)
            if epoch == self._epoch:  # nothing was forgotten while we asked
                self._networks[key] = net
        return net

    def forget(self, network_key: Optional[str] = None) -> None:
        """Drop one cached network (or all): it went, or notifications may have been lost."""
        self._epoch += 1
        if network_key is None:
            self._networks.clear()
        else:
            self._networks.pop(network_key, None)

    def revalidate(self, network_key: str, fetch: Callable[[], Any]) -> None:
        """A network's record changed in Redis: keep its cached entry only if the shape is the same.

        The netmaster rewrites a network's record on every endpoint create and delete (its
        endpoint count), so dropping the entry on each change would empty the cache on every
        attach.  ``fetch`` reads the record from the store; until it answers, the entry is
        out of the cache and :meth:`network` waits for the verdict rather than use it.
        """
        # answers and verdicts in flight predate this change: none of them may fill the cache
        self._epoch += 1
        cached = self._networks.pop(network_key, None)
        if cached is None:
            return
        epoch = self._epoch
        checking = defer.maybeDeferred(fetch)
        done: defer.Deferred = defer.Deferred()
        self._checking[network_key] = done

        def verdict(record: Any) -> None:
            same = (isinstance(record, dict) and epoch == self._epoch
                    and network_key not in self._networks
                    and network_shape(record) == network_shape(cached))
            if same:
                self._networks[network_key] = cached
            else:
                log.info("network {key} changed shape or went; its cache entry is dropped",
                         key=network_key)

        def failed(failure: Any) -> None:
            log.warn("cannot re-read network {key} ({err}); its cache entry is dropped",
                     key=network_key, err=failure.getErrorMessage())

        def finish(_: Any) -> None:
            if self._checking.get(network_key) is done:
                del self._checking[network_key]
            done.callback(None)

        checking.addCallbacks(verdict, failed).addBoth(finish)

    async def _create(self, endpoint_id: str, p: Placement, ip: str,
                      mac: str) -> Dict[str, Any]:
        existing = await self.manager.get(endpoint_id)
        if existing is not None:
            log.info("docker endpoint {id} exists already; returning it", id=endpoint_id[:12])
            return existing
        host_if = port_name(endpoint_id)
        cont_if = container_ifname(endpoint_id)
        taken = await self.agent.ovsdb.find_port(host_if)
        if taken is not None:
            raise CreateFailed(f"OVS port {host_if} (for endpoint {endpoint_id[:12]}) is already "
                               f"used by endpoint {taken[1].external_ids.get(K_ID, '?')}", False)
        try:
            net = await self.network(p)
            plen = prefix_len(str(net.get("subnet", "")))
        except (NetmasterError, NetmasterUnavailable, ValueError) as e:
            raise CreateFailed(str(e), False) from None
        encap = str(net.get("encap") or "vxlan")
        mtu = agent_eps._container_mtu(encap, self.agent.underlay_mtu)
        gateway = str(net.get("gateway") or "")
        predicted = mac_of(ip) if ip else ""
        if mac and predicted and mac.lower() != predicted:
            raise CreateFailed(f"MAC address {mac} cannot be used: netplugin derives MACs from "
                               f"addresses ({predicted} for {ip}); drop --mac-address", False,
                               status=400)
        def veth(want_mac: Optional[str]) -> defer.Deferred:
            # A container end left behind (Leave moved it back, then we were never told
            # to delete) would make the veth creation fail: it goes first, same thread hop.
            return self.agent.plumber.create(VethRequest(
                host_ifname=host_if, netns=self.host_netns_path, ifname=cont_if, mac=want_mac,
                ipv4=None, mtu=mtu), remove_first=(cont_if,))

        # The netmaster's allocation and the veth do not depend on each other when the
        # address (hence the MAC, 02:02:<ip>) is already known: make both at once.
        allocating = defer.ensureDeferred(self.netmaster.create_endpoint(
            p.tenant, p.network, p.group, endpoint_id, "", "", self.agent.host, ip, host_if))
        plumbing = veth(predicted) if predicted else None
        results = await defer.DeferredList(
            [allocating] + ([plumbing] if plumbing is not None else []), consumeErrors=True)
        veth_made = plumbing is not None and results[1][0]
        if not results[0][0]:
            if veth_made:
                await self._quietly(self.agent.plumber.delete(host_if), "veth", host_if)
            err = results[0][1].value
            raise CreateFailed(str(err), False) from None
        config = results[0][1]
        stage = "veth"
        try:
            if plumbing is not None and not veth_made:
                results[1][1].raiseException()
            got_ip = str(config.get("ipAddress") or "").split("/")[0]
            if not got_ip:
                raise DriverError(f"netmaster allocated no IPv4 address for {endpoint_id[:12]}")
            if ip and got_ip != ip:
                raise DriverError(f"netmaster gave {got_ip} to endpoint {endpoint_id[:12]}, "
                                  f"but Docker's IPAM handed out {ip}")
            want_mac = str(config.get("macAddress") or "").lower() or mac_of(got_ip)
            if mac and mac.lower() != want_mac:
                raise DriverError(f"MAC address {mac} cannot be used: netplugin derives MACs "
                                  f"from addresses ({want_mac} for {got_ip}); drop --mac-address",
                                  status=400)
            if plumbing is None:
                plumbed = await veth(want_mac)
            else:
                plumbed = results[1][1]
                if plumbed["macAddress"].lower() != want_mac:
                    raise DriverError(f"netmaster gave MAC {want_mac} to {got_ip}, the veth "
                                      f"has {plumbed['macAddress']}")
            record = dict(config)
            record.update({
                "id": endpoint_id,
                "network": config.get("network") or p.network_key,
                "group": config.get("group") or p.group_key,
                "ipAddress": got_ip,
                "macAddress": plumbed["macAddress"],
                "homingHost": config.get("homingHost") or self.agent.host,
                "intfName": host_if,
                "vtepIP": config.get("vtepIP") or self.agent.vtep_ip,
                "ifname": cont_if,
                "mtu": plumbed["mtu"],
                "prefixLen": plen,
                "gateway": gateway,
                "encap": encap,
                "netns": self.host_netns_path,
                "owner": OWNER,
                "tenant": p.tenant,
                "networkName": p.network,
                "groupName": p.group,
            })
            stage = "port"
            # no wait for ovs-vswitchd to apply it: Docker needs only the veth now, and
            # the controller programs the port whenever it shows up
            info = await self.agent.ovsdb.ensure_port(
                self.agent.bridge_name, host_if,
                external_ids=self._external_ids(record),
                iface_external_ids={"iface-id": endpoint_id, "attached-mac": record["macAddress"],
                                    "iface-status": "active"},
                wait_applied=False)
            record["ofport"] = info.ofport
        except BaseException as exc:
            log.warn("docker endpoint {id}: {stage} failed ({err}); undoing", id=endpoint_id[:12],
                     stage=stage, err=exc)
            released = await self._undo(endpoint_id, p, host_if, stage, ip)
            status = exc.status if isinstance(exc, DriverError) else 500
            raise CreateFailed(str(exc), released, status) from None
        log.info("docker endpoint {id}: {ip}/{plen} {mac} host {hif} container {cif}",
                 id=endpoint_id[:12], ip=got_ip, plen=plen, mac=record["macAddress"],
                 hif=host_if, cif=cont_if)
        return record

    @staticmethod
    async def _quietly(d: Any, what: str, name: str) -> None:
        try:
            await d
        except Exception as e:
            log.error("undo: cannot remove {what} {name}: {err}", what=what, name=name, err=e)

    def _external_ids(self, record: Dict[str, Any]) -> Dict[str, str]:
        return {K_ID: record["id"], K_NET: record["network"], K_GROUP: record["group"],
                K_NETNS: self.host_netns_path, K_NETNS_ID: netns_id(self.host_netns_path) or "",
                K_IFNAME: record["ifname"], K_RECORD: json.dumps(record, sort_keys=True)}

    async def _undo(self, endpoint_id: str, p: Placement, host_if: str, stage: str,
                    ip: str) -> bool:
        """Roll back a failed create; True when the netmaster released the allocation."""
        if stage == "port":
            try:
                await self.agent.ovsdb.delete_port(self.agent.bridge_name, host_if)
            except Exception as e:
                log.error("undo: cannot remove OVS port {port}: {err}", port=host_if, err=e)
        if stage in ("veth", "port"):
            try:
                await self.agent.plumber.delete(host_if)
            except Exception as e:
                log.error("undo: cannot remove veth {port}: {err}", port=host_if, err=e)
        try:
            await self.netmaster.delete_endpoint(p.tenant, p.network, p.group, endpoint_id, ip)
            return True
        except Exception as e:
            log.error("undo: netmaster did not release endpoint {id}: {err}",
                      id=endpoint_id[:12], err=e)
            return False

    # -- after the container started ---------------------------------------------------
    async def set_container(self, endpoint_id: str, container_id: str, name: str,
                            labels: Optional[Dict[str, str]] = None) -> bool:
        """Record the container behind an endpoint (netmaster + local record); False if unknown."""
        self._require_ready()

        async def run() -> bool:
            record = await self.manager.get(endpoint_id)
            if record is None:
                return False
            if (record.get("containerName") == name and record.get("containerID") == container_id
                    and (labels is None or record.get("labels") == labels)):
                return True
            net = str(record.get("network", ""))
            tenant, _, network = net.partition(":")
            group = str(record.get("group", "")).partition(":")[2]
            p = Placement(tenant or "default", network, group)
            await self.netmaster.update_endpoint(p, endpoint_id, str(record.get("ipAddress", "")),
                                                 container_id, name, labels)
            record.update({"containerID": container_id, "containerName": name})
            if labels is not None:
                record["labels"] = dict(labels)
            record.pop("ofport", None)
            await self.agent.ovsdb.ensure_port(self.agent.bridge_name, record["intfName"],
                                               external_ids={K_RECORD: json.dumps(
                                                   record, sort_keys=True)},
                                               wait_applied=False)
            return True

        return await self._locked(endpoint_id, run)

    # -- delete ------------------------------------------------------------------------
    async def delete(self, endpoint_id: str) -> bool:
        """The agent's delete (port, veth by its host end, netmaster release); idempotent."""
        self._require_ready()

        async def run() -> bool:
            cont_if = container_ifname(endpoint_id)
            # the container end exists alone only if the host end was already gone; it goes
            # with the veth (same thread hop), or on its own when the agent knew nothing
            existed = await self.manager.delete(endpoint_id, also_links=(cont_if,))
            if not existed:
                await self.agent.plumber.delete(cont_if)
            return existed

        return await self._locked(endpoint_id, run)
