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


# -- the snapshot reads serviceLB records; the compilers install them -----------------------
def _store(**extra):
    """Store records as Redis holds them: a tenant, its network, labelled endpoints on two
    hosts, a serviceLB selecting app=web (the VIP as the netmaster allocated it)."""
    def ep(ip, host, labels, net="default:contiv-net"):
        n = int(ip.split(".")[-1])
        return {"network": net, "tenant": net.split(":")[0], "ipAddress": ip, "macAddress": f"02:02:14:01:01:{n:02x}",
                "homingHost": host, "intfName": f"cv{n}", "labels": labels}
    data = {
        "obj:global": {"global": {"fwdMode": "bridge"}},
        "tenant": {"default": {"vrfId": 1}, "blue": {"vrfId": 2}},
        "obj:network": {"default:contiv-net": {"encap": "vxlan", "subnet": "20.1.1.0/24"},
                        "blue:bn": {"encap": "vxlan", "subnet": "20.1.1.0/24"}},
        "network": {"default:contiv-net": {"netId": 1, "encap": "vxlan", "vni": 1001, "subnet": "20.1.1.0/24"},
                    "blue:bn": {"netId": 2, "encap": "vxlan", "vni": 1002, "subnet": "20.1.1.0/24"}},
        "host": {"node1": {"vtepIP": "192.168.50.1", "dpid": 11}, "node2": {"vtepIP": "192.168.50.2", "dpid": 12}},
        "endpoint": {
            "p1": ep("20.1.1.2", "node1", {"app": "web", "tier": "fe"}),  # a superset of the selectors
            "p2": ep("20.1.1.3", "node2", {"app": "web"}),
            "other": ep("20.1.1.4", "node2", {"app": "db"}),
            "client": ep("20.1.1.5", "node1", {}),
            "blue": ep("20.1.1.6", "node2", {"app": "web"}, "blue:bn"),  # another tenant
        },
        "serviceLB": {"default:web": {"key": "default:web", "tenant": "default", "serviceName": "web",
                                      "networkName": "contiv-net", "network": "default:contiv-net",
                                      "ipAddress": "20.1.1.100", "ports": ["80:8080:TCP", "53:53:UDP"],
                                      "selectors": {"app": "web"}}},
    }
    for kind, recs in extra.items():
        data.setdefault(kind, {}).update(recs)
    return data


class SnapshotServiceTests(unittest.TestCase):
    def test_providers_are_the_tenants_endpoints_with_every_selector(self):
        from contiv_sdn.controller.snapshot import build_checked
        built = build_checked(1, _store(), {})
        self.assertEqual(built.refused, ())
        sv = built.snapshot.services["default:web"]
        self.assertEqual((sv.vip, sv.network, sv.providers), ("20.1.1.100", "default:contiv-net", ("p1", "p2")))
        self.assertEqual(sv.ports, ((53, 53, 17), (80, 8080, 6)))

    def test_the_oper_view_shows_the_same_providers(self):
        """master/servicelb.py (``netctl service inspect``) decides with the same function."""
        from contiv_sdn.master.servicelb import providers
        data = _store()
        eps = {k: dict(v, id=k) for k, v in data["endpoint"].items()}
        self.assertEqual([e["id"] for e in providers(eps, "default", {"app": "web"})], ["p1", "p2"])
        self.assertEqual(providers(eps, "default", {"app": "web", "tier": "fe"}), [eps["p1"]])
        self.assertEqual(providers(eps, "default", {}), [])

    def test_wrong_records_are_refused_and_incomplete_ones_left_out(self):
        from contiv_sdn.controller.snapshot import build_checked
        built = build_checked(1, _store(serviceLB={
            "default:badport": {"tenant": "default", "network": "default:contiv-net", "ipAddress": "20.1.1.101",
                                "ports": ["80:x:TCP"], "selectors": {"a": "b"}},
            "default:badsel": {"tenant": "default", "network": "default:contiv-net", "ipAddress": "20.1.1.102",
                               "ports": ["80:80:TCP"], "selectors": {"a": 1}},
            "default:novip": {"tenant": "default", "network": "default:contiv-net", "ipAddress": "",
                              "ports": ["80:80:TCP"], "selectors": {"a": "b"}},
            "default:nonet": {"tenant": "default", "network": "default:gone", "ipAddress": "20.1.1.103",
                              "ports": ["80:80:TCP"], "selectors": {"a": "b"}},
        }), {})
        self.assertEqual(sorted(built.snapshot.services), ["default:web"])
        refused = {r.key: r.reason for r in built.refused}
        self.assertEqual(sorted(refused), ["default:badport", "default:badsel"])
        self.assertIn("ports must be numbers", refused["default:badport"])
        self.assertIn("string", refused["default:badsel"])

    def test_compiled_hosts_get_the_group_and_a_label_change_moves_it(self):
        from contiv_sdn.controller.snapshot import build_snapshot
        from contiv_sdn.pipeline.compiler import compile_hosts
        ports = {11: {"vxlan0": 1, "cv2": 5, "cv5": 6}, 12: {"vxlan0": 1, "cv3": 5, "cv4": 6}}
        out = compile_hosts(build_snapshot(1, _store(), ports), ["node1", "node2"])
        self.assertEqual(out.failed, ())
        for host in ("node1", "node2"):
            by_port = {len(g.buckets) for g in out.groups[host]}
            self.assertEqual((len(out.groups[host]), by_port), (2, {2}), host)
        self.assertEqual(out.groups["node1"], out.groups["node2"])
        # "other" relabelled app=web: it joins at once, the groups gain a bucket
        data = _store()
        data["endpoint"]["other"]["labels"] = {"app": "web"}
        out2 = compile_hosts(build_snapshot(2, data, ports), ["node1"])
        self.assertEqual({len(g.buckets) for g in out2.groups["node1"]}, {3})
        self.assertEqual({g.group_id for g in out2.groups["node1"]}, {g.group_id for g in out.groups["node1"]})


class AffinityIncrementalEqualsFull(unittest.TestCase):
    """The incremental compiler equals a full compile with ClientIP affinity coming and
    going on the services (tables 22-24, the resubmitting buckets) among random changes."""

    def test_random_changes_with_affinity(self) -> None:
        import dataclasses

        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        from contiv_sdn.pipeline.incremental import IncrementalCompiler
        from tests.test_pip_incremental import OPS, SVCS, IncrementalEqualsFull, Model, _seed

        @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(st.tuples(OPS, st.integers(0, 7)), min_size=1, max_size=20))
        def run(steps):
            m = Model()
            _seed(m)
            eng = IncrementalCompiler()
            held: dict = {}
            groups: dict = {}
            check = IncrementalEqualsFull._check
            check(self, m, eng, held, groups)
            for op, toggle in steps:
                m.apply(op)
                key = SVCS[toggle % len(SVCS)]
                sv = m.services.get(key)
                if sv is not None and toggle < 6:
                    m.services[key] = dataclasses.replace(
                        sv, affinity_timeout=0 if sv.affinity_timeout else 30 + toggle)
                check(self, m, eng, held, groups)
                if any(f.table == T.SVC_AFF_LEARN for f in eng.flows("h1") or ()):
                    covered.append(op)

        covered: list = []
        run()
        self.assertTrue(covered, "no example compiled an affinity service")
