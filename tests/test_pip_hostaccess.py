"""Host access on plain data: compiled flows walked by the simulator (``pipeline/hostaccess.py``).

Three hosts: h1 and h2 with the host-access port, h3 without.  Tenant ``default``
with two VXLAN networks (``other`` only has an endpoint on h2, so in bridge mode h1
compiles nothing of it but host access), tenant ``blue`` reusing the subnet.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Dict, Optional

from twisted.trial import unittest

from contiv_sdn.pipeline import hostaccess as HA
from contiv_sdn.pipeline import servicelb as S
from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.compiler import compile_hosts
from contiv_sdn.pipeline.simulator import ConnTrack, Fabric
from contiv_sdn.pipeline.state import (ROUTER_MAC, Endpoint, GlobalCfg, Group, Host, Network, Rule, Service,
                                       Snapshot, Tenant)

TENANTS = {"default": Tenant("default", 1), "blue": Tenant("blue", 2)}
NETWORKS = {n.key: n for n in (
    Network("default:net", "default", "net", "vxlan", 5001, 1, "10.1.1.0/24", "10.1.1.254"),
    Network("default:other", "default", "other", "vxlan", 5002, 2, "10.1.2.0/24", "10.1.2.254"),
    Network("blue:net", "blue", "net", "vxlan", 6001, 3, "10.1.1.0/24", "10.1.1.254"),
)}
_EPS = [  # id, host, network, ip, group id
    ("a1", "h1", "default:net", "10.1.1.10", 10),
    ("a2", "h2", "default:net", "10.1.1.11", 0),
    ("o2", "h2", "default:other", "10.1.2.5", 0),
    ("a3", "h3", "default:net", "10.1.1.12", 0),
    ("b1", "h1", "blue:net", "10.1.1.20", 0),
    ("b2", "h2", "blue:net", "10.1.1.21", 0),
]
EPS = {eid: Endpoint(eid, host, net, ip, f"02:00:00:00:00:{i + 1:02x}", f"p-{eid}", "default:web" if g else None, g)
       for i, (eid, host, net, ip, g) in enumerate(_EPS)}
VIP = "10.1.1.100"
H1_ADDR, H2_ADDR = "172.19.50.1", "172.19.50.2"


def hosts(with_port=("h1", "h2")) -> Dict[str, Host]:
    out = {}
    for i, name in enumerate(("h1", "h2", "h3"), 1):
        ports = {"vxlan0": 1}
        ports.update({e.port: 10 + n for n, e in enumerate(EPS.values()) if e.host == name})
        if name in with_port:
            ports[HA.PORT] = 5
        out[name] = Host(name, i, f"192.168.50.{i}", MappingProxyType(ports))
    return out


def snapshot(fwd: str = "bridge", rules=(), service: bool = False, with_port=("h1", "h2")) -> Snapshot:
    f = MappingProxyType
    groups = {"default:web": Group("default:web", "default", "default:net", 10,
                                   ("default:p",) if rules else ())}
    services = {}
    if service:
        services["default:websvc"] = Service("default:websvc", "default", "default:net", VIP,
                                             ports=((80, 8080, 6),), selectors=(("app", "web"),),
                                             providers=("a1", "a2"))
    return Snapshot(1, GlobalCfg(fwd, "proxy"), f(TENANTS), f(NETWORKS), f(groups), f(hosts(with_port)),
                    f(dict(EPS)), f({r.key: r for r in rules}), services=f(services))


def fabric(snap: Snapshot, conntrack: Optional[ConnTrack] = None, select=None) -> Fabric:
    c = compile_hosts(snap, snap.hosts)
    return Fabric(c.flows, snap.hosts, conntrack=conntrack or ConnTrack(), groups_by_host=c.groups, select=select)


def tcp(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int, flags: str = "S") -> dict:
    return {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": T.ETH_TYPE_IP, "ipv4_src": src, "ipv4_dst": dst,
            "ip_proto": 6, "tcp_src": sport, "tcp_dst": dport, "ip_ttl": 64}


def from_host(addr: str, dst: str, sport: int = 40000, dport: int = 80) -> dict:
    return tcp(HA.host_mac(addr), ROUTER_MAC, addr, dst, sport, dport)


def to_ip(ep: str, dst: str, sport: int = 80, dport: int = 40000) -> dict:
    e = EPS[ep]
    return tcp(e.mac, ROUTER_MAC, e.ip, dst, sport, dport)


def delivered(tr, port: str):
    ds = [d for d in tr.deliveries if d.port_name == port]
    return ds[0].packet if len(ds) == 1 else None


class AddressTests(unittest.TestCase):
    def test_address_and_mac_come_from_the_vtep(self):
        self.assertEqual(HA.host_address("192.168.50.1"), H1_ADDR)
        self.assertEqual(HA.host_mac(H1_ADDR), "02:02:ac:13:32:01")
        # the range's network, broadcast and gateway addresses are never a host's
        for vtep in ("10.0.0.0", "10.0.255.255", "10.0.0.1", "bad"):
            self.assertIsNone(HA.host_address(vtep), vtep)

    def test_two_hosts_with_one_address_the_first_keeps_it(self):
        hs = {n: Host(n, i, v, MappingProxyType({HA.PORT: 5}))
              for i, (n, v) in enumerate((("a", "10.0.7.9"), ("b", "10.9.7.9"), ("c", "10.0.7.10")))}
        got = HA.peers(hs, {n: h.vtep_ip for n, h in hs.items()})
        self.assertEqual(got, (("a", "172.19.7.9", "10.0.7.9"), ("c", "172.19.7.10", "10.0.7.10")))


class HostAccessTests(unittest.TestCase):
    def _both_modes(self):
        for fwd in ("bridge", "routing"):
            yield fwd, fabric(snapshot(fwd))

    def test_host_reaches_a_local_container(self):
        for fwd, fab in self._both_modes():
            pkt = delivered(fab.trace("h1", HA.PORT, from_host(H1_ADDR, EPS["a1"].ip)), "p-a1")
            self.assertIsNotNone(pkt, fwd)
            self.assertEqual((pkt["eth_dst"], pkt["eth_src"], pkt["ipv4_src"], pkt["ip_ttl"]),
                             (EPS["a1"].mac, ROUTER_MAC, H1_ADDR, 63), fwd)

    def test_host_reaches_remote_containers_and_their_replies_come_back(self):
        for fwd, fab in self._both_modes():
            # o2's network has no endpoint on h1: bridge mode compiles nothing of it there but host access
            for ep, port in (("a2", "p-a2"), ("o2", "p-o2")):
                tr = fab.trace("h1", HA.PORT, from_host(H1_ADDR, EPS[ep].ip, 40001))
                pkt = delivered(tr, port)
                self.assertIsNotNone(pkt, f"{fwd} {ep}: {tr}")
                self.assertEqual((pkt["ipv4_src"], pkt["eth_dst"]), (H1_ADDR, EPS[ep].mac))
                tr = fab.trace("h2", port, to_ip(ep, H1_ADDR, 80, 40001))
                back = delivered(tr, HA.PORT)
                self.assertIsNotNone(back, f"{fwd} {ep} reply: {tr}")
                self.assertEqual((back["eth_dst"], back["ipv4_src"]), (HA.host_mac(H1_ADDR), EPS[ep].ip), str(tr))
                self.assertEqual([t.packet["tunnel_id"] for t in tr.transmissions], [HA.VNI], str(tr))

    def test_container_reaches_its_host_through_its_gateway(self):
        for fwd, fab in self._both_modes():
            a1 = EPS["a1"]
            arp = {"eth_src": a1.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": T.ETH_TYPE_ARP,
                   "arp_op": T.ARP_REQUEST, "arp_spa": a1.ip, "arp_sha": a1.mac, "arp_tpa": "10.1.1.254",
                   "arp_tha": "00:00:00:00:00:00"}
            ans = delivered(fab.trace("h1", "p-a1", arp), "p-a1")
            self.assertEqual((ans["arp_op"], ans["arp_sha"]), (T.ARP_REPLY, ROUTER_MAC), fwd)
            pkt = delivered(fab.trace("h1", "p-a1", to_ip("a1", H1_ADDR, 45000, 22)), HA.PORT)
            self.assertIsNotNone(pkt, fwd)
            self.assertEqual((pkt["eth_dst"], pkt["ipv4_src"]), (HA.host_mac(H1_ADDR), a1.ip))

    def test_host_arp_for_its_gateway_is_answered_and_nothing_else(self):
        fab = fabric(snapshot())
        mac = HA.host_mac(H1_ADDR)
        arp = {"eth_src": mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": T.ETH_TYPE_ARP, "arp_op": T.ARP_REQUEST,
               "arp_spa": H1_ADDR, "arp_sha": mac, "arp_tpa": HA.GATEWAY, "arp_tha": "00:00:00:00:00:00"}
        ans = delivered(fab.trace("h1", HA.PORT, arp), HA.PORT)
        self.assertEqual((ans["arp_sha"], ans["arp_spa"]), (ROUTER_MAC, HA.GATEWAY))
        self.assertEqual(fab.trace("h1", HA.PORT, dict(arp, arp_tpa=EPS["a1"].ip)).deliveries, [])
        # a spoofed source address from the host's port is dropped
        self.assertEqual(fab.trace("h1", HA.PORT, dict(from_host(H1_ADDR, EPS["a1"].ip),
                                                       ipv4_src="172.19.9.9")).deliveries, [])

    def test_another_tenant_is_not_reached_and_does_not_reach_the_host(self):
        for fwd, fab in self._both_modes():
            for ep in ("b1", "b2"):
                tr = fab.trace("h1", HA.PORT, from_host(H1_ADDR, EPS[ep].ip))
                self.assertEqual(tr.deliveries, [], f"{fwd}: {tr}")
                self.assertEqual(tr.transmissions, [], f"{fwd}: {tr}")
            tr = fab.trace("h1", "p-b1", to_ip("b1", H1_ADDR, 45000, 22))
            self.assertEqual(tr.deliveries, [], f"{fwd}: {tr}")

    def test_a_host_without_the_port_has_no_host_access_flows(self):
        c = compile_hosts(snapshot(), ("h1", "h2", "h3"))
        kind = lambda f: (f.cookie >> 32) & 0xFFFF  # noqa: E731
        self.assertFalse([f for f in c.flows["h3"] if kind(f) == 7])
        self.assertTrue([f for f in c.flows["h1"] if kind(f) == 7])
        # h3's endpoint is still reached by h1's host (its reply needs h3's port: not there)
        fab = fabric(snapshot())
        self.assertIsNotNone(delivered(fab.trace("h1", HA.PORT, from_host(H1_ADDR, EPS["a3"].ip)), "p-a3"))
        self.assertEqual(fab.trace("h3", "p-a3", to_ip("a3", H1_ADDR)).deliveries, [])
        # nobody has the port: nothing at all
        none = compile_hosts(snapshot(with_port=()), ("h1", "h2", "h3"))
        self.assertFalse([f for fl in none.flows.values() for f in fl if kind(f) == 7])

    def test_flow_count_follows_the_formula(self):
        kind = lambda f: (f.cookie >> 32) & 0xFFFF  # noqa: E731
        for service, svc in ((False, 0), (True, 1)):
            c = compile_hosts(snapshot(service=service), ("h1",))
            got = len([f for f in c.flows["h1"] if kind(f) == 7])
            # a1, a2, o2, a3 (4 endpoints), 2 networks with gateways, h2 has the port, a tunnel
            self.assertEqual(got, HA.formula(4, 2, 2, 1, bool(svc), True))

    def test_policy_applies_to_the_host(self):
        deny = Rule("default:p:1", "default", "default:p", "in", "deny", 5, "tcp", 80, from_ip="172.19.0.0/16")
        fab = fabric(snapshot(rules=[deny]))
        self.assertIsNone(delivered(fab.trace("h1", HA.PORT, from_host(H1_ADDR, EPS["a1"].ip)), "p-a1"))
        self.assertIsNotNone(delivered(fab.trace("h1", HA.PORT, from_host(H1_ADDR, EPS["a1"].ip, dport=81)),
                                       "p-a1"))
        self.assertIsNotNone(delivered(fab.trace("h1", HA.PORT, from_host(H1_ADDR, EPS["a2"].ip)), "p-a2"))

    def test_host_reaches_a_vip_both_providers_and_replies_are_reverse_nated(self):
        for fwd in ("bridge", "routing"):
            for host, addr in (("h1", H1_ADDR), ("h2", H2_ADDR)):
                for bucket, ep in ((0, "a1"), (1, "a2")):  # buckets sorted by IP: a1, a2
                    fab = fabric(snapshot(fwd, service=True), select=lambda h, g, p, b=bucket: b)
                    tr = fab.trace(host, HA.PORT, from_host(addr, VIP, 41000 + bucket))
                    pkt = delivered(tr, f"p-{ep}")
                    self.assertIsNotNone(pkt, f"{fwd} {host} -> {ep}: {tr}")
                    self.assertEqual((pkt["ipv4_dst"], pkt["tcp_dst"], pkt["ipv4_src"]), (EPS[ep].ip, 8080, addr))
                    tr = fab.trace(EPS[ep].host, f"p-{ep}", to_ip(ep, addr, 8080, 41000 + bucket))
                    back = delivered(tr, HA.PORT)
                    self.assertIsNotNone(back, f"{fwd} {ep} -> {host}: {tr}")
                    self.assertEqual((back["ipv4_src"], back["tcp_src"]), (VIP, 80), str(tr))


class AgentRouteTests(unittest.TestCase):
    def test_routes_are_the_default_tenants_vxlan_subnets(self):
        from contiv_sdn.agent.hostport import default_subnets
        recs = {"default:a": '{"encap": "vxlan", "subnet": "10.1.1.0/24"}',
                "default:b": '{"subnet": "10.1.2.7/24"}',  # encap absent: vxlan; host bits dropped
                "default:v": '{"encap": "vlan", "subnet": "10.1.3.0/24"}',
                "blue:a": '{"encap": "vxlan", "subnet": "10.9.0.0/16"}',
                "default:bad": '{"subnet": 5}', "default:junk": "not json", "default:nan": '{"subnet": NaN}'}
        self.assertEqual(default_subnets(recs), ["10.1.1.0/24", "10.1.2.0/24"])
