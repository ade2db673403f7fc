"""The host side of host access: the ``contivh0`` port, its address and the container routes.

The flows are the controller's (``contiv_sdn/pipeline/hostaccess.py``: why the
host is a local endpoint of the default tenant, what it reaches); this puts in
place what they expect, in the agent's own network namespace (the host's):

* an OVS internal port ``contivh0`` on br-int (kept when the agent stops, like
  the endpoints' ports: a restart replaces no flow);
* on it the MAC ``hostaccess.host_mac`` and the address ``hostaccess.host_address``
  of this host's VTEP, in the host-access range (``/16``), the VXLAN container MTU
  and TX checksum offload off (the userspace datapath does not complete the
  kernel's partial checksums: TCP would silently fail, as on the lab's veths);
* a route for every VXLAN subnet of the default tenant via ``hostaccess.GATEWAY``
  (which br-int answers), following Redis read-only (``--redis``), and no other
  route via that gateway.

Every pass is idempotent and runs again every ``interval`` seconds, so whatever
removed the device or its settings (an ovs-vswitchd restart re-creates the
userspace datapath's tap without them) is repaired within one interval.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Dict, Iterable, List, Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from contiv_sdn.pipeline import hostaccess as HA

log = Logger()

PORT = HA.PORT


def _port_index(ipr: IPRoute) -> int:
    found = ipr.link_lookup(ifname=PORT)
    if not found:
        raise RuntimeError(f"{PORT} does not exist: its OVS internal port is made first "
                           f"(retried on the next pass)")
    return found[0]


def plumb_link(address: str, mtu: int) -> None:
    """MAC, MTU, address, up and checksum offload of the port (blocking: run in a thread)."""
    with IPRoute(groups=0) as ipr:
        idx = _port_index(ipr)
        ipr.link("set", index=idx, address=HA.host_mac(address), mtu=mtu, state="up")
        ipr.addr("replace", index=idx, address=address, prefixlen=HA.SUBNET.prefixlen)
    from contiv_sdn.agent.plumbing import set_tx_checksum
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        set_tx_checksum(sock, PORT, False)


def _routes_via_gateway(ipr: IPRoute) -> List[str]:
    out = []
    for r in ipr.get_routes(family=socket.AF_INET):
        if r.get_attr("RTA_GATEWAY") == HA.GATEWAY and r.get_attr("RTA_DST"):
            out.append(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
    return sorted(out)


def current_routes() -> List[str]:
    """The subnets routed via the host-access gateway (ours, whatever device)."""
    with IPRoute(groups=0) as ipr:
        return _routes_via_gateway(ipr)


def set_routes(subnets: Iterable[str]) -> Dict[str, List[str]]:
    """Make the routes via the gateway exactly ``subnets`` (blocking); what changed."""
    want = sorted({str(ipaddress.ip_network(s, strict=False)) for s in subnets})
    with IPRoute(groups=0) as ipr:
        idx = _port_index(ipr)
        have = _routes_via_gateway(ipr)
        added = [s for s in want if s not in have]
        removed = [s for s in have if s not in want]
        for s in removed:
            try:
                ipr.route("del", dst=s, gateway=HA.GATEWAY)
            except NetlinkError:
                pass  # gone meanwhile
        for s in want:  # replace: also repairs a route whose device or next hop drifted
            ipr.route("replace", dst=s, gateway=HA.GATEWAY, oif=idx)
    return {"added": added, "removed": removed}


def default_subnets(networks: Dict[str, str]) -> List[str]:
    """The subnets of the default tenant's VXLAN networks, from the raw ``network``
    state records (key ``tenant:name``); a record that does not decode is skipped
    (it is the writer's to fix; the controller logs it)."""
    from contiv_sdn.model.shapes import STR, Struct
    shape = Struct("NetworkState", [("encap", STR), ("subnet", STR)])
    out = set()
    for key, text in networks.items():
        if key.split(":", 1)[0] != HA.TENANT:
            continue
        try:
            rec = shape.load(text)
            if (rec.get("encap") or "vxlan") != "vxlan":
                continue
            out.add(str(ipaddress.IPv4Network(rec.get("subnet") or "", strict=False)))
        except Exception:  # noqa: BLE001 - a bad record: no route for it
            continue
    return sorted(out)


class HostPort:
    """Keeps the port, its settings and the routes in place (see the module docstring)."""

    def __init__(self, ovsdb: Any, bridge: str, vtep_ip: str, mtu: int,
                 read_networks: Callable[[], Any], interval: float = 10.0, reactor: Any = None,
                 extra: Optional[Callable[[], Any]] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.ovsdb, self.bridge, self.mtu = ovsdb, bridge, mtu
        self.address = HA.host_address(vtep_ip)
        self.read_networks = read_networks
        #: more of the pass (``nodeport.NodePorts.sync``): awaited after the port is in
        #: place, returns more routes via the gateway (clusterIPs) for set_routes to keep
        self.extra = extra
        self.interval = interval
        self.reactor = reactor
        self._loop: Optional[task.LoopingCall] = None
        self._failing = False
        self.routes: List[str] = []

    async def start(self) -> None:
        if self.address is None:
            log.error("host access off: VTEP address gives no host address in {range} "
                      "(its two low bytes land on the range's network, broadcast or gateway "
                      "address); give this host another VTEP address", range=HA.SUBNET)
            return
        self._loop = task.LoopingCall(lambda: defer.ensureDeferred(self.sync()))
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure("host access loop died", f))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def sync(self) -> None:
        """One pass; failures are logged once until a pass succeeds again."""
        try:
            await self.ovsdb.ensure_port(self.bridge, PORT, type="internal",
                                         external_ids={"contiv-role": "host-access"})
            await threads.deferToThread(plumb_link, self.address, self.mtu)
            subnets = default_subnets(await self.read_networks())
            if self.extra is not None:
                subnets = sorted(set(subnets) | set(await self.extra()))
            changed = await threads.deferToThread(set_routes, subnets)
        except Exception as err:  # noqa: BLE001 - retried next interval
            if not self._failing:
                log.warn("host access: {port} not in place ({err}); retrying every {n} s",
                         port=PORT, err=err, n=self.interval)
            self._failing = True
            return
        if self._failing or changed["added"] or changed["removed"]:
            log.info("host access: {port} {addr}, routes via {gw}: {routes}", port=PORT,
                     addr=self.address, gw=HA.GATEWAY, routes=", ".join(subnets) or "none")
        self._failing = False
        self.routes = subnets
