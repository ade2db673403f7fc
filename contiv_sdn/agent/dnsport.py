"""The DNS serving path's host side: a port per VRF into a private namespace, a listener per VRF.

Why this shape: containers must reach the per-host DNS server with no change to
the application, and tenants may reuse the same subnets, so the server must
learn the asker's tenant from the datapath, not from the source address alone.

* br-int sends a local endpoint's UDP/TCP to port 53 (any destination: Docker's
  embedded resolver forwards to the daemon's upstreams, CNI containers ask the
  gateway) to its VRF's port ``cdns<vrf>`` (``pipeline.compiler``).
* ``cdns<vrf>`` is a veth on br-int whose peer ``d<vrf>`` lives in the agent's
  DNS namespace (``--dns-netns``, default ``contiv-dns``; kept across agent
  restarts) with the address ``vrf_address(vrf)/32````
  (a veth per VRF rather than VLAN subinterfaces: kernels without 8021q exist,
  this lab's among them).  iptables there DNATs port 53 arriving on ``d<vrf>`` to
  that address, in conntrack zone ``vrf`` (identical tuples of two tenants never
  meet), and un-NATs the answers, which policy routing (``from vrf_address lookup
  <vrf>``) sends back out of ``d<vrf>`` via a fake next hop with a static
  neighbour.  br-int then sends (DNS port, destination IP) to the endpoint.
* The listening sockets are created *inside* the namespace and adopted by the
  reactor, scoped to the tenant (:meth:`DNSService.adopt_tenant`); the
  forwarder stays in the host namespace.

Cost: one veth pair (an OVS port), four iptables rules and one policy rule per
tenant; a query takes two more hops through the kernel (the namespace) than a
direct one.  The namespace, veths and rules stay when the netplugin stops (a
restart then replaces no flow); names are answered again once it is back.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any, Dict, Sequence, Tuple

from twisted.internet import defer, threads
from twisted.logger import Logger

from contiv_sdn.dns.service import vrf_address
from contiv_sdn.pipeline.state import DNS_MAC, ROUTER_MAC, dns_port_name

log = Logger()

#: the fake next hop of the answers (never on the wire: br-int rewrites eth_dst)
NEXT_HOP = "169.254.255.254"


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=15)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def plumb_namespace(ns: str) -> None:
    """Make namespace ``ns`` unless it is there and usable (blocking: run in a thread).

    Kept, never removed by the agent: its veths (and so their ports' numbers and
    the flows naming them) outlive an agent restart, as the endpoints' do.  A name
    whose namespace is gone (its pinning mount lost) is made again."""
    x = ["ip", "netns", "exec", ns]
    if os.path.exists(f"/run/netns/{ns}") and _run(x + ["true"], check=False).returncode != 0:
        _run(["ip", "netns", "del", ns], check=False)
    if not os.path.exists(f"/run/netns/{ns}"):
        _run(["ip", "netns", "add", ns])
    for key in ("all", "default"):
        _run(x + ["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"])
        _run(x + ["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)
    _run(x + ["ip", "link", "set", "lo", "up"])


def plumb_vrf(ns: str, vrf: int) -> bool:
    """The veth, address, routes, neighbour and NAT of one VRF (idempotent); True if
    the veth was made anew (its OVS port must then be re-added: the switch would
    keep the old device's handle)."""
    dev, addr = f"d{vrf}", vrf_address(vrf)

    def _ns(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", ns, *argv], check=check)

    port = dns_port_name(vrf)
    fresh = _ns("ip", "link", "show", dev, check=False).returncode != 0
    if fresh:
        _run(["ip", "link", "del", port], check=False)
        _run(["ip", "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns])
    _run(["sysctl", "-qw", f"net.ipv6.conf.{port}.disable_ipv6=1"], check=False)
    _run(["ip", "link", "set", port, "up"])
    _ns("ip", "link", "set", dev, "address", DNS_MAC)
    _ns("ip", "link", "set", dev, "up")
    # TX checksum offload off on both ends, as on the endpoints' veths: the
    # userspace datapath would pass the answers on with their checksums unfilled
    from contiv_sdn.agent.plumbing import netns_sockets, set_tx_checksum
    for sock, name in ((netns_sockets(f"/run/netns/{ns}", [(socket.AF_INET, socket.SOCK_DGRAM, 0)])[0],
                        dev), (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), port)):
        with sock:
            set_tx_checksum(sock, name, False)
    _ns("ip", "addr", "replace", f"{addr}/32", "dev", dev)
    _ns("ip", "neigh", "replace", NEXT_HOP, "lladdr", ROUTER_MAC, "dev", dev, "nud", "permanent")
    _ns("ip", "route", "replace", NEXT_HOP, "dev", dev, "table", str(vrf))
    _ns("ip", "route", "replace", "default", "via", NEXT_HOP, "dev", dev, "onlink", "table", str(vrf))
    if f"lookup {vrf}" not in _ns("ip", "rule", "show", "from", addr).stdout:
        _ns("ip", "rule", "add", "from", addr, "lookup", str(vrf))
    rules = [("raw", "PREROUTING", ["-i", dev, "-j", "CT", "--zone", str(vrf)]),
             ("raw", "OUTPUT", ["-s", addr, "-j", "CT", "--zone", str(vrf)])]
    for proto in ("udp", "tcp"):
        rules.append(("nat", "PREROUTING", ["-i", dev, "-p", proto, "--dport", "53", "-j", "DNAT",
                                            "--to-destination", f"{addr}:53"]))
    for table, chain, spec in rules:
        if _ns("iptables", "-t", table, "-C", chain, *spec, check=False).returncode != 0:
            _ns("iptables", "-t", table, "-A", chain, *spec)
    return fresh


def open_sockets(ns: str, vrf: int) -> Tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on ``vrf_address(vrf):53`` in namespace ``ns``
    (blocking: run in a thread)."""
    from contiv_sdn.agent.plumbing import netns_sockets
    udp, tcp = netns_sockets(f"/run/netns/{ns}", [(socket.AF_INET, socket.SOCK_DGRAM, 0),
                                                  (socket.AF_INET, socket.SOCK_STREAM, 0)])
    try:
        addr = vrf_address(vrf)
        udp.bind((addr, 53))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((addr, 53))
        tcp.listen(128)
        for s in (udp, tcp):
            s.setblocking(False)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


class DNSPort:
    """Keeps the namespace's VRFs and the DNS service's adopted listeners equal to the
    tenants in the store (called after each DNS view rebuild)."""

    def __init__(self, dns: Any, netns: str) -> None:
        self.dns = dns
        self.ns = netns
        self.ready = False
        self.vrfs: Dict[str, int] = {}
        self.ovsdb: Any = None
        self.bridge = ""
        self._lock = defer.DeferredLock()
        self._failed: Dict[str, str] = {}

    async def start(self, ovsdb: Any, bridge: str) -> None:
        await threads.deferToThread(plumb_namespace, self.ns)
        self.ovsdb, self.bridge = ovsdb, bridge
        self.ready = True
        log.info("DNS serving path: namespace {ns}, a port cdns<vrf> on {bridge} per tenant",
                 ns=self.ns, bridge=bridge)

    def sync(self, tenants: Dict[str, int]) -> defer.Deferred:
        """``tenants``: tenant name -> VRF id, from ``state:tenant`` (one sync at a time)."""
        return self._lock.run(lambda: defer.ensureDeferred(self._sync(tenants)))

    async def _sync(self, tenants: Dict[str, int]) -> None:
        if not self.ready:
            return
        for tenant, vrf in sorted(self.vrfs.items()):
            if tenants.get(tenant) != vrf:
                # gone (or its id reused): free the address for the VRF's next tenant;
                # the veth and rules stay, they are the VRF's, not the tenant's
                await self.dns.unlisten_tenant(tenant, vrf_address(vrf), 53)
                del self.vrfs[tenant]
        for tenant, vrf in sorted(tenants.items()):
            if tenant in self.vrfs:
                continue
            try:
                if await threads.deferToThread(plumb_vrf, self.ns, vrf):
                    await self.ovsdb.delete_port(self.bridge, dns_port_name(vrf))
                await self.ovsdb.ensure_port(self.bridge, dns_port_name(vrf))
                udp, tcp = await threads.deferToThread(open_sockets, self.ns, vrf)
            except Exception as e:  # noqa: BLE001 - said once, retried at the next rebuild
                if self._failed.get(tenant) != str(e):
                    self._failed[tenant] = str(e)
                    log.error("DNS serving path for tenant {t} (VRF {v}) failed: {err}; retried "
                              "at the next change", t=tenant, v=vrf, err=e)
                continue
            self._failed.pop(tenant, None)
            try:
                self.dns.adopt_tenant(tenant, udp, tcp)
            finally:
                udp.close()
                tcp.close()
            self.vrfs[tenant] = vrf
