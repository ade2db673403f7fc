"""Service load balancing on plain data: compiled flows + service groups walked by the simulator
(select groups, conntrack DNAT, reverse NAT on replies, hairpin, provider removal, policy after NAT)."""

from __future__ import annotations

from twisted.trial import unittest

from contiv_sdn.pipeline import servicelb as S
from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.compiler import compile_all
from contiv_sdn.pipeline.simulator import ConnTrack, Fabric
from tests.test_pip_policy import ENDPOINTS, rule, snapshot

VIP = "10.1.1.100"


def provider(eid: str) -> S.Provider:
    e = ENDPOINTS[eid]
    return S.Provider(e.ip, e.mac, 1, e.host, e.port)


def fabric(providers=("web1", "web2"), rules=(), attach=None, conntrack=None, select=None):
    snap = snapshot(rules, attach)
    base = compile_all(snap)
    sp = S.ServicePort("t1:websvc", "t1", 1, (1, 2), 1, VIP, 6, 80, 8080,
                       tuple(provider(p) for p in providers))
    flows, groups = {}, {}
    for h, host in snap.hosts.items():
        f, g = S.host_services([sp], h, host.ports)
        flows[h] = list(base[h]) + f
        groups[h] = g
    return Fabric(flows, snap.hosts, conntrack=conntrack or ConnTrack(), groups_by_host=groups, select=select)


def syn(src: str, sport: int, dst: str = VIP, dport: int = 80) -> dict:
    e = ENDPOINTS[src]
    return {"eth_src": e.mac, "eth_dst": S.VIP_MAC, "eth_type": T.ETH_TYPE_IP, "ipv4_src": e.ip,
            "ipv4_dst": dst, "ip_proto": 6, "tcp_src": sport, "tcp_dst": dport, "ip_ttl": 64}


def reached(fab: Fabric, src: str, sport: int):
    """(provider port name, delivered packet) of a new connection from ``src``, or None."""
    tr = fab.trace(ENDPOINTS[src].host, ENDPOINTS[src].port, syn(src, sport))
    ds = [d for d in tr.deliveries if d.port_name in ("p-web1", "p-web2")]
    assert len(ds) <= 1, str(tr)
    return (ds[0].port_name, ds[0].packet) if ds else None


class ServiceDatapathTests(unittest.TestCase):
    def test_clients_on_either_host_reach_both_providers_with_dnat(self):
        fab = fabric()
        for client in ("cl0", "cl1"):  # cl0 on h1 (with web1), cl1 on h2 (with web2)
            seen = set()
            for sport in range(40000, 40050):
                got = reached(fab, client, sport)
                self.assertIsNotNone(got, f"{client}:{sport} reached no provider")
                name, pkt = got
                seen.add(name)
                self.assertEqual(pkt["ipv4_dst"], ENDPOINTS[name[2:]].ip)
                self.assertEqual((pkt["tcp_dst"], pkt["eth_dst"]), (8080, ENDPOINTS[name[2:]].mac))
                self.assertEqual(pkt["ipv4_src"], ENDPOINTS[client].ip)
            self.assertEqual(seen, {"p-web1", "p-web2"})

    def test_reply_is_reverse_nated_on_the_clients_switch(self):
        fab = fabric(select=lambda h, g, p: 1)  # bucket 1 = web2 (sorted by IP), on the other host
        name, pkt = reached(fab, "cl0", 41000)
        self.assertEqual(name, "p-web2")
        web2, cl0 = ENDPOINTS["web2"], ENDPOINTS["cl0"]
        reply = {"eth_src": web2.mac, "eth_dst": cl0.mac, "eth_type": T.ETH_TYPE_IP, "ipv4_src": web2.ip,
                 "ipv4_dst": cl0.ip, "ip_proto": 6, "tcp_src": 8080, "tcp_dst": 41000, "ip_ttl": 64}
        tr = fab.trace("h2", web2.port, reply)
        (d,) = [d for d in tr.deliveries if d.port_name == "p-cl0"]
        self.assertEqual((d.packet["ipv4_src"], d.packet["tcp_src"]), (VIP, 80), str(tr))
        # and the next packet of the connection follows conntrack, not the group
        fab.select = lambda h, g, p: 0
        self.assertEqual(reached(fab, "cl0", 41000)[0], "p-web2")

    def test_provider_removed_new_connections_go_to_the_survivor_established_stay(self):
        ct = ConnTrack()
        fab = fabric(conntrack=ct, select=lambda h, g, p: 0)  # web1
        self.assertEqual(reached(fab, "cl1", 42000)[0], "p-web1")
        fab2 = fabric(("web1",), conntrack=ct)  # web2 leaves: the group is modified
        self.assertEqual({reached(fab2, "cl1", s)[0] for s in range(42001, 42051)}, {"p-web1"})
        self.assertEqual(reached(fab2, "cl1", 42000)[0], "p-web1")  # the long-lived one
        # and the removed provider's connections: its flows are gone, they end
        ct2 = ConnTrack()
        before = fabric(conntrack=ct2, select=lambda h, g, p: 1)
        self.assertEqual(reached(before, "cl0", 43000)[0], "p-web2")
        self.assertIsNone(reached(fabric(("web1",), conntrack=ct2), "cl0", 43000))

    def test_no_provider_drops_at_the_group(self):
        tr = fabric(()).trace("h1", "p-cl0", syn("cl0", 44000))
        self.assertEqual(tr.deliveries, [])
        self.assertTrue(any("no buckets" in d.reason for d in tr.drops), str(tr))

    def test_hairpin_is_snated_to_the_vip_and_comes_back_out_of_the_same_port(self):
        fab = fabric(select=lambda h, g, p: 0)  # web1 reaches its own VIP and is chosen
        tr = fab.trace("h1", "p-web1", syn("web1", 45000))
        (d,) = [d for d in tr.deliveries if d.port_name == "p-web1"]
        web1 = ENDPOINTS["web1"]
        self.assertEqual((d.packet["ipv4_src"], d.packet["ipv4_dst"], d.packet["tcp_dst"]),
                         (VIP, web1.ip, 8080), str(tr))
        reply = {"eth_src": web1.mac, "eth_dst": S.VIP_MAC, "eth_type": T.ETH_TYPE_IP, "ipv4_src": web1.ip,
                 "ipv4_dst": VIP, "ip_proto": 6, "tcp_src": 8080, "tcp_dst": d.packet["tcp_src"], "ip_ttl": 64}
        tr = fab.trace("h1", "p-web1", reply)
        (d,) = [d for d in tr.deliveries if d.port_name == "p-web1"]
        self.assertEqual((d.packet["ipv4_src"], d.packet["tcp_src"], d.packet["ipv4_dst"], d.packet["tcp_dst"]),
                         (VIP, 80, web1.ip, 45000), str(tr))

    def test_policy_judges_the_real_destination_after_nat(self):
        deny = rule("t1:p", "1", "in", "deny", 5, "tcp", 8080, from_group="client")
        fab = fabric(rules=[deny], attach={"t1:web": ("t1:p",)})
        for sport in range(46000, 46020):
            self.assertIsNone(reached(fab, "cl0", sport))
        # the same rule on the service port (80) does not match: the provider port is what counts
        allow80 = rule("t1:p", "1", "in", "deny", 5, "tcp", 80, from_group="client")
        fab = fabric(rules=[allow80], attach={"t1:web": ("t1:p",)})
        self.assertIsNotNone(reached(fab, "cl0", 46100))

    def test_another_tenant_cannot_reach_the_vip(self):
        fab = fabric()
        tr = fab.trace("h2", "p-t2cl", syn("t2cl", 47000))
        self.assertEqual(tr.deliveries, [], str(tr))

    def test_flows_and_groups_grow_linearly(self):
        """The module doc's formula: S groups with S·P buckets; flows ≈ 3·S + S·P (+ constants)."""
        counts = []
        for s in (10, 20, 40):
            sps = [S.ServicePort(f"t:s{i}", "t", 1, (1,), 1, f"10.9.{i // 200}.{i % 200 + 1}", 6, 80, 8080,
                                 tuple(S.Provider(f"10.8.{i}.{j + 1}", f"02:00:00:{i // 256:02x}:{i % 256:02x}:{j + 1:02x}",
                                                  1, "other", f"p{j}") for j in range(10))) for i in range(s)]
            flows, groups = S.host_services(sps, "h", {})
            self.assertEqual(len(groups), s)
            self.assertEqual(sum(len(g.buckets) for g in groups), 10 * s)
            counts.append(len(flows))
        # 1 ARP->SVC + 4 stage defaults + 1 VRF NAT, then per service: VIP ARP, hairpin undo, VIP->group, 10 MACs
        self.assertEqual(counts, [6 + 13 * s for s in (10, 20, 40)])
