"""What the host agents ask of the netmaster: addresses and endpoint records.

Each call is one atomic Redis transaction, so concurrent requests from many
hosts and several netmasters get distinct addresses, and a request that fails
leaves nothing allocated.  Endpoint creation is idempotent on the endpoint id
(a retried request returns the existing record) and deletion of a missing
endpoint succeeds, so an agent can simply retry after a crash.

``node``: when the caller is a host agent logged in as a ``node`` user (see
:mod:`contiv_sdn.api.auth`), the endpoint must be homed on that host — the
request's ``Host`` for a create, the stored record's ``homingHost`` for a
retry, an update or a delete — and a created endpoint's ``vtepIP`` is the one
that host registered (a node cannot point another host's tunnels elsewhere).
Checked inside the transaction, against the record it changes.
"""

from __future__ import annotations

import functools
import json
from typing import Optional, Tuple

from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.hosts import NotThisHost
from contiv_sdn.master.netutil import Subnet, V6Subnet, parse_subnet, parse_v6
from contiv_sdn.master.oper import network_subnet
from contiv_sdn.master.work import Work
from contiv_sdn.store import (
    Finish, Store, StoreError, StoreUnavailable, View, placeholder, transact,
)
from contiv_sdn.store import keys as K


_MAX_ID = 512


def _usable_id(ep_id: str) -> bool:
    """An endpoint id names a record and a REST path segment (inspect): not empty,
    no ``/`` or control characters, bounded.  Docker's are 64 hex digits, CNI's
    ``<container id>[-<ifname>]``."""
    return 0 < len(ep_id) <= _MAX_ID and "/" not in ep_id and \
        not any(ord(c) < 0x20 or ord(c) == 0x7F for c in ep_id)


def _own(node: Optional[str], ep: dict, ep_id: str, verb: str) -> None:
    """A ``node`` caller may touch only endpoints homed on its host."""
    if node is not None and ep.get("homingHost") != node:
        raise NotThisHost(node, f"{verb} endpoint {json.dumps(ep_id[:64])} of host "
                                f"{json.dumps(str(ep.get('homingHost') or '')[:64])}")


@functools.lru_cache(maxsize=4096)
def _addressing(subnet: str, ipv6_subnet: str) -> Tuple[Subnet, Optional[V6Subnet]]:
    """A network's IPv4 and IPv6 ranges from its intent record (``subnet``,
    ``ipv6Subnet``): they cannot change after its create, and its state holds them
    as derived from these, so an endpoint create or delete reads the network's intent
    (from the store's cache, guarded) instead of its state (a round trip to Redis)."""
    return parse_subnet(subnet), parse_v6(ipv6_subnet)


async def _network_addressing(w: Work, net_key: str) -> Optional[Tuple[Subnet, Optional[V6Subnet]]]:
    """:func:`_addressing` of network ``net_key`` as this transaction reads it, or None."""
    network = await w.obj("network", net_key)
    if network is None:
        return None
    return _addressing(network.get("subnet") or "", network.get("ipv6Subnet") or "")


def strip_len(addr: str) -> str:
    return addr.split("/")[0] if addr else ""


class Endpoints:
    """The ``/plugin/*`` operations."""

    def __init__(self, store: Store):
        self.store = store

    async def _resolve(self, w: Work, network_id: str) -> Tuple[str, str]:
        """``net.tenant`` or ``net:epg.tenant`` → (network key, group key or "").

        Names may contain dots, so every split point is tried, rightmost first.
        """
        net_part, group = network_id, ""
        if ":" in network_id:
            net_part, _, rest = network_id.partition(":")
            epg, dot, tenant = rest.rpartition(".")
            if dot:
                group = f"{tenant}:{epg}"
                net_part = f"{net_part}.{tenant}"
        pieces = net_part.split(".")
        for i in range(len(pieces) - 1, 0, -1):
            tenant, net = ".".join(pieces[i:]), ".".join(pieces[:i])
            key = f"{tenant}:{net}"
            if await w.exists("network", key):
                return key, group
        raise MasterError("network not found")

    async def _network_by_pool(self, w: Work, pool: str) -> str:
        subnet, _, length = pool.partition("/")
        tenant = ""
        if ":" in length:
            length, _, tenant = length.partition(":")
        found = ""
        for key, st in sorted((await w.states("network")).items()):
            if tenant and st.get("tenant") != tenant:
                continue
            if ":" in subnet:
                if st.get("ipv6Subnet") == f"{subnet}/{length}":
                    found = key
            elif st.get("subnetIP") == subnet and str(st.get("subnetLen")) == length:
                found = key
        if not found:
            raise MasterError("network not found")
        return found

    def _alloc_v4(self, w: Work, name: str, net_key: str, sub: Subnet,
                  group_state: Optional[dict], want_ip: str, shared: bool) -> None:
        pool = group_state if group_state and group_state.get("ipPool") else None
        want = sub.index(want_ip) if want_ip else None
        if pool:
            bitmap, lo, hi = K.epg_ip_bitmap(pool["key"]), int(pool["poolLo"]), int(pool["poolHi"])
            full = f"auto allocation failed - address exhaustion in pool {pool['ipPool']}"
        else:
            bitmap, lo, hi = K.ip_bitmap(net_key), sub.alloc_lo, sub.alloc_hi
            full = (f"auto allocation failed - address exhaustion in subnet "
                    f"{sub.address}/{sub.length}")
        if want is not None and not pool:
            hi = max(hi, want) if want < sub.last_index else hi
            lo = min(lo, want) if want > 0 else lo
        w.txn.alloc(name, bitmap, lo, hi, want=want, full=full, fmt="ip", base=sub.network,
                    taken="ip address {} is not available", shared=shared)

    # -- /plugin/allocAddress, /plugin/releaseAddress -----------------------
    async def alloc_address(self, req: dict) -> dict:
        network_id = req["NetworkID"]
        pool = req["AddressPool"]
        preferred = strip_len(req["PreferredIPv4Address"])
        is_v6 = ":" in pool.split("/")[0]

        async def fn(view: View):
            w = Work(view)
            if network_id:
                net_key, group_key = await self._resolve(w, network_id)
            else:
                net_key, group_key = await self._network_by_pool(w, pool), ""
            net_state = await w.peek_state("network", net_key)
            if net_state is None:
                raise MasterError("network not found")
            group_state = None
            if group_key:
                if not await w.exists("endpointGroup", group_key):
                    raise MasterError(f"endpoint group {group_key} not found")
                group_state = await w.peek_state("endpointGroup", group_key)
            if is_v6:
                v6 = parse_v6(net_state.get("ipv6Subnet", ""))
                if v6 is None:
                    raise MasterError("network has no ipv6 subnet")
                want = v6.host_id(preferred) if preferred else None
                w.txn.alloc_v6("a", K.ip6_hash(net_key), v6.groups, v6.max_host, want=want,
                               full=f"Reached MaxHosts ({v6.max_host}). Cannot allocate more hosts",
                               taken="ip address {} is not available")
                return Finish(lambda r: {"NetworkID": network_id,
                                         "IPv4Address": f"{v6.ip(r.allocs['a'])}/"
                                                        f"{v6.network.prefixlen}"})
            sub = network_subnet(net_state)
            self._alloc_v4(w, "a", net_key, sub, group_state, preferred, False)
            return Finish(lambda r: {"NetworkID": network_id,
                                     "IPv4Address": f"{sub.ip(r.allocs['a'])}/{sub.length}"})

        return await self._run(fn)

    async def release_address(self, req: dict) -> dict:
        network_id = req["NetworkID"]
        addr = strip_len(req["IPv4Address"])

        async def fn(view: View):
            w = Work(view)
            net_key, group_key = await self._resolve(w, network_id)
            net_state = await w.peek_state("network", net_key)
            if net_state is None or not addr:
                return {"Status": "success"}
            if await self.store.hget_raw(K.ip_owner_hash(net_key), addr) is not None:
                # still held by an endpoint or a service VIP: never hand it out twice
                return {"Status": "success"}
            w.txn.guard_raw(K.ip_owner_hash(net_key), addr, None)
            if ":" in addr:
                v6 = parse_v6(net_state.get("ipv6Subnet", ""))
                if v6 is not None:
                    hid = v6.host_id(addr)
                    if addr != net_state.get("ipv6Gateway"):
                        w.txn.raw_del(K.ip6_hash(net_key), str(hid))
                return {"Status": "success"}
            sub = network_subnet(net_state)
            idx = sub.index(addr)
            group_state = await w.peek_state("endpointGroup", group_key) if group_key else None
            if group_state and group_state.get("ipPool"):
                w.txn.setbit(K.epg_ip_bitmap(group_key), idx, 0)
            elif addr != net_state.get("gateway"):
                w.txn.setbit(K.ip_bitmap(net_key), idx, 0)
            return {"Status": "success"}

        return await self._run(fn)

    # -- /plugin/createEndpoint, deleteEndpoint, updateEndpoint ------------
    async def create_endpoint(self, req: dict, node: Optional[str] = None) -> dict:
        cfg = req["ConfigEP"]
        tenant = req["TenantName"] or "default"
        net_name = req["NetworkName"]
        group_name = req["ServiceName"] or cfg["ServiceName"]
        ep_id = req["EndpointID"] or cfg["Container"]
        if not _usable_id(ep_id):
            raise MasterError("invalid endpoint id")
        if node is not None and cfg["Host"] != node:
            raise NotThisHost(node, f"create an endpoint on host {json.dumps(cfg['Host'][:64])}")
        want_ip = strip_len(cfg["IPAddress"])
        want_ip6 = strip_len(cfg["IPv6Address"])
        net_key = f"{tenant}:{net_name}"
        group_key = f"{tenant}:{group_name}" if group_name else ""

        async def fn(view: View):
            w = Work(view)
            existing = await view.presume_absent("endpoint", ep_id)
            if existing is not None:
                _own(node, existing, ep_id, "create")
                return {"EndpointConfig": existing}  # a retry: nothing to write
            addressing = await _network_addressing(w, net_key)
            if addressing is None:
                raise MasterError(f"network {net_name}.{tenant} not found")
            sub, v6 = addressing
            group_state = None
            if group_key:
                if not await w.exists("endpointGroup", group_key):
                    raise MasterError(f"endpoint group {group_key} not found")
                group_state = await w.peek_state("endpointGroup", group_key)
                if group_state is None:
                    raise MasterError(f"endpoint group {group_key} not found")
                if group_state.get("network") != net_key:
                    raise MasterError(f"endpoint group {group_name} is not in network {net_name}")
            txn = w.txn
            owners = K.ip_owner_hash(net_key)
            if want_ip:
                holder = await self.store.hget_raw(owners, want_ip)
                if holder and holder != ep_id:
                    raise MasterError(f"ip address {want_ip} is already in use")
                txn.guard_raw(owners, want_ip, holder)
            self._alloc_v4(w, "ip", net_key, sub, group_state, want_ip, shared=True)
            txn.raw_set(owners, placeholder("ip", "ip"), ep_id, subs=True)
            ip6 = ""
            if v6 is not None:
                want6 = v6.host_id(want_ip6) if want_ip6 else None
                txn.alloc_v6("ip6", K.ip6_hash(net_key), v6.groups, v6.max_host, want=want6,
                             full=f"Reached MaxHosts ({v6.max_host}). Cannot allocate more hosts",
                             taken="ip address {} is not available", shared=True)
                ip6 = placeholder("ip6", "ip6")
            host = cfg["Host"]
            vtep = cfg["VtepIP"]
            if node is not None:
                # a node's endpoints are reached at the vtep its own registration holds
                h = await self.store.get("host", host)
                vtep = str((h or {}).get("vtepIP") or "")
                if not vtep:
                    raise MasterError(f"host {host} is not registered yet (its netplugin "
                                      "registers at start); retry in a moment")
                if cfg["VtepIP"] and cfg["VtepIP"] != vtep:
                    raise NotThisHost(node, f"create an endpoint with vtep "
                                            f"{json.dumps(cfg['VtepIP'][:64])} (host {host} "
                                            f"registered {vtep})")
            elif not vtep and host:
                h = await self.store.get("host", host)
                vtep = (h or {}).get("vtepIP", "")
            record = {
                "id": ep_id, "tenant": tenant, "network": net_key, "networkName": net_name,
                "group": group_key, "groupName": group_name,
                "epgId": int(group_state["epgId"]) if group_state else 0,
                "ipAddress": placeholder("ip", "ip"), "ipv6Address": ip6,
                "macAddress": placeholder("ip", "mac"),
                "homingHost": host, "intfName": cfg["IntfName"], "vtepIP": vtep,
                "containerID": req["ContainerID"] or cfg["ContainerID"],
                "containerName": req["EPCommonName"],
                "labels": cfg["Labels"],
            }
            # a pod's endpoint (contiv-cni under a kubelet): which pod, for the
            # Kubernetes watcher and NetworkPolicy (drivers/kubernetes/objects.py)
            k8s_ns = cfg["Labels"].get("cni.contiv.io/k8s-namespace", "")
            k8s_pod = cfg["Labels"].get("cni.contiv.io/k8s-pod", "")
            if k8s_ns and k8s_pod:
                record["k8sNamespace"], record["k8sPod"] = k8s_ns, k8s_pod
                # which incarnation of the pod (CNI_ARGS K8S_POD_UID): a pod recreated
                # under the same name must not lend its labels to the old sandbox's record
                k8s_uid = cfg["Labels"].get("cni.contiv.io/k8s-pod-uid", "")
                if k8s_uid:
                    record["k8sPodUID"] = k8s_uid
            txn.put("endpoint", ep_id, json.dumps(record), subs=True, answer=True)
            txn.incr_field("network", net_key, "epCount", 1)
            if group_key:
                txn.incr_field("endpointGroup", group_key, "epCount", 1)
            # the record as the script filled it in (addresses), from the commit's answer
            return Finish(lambda r: {"EndpointConfig": json.loads(r.written[("endpoint", ep_id)])})

        return await self._run(fn)

    async def delete_endpoint(self, req: dict, node: Optional[str] = None) -> dict:
        ep_id = req["EndpointID"]

        async def fn(view: View):
            w = Work(view)
            ep = await w.state("endpoint", ep_id)
            if ep is None:
                return {"EndpointConfig": None}
            _own(node, ep, ep_id, "delete")
            txn = w.txn
            net_key = ep["network"]
            addressing = await _network_addressing(w, net_key)
            if addressing is not None:
                sub, v6 = addressing
                group_state = (await w.peek_state("endpointGroup", ep["group"])
                               if ep.get("group") else None)
                if ep.get("ipAddress"):
                    idx = sub.index(ep["ipAddress"])
                    if group_state and group_state.get("ipPool"):
                        txn.setbit(K.epg_ip_bitmap(ep["group"]), idx, 0)
                    else:
                        txn.setbit(K.ip_bitmap(net_key), idx, 0)
                    txn.raw_del(K.ip_owner_hash(net_key), ep["ipAddress"])
                if v6 is not None and ep.get("ipv6Address"):
                    txn.raw_del(K.ip6_hash(net_key), str(v6.host_id(ep["ipv6Address"])))
                txn.incr_field("network", net_key, "epCount", -1)
            if ep.get("group"):
                txn.incr_field("endpointGroup", ep["group"], "epCount", -1)
            txn.delete("endpoint", ep_id)
            return {"EndpointConfig": ep}

        return await self._run(fn)

    async def update_endpoint(self, req: dict, node: Optional[str] = None) -> dict:
        ep_id = req["EndpointID"]
        event = req["Event"]

        async def fn(view: View):
            ep = await view.get("endpoint", ep_id)
            if ep is None:
                raise MasterError(f"endpoint {ep_id} not found")
            _own(node, ep, ep_id, "update")
            if event == "start":
                labels = dict(ep.get("labels") or {})
                labels.update(req["Labels"])
                ep["labels"] = labels
                if req["ContainerID"]:
                    ep["containerID"] = req["ContainerID"]
                if req["EPCommonName"]:
                    ep["containerName"] = req["EPCommonName"]
                view.txn.put("endpoint", ep_id, ep)
            return {"IPAddress": req["IPAddress"]}

        return await self._run(fn)

    # -- /plugin/createDocknet, deleteDocknet (swarm mode, issue 17) --------
    async def create_docknet(self, req: dict) -> dict:
        """Record that docker network ``DocknetUUID`` maps to a Contiv network or group.

        Contiv's ``oper/docknet/<tenant>.<network>.<group>`` (its netplugin wrote it
        from the swarm manager's CreateNetwork); ours is written by the netmaster in
        one transaction that also checks the objects exist, so a mapping never names
        a deleted network.  The same UUID again is a no-op (a manager that restarts
        allocates again); another docker network for the same object is refused:
        Contiv overwrote the record and lost the first network's mapping.
        """
        tenant = req["TenantName"] or "default"
        net, group, uuid = req["NetworkName"], req["ServiceName"], req["DocknetUUID"]
        if not _usable_id(uuid):
            raise MasterError("invalid docker network id")
        what = f"group {group}" if group else f"network {net}"

        async def fn(view: View):
            w = Work(view)
            if not await w.exists("network", f"{tenant}:{net}"):
                raise MasterError(f"Network {net} not found")
            if group:
                g = await w.obj("endpointGroup", f"{tenant}:{group}")
                if g is None or g.get("networkName") != net:
                    raise MasterError(f"endpoint group {group} of network {net} not found")
            key = f"{tenant}.{net}.{group}"
            old = await w.state("docknet", key)
            if old is not None and old.get("docknetUUID") != uuid:
                raise MasterError(f"{what} is already mapped to docker network "
                                  f"{old.get('docknetUUID')}; use that docker network, or "
                                  f"remove it first")
            record = {"tenantName": tenant, "networkName": net, "serviceName": group,
                      "docknetUUID": uuid}
            if old != record:
                w.txn.put("docknet", key, record)
            return record

        return await self._run(fn)

    async def delete_docknet(self, req: dict) -> dict:
        """Forget every mapping of docker network ``DocknetUUID`` (Contiv's
        ``FindDocknetByUUID`` + ``DeleteDockNetState``); none is not an error (a
        FreeNetwork retried, or a network the netmaster never heard of)."""
        uuid = req["DocknetUUID"]

        async def fn(view: View):
            w = Work(view)
            gone = []
            for key, rec in sorted((await w.states("docknet")).items()):
                if rec.get("docknetUUID") == uuid:
                    w.txn.delete("docknet", key)
                    gone.append(key)
            return {"Deleted": gone}

        return await self._run(fn)

    async def _run(self, fn):
        try:
            return await transact(self.store, fn)
        except StoreUnavailable:
            raise  # the REST layer answers it as 503: retry, not a refusal
        except StoreError as e:
            raise MasterError(str(e))


__all__ = ["Endpoints"]
