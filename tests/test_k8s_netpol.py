"""Kubernetes NetworkPolicy: selectors, the v1 spec's translation, and enforcement in compiled flows.

Plain data, no switch: the selector and spec tests check :mod:`drivers.kubernetes.netpol`
field by field; the scenario tests compile snapshots (full compile, and the
incremental engine, which must agree) and walk packets through the simulator's
conntrack, checking for each scenario both a connection that must pass and one
that must not.

The cluster: two hosts on VXLAN, one Contiv network 10.1.1.0/24, namespaces
``prod`` (env=prod), ``dev`` (env=dev) and ``kube-system``, and one endpoint that
is not a pod (``ext``).
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from contiv_sdn.controller.snapshot import build_checked
from contiv_sdn.openflow import codec
from contiv_sdn.pipeline import k8s as K8
from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.compiler import compile_all, diagnose
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK
from contiv_sdn.pipeline.incremental import IncrementalCompiler
from contiv_sdn.pipeline.simulator import ConnTrack, trace
from contiv_sdn.pipeline.state import Endpoint, GlobalCfg, Group, Host, Network, Rule, Snapshot, Tenant
from contiv_sdn.testing import require_binary, require_root
from drivers.kubernetes import netpol as NP

F = MappingProxyType


# --------------------------------------------------------------------------
# Selectors.
# --------------------------------------------------------------------------
class SelectorTests(unittest.TestCase):
    def sel(self, obj: Any) -> NP.Selector:
        return NP.parse_selector(obj)

    def test_empty_selector_selects_everything(self):
        s = self.sel({})
        self.assertTrue(s.empty)
        self.assertTrue(s.matches({}))
        self.assertTrue(s.matches({"a": "b"}))

    def test_match_labels_all_must_hold(self):
        s = self.sel({"matchLabels": {"app": "web", "tier": "fe"}})
        self.assertTrue(s.matches({"app": "web", "tier": "fe", "x": "y"}))
        self.assertFalse(s.matches({"app": "web"}))
        self.assertFalse(s.matches({"app": "web", "tier": "be"}))

    def test_in_and_not_in(self):
        s = self.sel({"matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]})
        self.assertTrue(s.matches({"env": "b"}))
        self.assertFalse(s.matches({"env": "c"}))
        self.assertFalse(s.matches({}), "In needs the key")
        s = self.sel({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["a"]}]})
        self.assertTrue(s.matches({"env": "b"}))
        self.assertTrue(s.matches({}), "NotIn holds for a pod without the key")
        self.assertFalse(s.matches({"env": "a"}))

    def test_exists_and_does_not_exist(self):
        s = self.sel({"matchExpressions": [{"key": "k", "operator": "Exists"}]})
        self.assertTrue(s.matches({"k": ""}))
        self.assertFalse(s.matches({"j": "x"}))
        s = self.sel({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]})
        self.assertFalse(s.matches({"k": "x"}))
        self.assertTrue(s.matches({}))

    def test_labels_and_expressions_are_anded(self):
        s = self.sel({"matchLabels": {"app": "web"},
                      "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]})
        self.assertTrue(s.matches({"app": "web", "env": "prod"}))
        self.assertFalse(s.matches({"app": "web", "env": "dev"}))
        self.assertFalse(s.matches({"app": "db", "env": "prod"}))

    def test_malformed_selectors_say_what_is_wrong(self):
        for bad, text in (
                ({"matchExpressions": [{"key": "a", "operator": "Has"}]}, "is not one of"),
                ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "must be non-empty"),
                ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "must be empty"),
                ({"matchLabels": {"a": 1}}, "expected a string"),
                ([], "expected an object")):
            with self.assertRaises(NP.NetpolError) as cm:
                self.sel(bad)
            self.assertIn(text, str(cm.exception))


# --------------------------------------------------------------------------
# The spec, field by field.
# --------------------------------------------------------------------------
def parse(spec: Any, ns: str = "prod") -> NP.Policy:
    return NP.parse_policy(ns, "p", spec)


class TranslationTests(unittest.TestCase):
    def test_pod_selector_empty_or_missing_selects_the_whole_namespace(self):
        for spec in ({"podSelector": {}}, {}):
            p = parse(spec)
            self.assertTrue(NP.selects(p, NP.PodKey("prod", (("a", "b"),))))
            self.assertFalse(NP.selects(p, NP.PodKey("dev", (("a", "b"),))), "only its own namespace")
        p = parse({"podSelector": {"matchLabels": {"app": "web"}}})
        self.assertTrue(NP.selects(p, NP.PodKey("prod", (("app", "web"),))))
        self.assertFalse(NP.selects(p, NP.PodKey("prod", (("app", "db"),))))

    def test_policy_types_defaults(self):
        p = parse({"podSelector": {}})
        self.assertEqual((p.ingress, p.egress), ((), None), "Ingress always: a default deny ingress")
        p = parse({"podSelector": {}, "egress": [{}]})
        self.assertEqual((p.ingress, p.egress), ((), (NP.PRule(),)), "Egress when egress rules are present")
        p = parse({"podSelector": {}, "egress": []})
        self.assertIsNone(p.egress, "an empty egress list is no egress rule")
        p = parse({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})
        self.assertEqual((p.ingress, p.egress), (None, ()), "explicit types: ingress rules ignored, deny egress")
        p = parse({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        self.assertEqual((p.ingress, p.egress), ((), ()))
        with self.assertRaises(NP.NetpolError):
            parse({"policyTypes": ["Both"]})

    def test_rules_peers_and_ports(self):
        p = parse({"ingress": [{}, {"from": [], "ports": []}]})
        self.assertEqual(p.ingress, (NP.PRule(None, None), NP.PRule(None, None)), "empty from/ports: all")
        p = parse({"ingress": [{"from": [
            {"podSelector": {"matchLabels": {"a": "1"}}},
            {"namespaceSelector": {}},
            {"podSelector": {}, "namespaceSelector": {"matchLabels": {"env": "dev"}}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]})
        peers = p.ingress[0].peers
        self.assertEqual(peers[0], NP.Peer(pod=NP.Selector((NP.Requirement("a", "In", ("1",)),))))
        self.assertEqual(peers[1], NP.Peer(ns=NP.EVERYTHING))
        self.assertEqual(peers[2].pod, NP.EVERYTHING)
        self.assertEqual(peers[3], NP.Peer(cidr="10.0.0.0/8", excepts=("10.1.0.0/16",)))
        p = parse({"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [
            {"port": 80}, {"protocol": "UDP", "port": 53}, {"protocol": "SCTP"}, {"port": "http"},
            {"port": 8000, "endPort": 8080}, {"port": "443"}]}]})
        self.assertEqual(p.egress[0].ports, (NP.Port("TCP", 80), NP.Port("UDP", 53), NP.Port("SCTP", None),
                                             NP.Port("TCP", "http"), NP.Port("TCP", 8000, 8080),
                                             NP.Port("TCP", 443)))

    def test_malformed_specs_are_refused_with_the_field(self):
        for spec, text in (
                ({"ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}]}, "only IPv4"),
                ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
                 "not strictly within"),
                ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
                 "may not be combined"),
                ({"ingress": [{"from": [{}]}]}, "a peer needs"),
                ({"ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "not one of TCP, UDP, SCTP"),
                ({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "needs a numeric port"),
                ({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "endPort"),
                ({"ingress": [{"ports": [{"port": 0}]}]}, "not in 1..65535"),
                ({"ingress": {"from": []}}, "expected a list"),
                ({"podSelector": {"matchLabels": "x"}}, "expected an object")):
            with self.assertRaises(NP.NetpolError) as cm:
                parse(spec)
            self.assertIn(text, str(cm.exception), spec)
            self.assertIn("networkpolicy prod/p", str(cm.exception))

    def test_peer_semantics(self):
        ns = {"prod": NP.namespace_labels("prod", {"env": "prod"}), "dev": NP.namespace_labels("dev", {"env": "dev"})}
        web_dev = NP.PodKey("dev", (("app", "web"),))
        web_prod = NP.PodKey("prod", (("app", "web"),))
        pod_only = NP.Peer(pod=NP.parse_selector({"matchLabels": {"app": "web"}}))
        self.assertTrue(NP.peer_selects(pod_only, "prod", web_prod, ns))
        self.assertFalse(NP.peer_selects(pod_only, "prod", web_dev, ns), "podSelector alone: own namespace")
        ns_only = NP.Peer(ns=NP.parse_selector({"matchLabels": {"env": "dev"}}))
        self.assertTrue(NP.peer_selects(ns_only, "prod", web_dev, ns))
        self.assertFalse(NP.peer_selects(ns_only, "prod", web_prod, ns))
        both = NP.Peer(pod=NP.parse_selector({"matchLabels": {"app": "db"}}), ns=ns_only.ns)
        self.assertFalse(NP.peer_selects(both, "prod", web_dev, ns), "both in one peer: AND")
        by_name = NP.Peer(ns=NP.parse_selector({"matchLabels": {NP.NS_NAME_LABEL: "other"}}))
        self.assertTrue(NP.peer_selects(by_name, "prod", NP.PodKey("other"), ns),
                        "a namespace without a record still has its name label")

    def test_ip_block_except_and_port_ranges(self):
        pfx = NP.block_prefixes(NP.Peer(cidr="10.1.1.0/24", excepts=("10.1.1.40/30", "10.1.1.128/25")))
        got = {str(n) for n in pfx}
        self.assertEqual(got, {"10.1.1.0/27", "10.1.1.32/29", "10.1.1.44/30", "10.1.1.48/28", "10.1.1.64/26"})
        ranges = NP.port_ranges(8000, 8100)
        covered = {p for p in range(0, 65536) if any(p & m == v for v, m in ranges)}
        self.assertEqual(covered, set(range(8000, 8101)))
        self.assertEqual(NP.port_ranges(80, 80), ((80, 0xFFFF),))
        whole = NP.port_ranges(1, 65535)
        self.assertEqual({p for p in range(0, 65536) if any(p & m == v for v, m in whole)}, set(range(1, 65536)))
        self.assertLessEqual(len(whole), 30)

    def test_pod_key_leaves_out_the_cni_plugins_labels_and_bad_ports(self):
        k = NP.pod_key("prod", {"app": "web", "cni.contiv.io/network": "x"},
                       {"http": {"port": 8080, "protocol": "TCP"}, "bad": {"port": "x"}, "dns": {"port": 53,
                                                                                                 "protocol": "UDP"}})
        self.assertEqual(k.labels, (("app", "web"),))
        self.assertEqual(k.named_ports, (("dns", "UDP", 53), ("http", "TCP", 8080)))
        self.assertEqual(k.named_port("http", "TCP"), 8080)
        self.assertIsNone(k.named_port("http", "UDP"), "a named port matches name and protocol")


class IdentityTests(unittest.TestCase):
    def test_identities_are_derived_not_allocated(self):
        keys = [NP.PodKey("prod", (("app", str(i)),)) for i in range(50)]
        a = K8.assign_identities(keys)
        b = K8.assign_identities(reversed(keys))
        self.assertEqual(a, b, "independent of order: the same on every switch and after a restart")
        self.assertEqual(len(set(a.values())), 50)
        self.assertNotIn(0, a.values())
        self.assertEqual(K8.assign_identities(keys[:10]), {k: a[k] for k in keys[:10]},
                         "other keys coming and going do not move an identity")

    def test_a_collision_is_probed_past(self):
        orig = K8._digest
        self.patch(K8, "_digest", lambda key: 7 if key.namespace == "x" else orig(key))
        ids = K8.assign_identities([NP.PodKey("x", (("a", "1"),)), NP.PodKey("x", (("a", "2"),))])
        self.assertEqual(sorted(ids.values()), [7, 8])


# --------------------------------------------------------------------------
# Compiled flows and the simulator.
# --------------------------------------------------------------------------
TENANTS = {"t1": Tenant("t1", 1)}
NETWORKS = {"t1:net": Network("t1:net", "t1", "net", "vxlan", 5001, 1, "10.1.1.0/24", "10.1.1.254")}
NAMESPACES = {"prod": {"env": "prod"}, "dev": {"env": "dev"}, "kube-system": {}}
_PODS = [  # id, host, namespace, ip, labels, named ports
    ("web1", "h1", "prod", "10.1.1.10", {"app": "web"}, {"http": ("TCP", 8080)}),
    ("web2", "h2", "prod", "10.1.1.11", {"app": "web"}, {"http": ("TCP", 8081)}),
    ("db", "h2", "prod", "10.1.1.12", {"app": "db"}, {}),
    ("cp", "h1", "prod", "10.1.1.20", {"app": "client"}, {}),
    ("cd", "h2", "dev", "10.1.1.40", {"app": "client"}, {}),
    ("tool", "h1", "dev", "10.1.1.41", {"app": "tool"}, {}),
    ("dns", "h2", "kube-system", "10.1.1.50", {"k8s-app": "kube-dns"}, {"dns": ("UDP", 53)}),
    ("ext", "h1", "", "10.1.1.200", {}, {}),  # not a pod
]


def pod(eid: str, host: str, ns: str, ip: str, labels: Dict[str, str], ports: Dict[str, tuple], i: int,
        group: Optional[str] = None, epg: int = 0) -> Endpoint:
    return Endpoint(eid, host, "t1:net", ip, f"02:00:00:00:01:{i:02x}", f"p-{eid}", group, epg,
                    k8s_namespace=ns, labels=tuple(sorted(labels.items())),
                    named_ports=tuple(sorted((n, p, v) for n, (p, v) in ports.items())))


def endpoints() -> Dict[str, Endpoint]:
    return {p[0]: pod(*p, i=i + 1) for i, p in enumerate(_PODS)}


def hosts_for(eps: Dict[str, Endpoint]) -> Dict[str, Host]:
    out = {}
    for i, name in enumerate(("h1", "h2"), 1):
        ports = {"vxlan0": 1}
        for n, e in enumerate(sorted(eps)):
            if eps[e].host == name:
                ports[eps[e].port] = 10 + n
        out[name] = Host(name, i, f"192.168.60.{i}", F(ports), "vxlan0")
    return out


def policy(name: str, ns: str, spec: Dict[str, Any]) -> K8.K8sPolicy:
    return K8.K8sPolicy(f"{ns}/{name}", ns, name, K8.spec_text(spec))


PROTO = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}


class Cluster:
    """State as plain dicts; every load compiles in full and incrementally (they must agree)
    and keeps one conntrack across loads, as a switch does."""

    def __init__(self, test: unittest.TestCase) -> None:
        self.test = test
        self.eps = endpoints()
        self.namespaces = dict(NAMESPACES)
        self.policies: Dict[str, K8.K8sPolicy] = {}
        self.groups: Dict[str, Group] = {}
        self.rules: Dict[str, Rule] = {}
        self.ct = ConnTrack()
        self.eng = IncrementalCompiler()
        self.load()

    def snapshot(self) -> Snapshot:
        ns = {n: K8.K8sNamespace(n, tuple(sorted(ls.items()))) for n, ls in self.namespaces.items()}
        return Snapshot(1, GlobalCfg(), F(TENANTS), F(NETWORKS), F(dict(self.groups)), F(hosts_for(self.eps)),
                        F(dict(self.eps)), F(dict(self.rules)), k8s_namespaces=F(ns),
                        k8s_policies=F(dict(self.policies)))

    def load(self) -> "Cluster":
        self.snap = self.snapshot()
        self.flows = compile_all(self.snap)
        self.eng.update(self.snap, self.snap.hosts)
        for h in self.snap.hosts:
            self.test.assertEqual(self.eng.flows(h), self.flows[h], f"incremental == full on {h}")
        self.test.assertEqual(diagnose(self.snap), ())
        return self

    def add(self, name: str, ns: str, spec: Dict[str, Any]) -> "Cluster":
        self.policies[f"{ns}/{name}"] = policy(name, ns, spec)
        return self.load()

    def remove(self, name: str, ns: str) -> "Cluster":
        del self.policies[f"{ns}/{name}"]
        return self.load()

    def relabel(self, eid: str, **labels: str) -> "Cluster":
        self.eps[eid] = dataclasses.replace(self.eps[eid], labels=tuple(sorted(labels.items())))
        return self.load()

    def ok(self, src: str, dst: str, proto: str = "tcp", dport: int = 80, sport: int = 40000) -> bool:
        s, d = self.eps[src], self.eps[dst]
        p = dict(eth_src=s.mac, eth_dst=d.mac, eth_type=0x0800, ipv4_src=s.ip, ipv4_dst=d.ip,
                 ip_proto=PROTO[proto], ip_ttl=64)
        if proto in ("tcp", "udp", "sctp"):
            p[f"{proto}_src"], p[f"{proto}_dst"] = sport, dport
        tr = trace(self.flows, self.snap.hosts, s.host, s.port, p, conntrack=self.ct)
        got = tr.delivered_to()
        if got:
            self.test.assertEqual(got, [(d.host, d.port)], f"{src}->{dst}:\n{tr}")
        return bool(got)

    def reply(self, src: str, dst: str, proto: str = "tcp", dport: int = 80, sport: int = 40000) -> bool:
        return self.ok(dst, src, proto, sport, dport)

    def expect(self, allowed: List[tuple], denied: List[tuple]) -> None:
        for case in allowed:
            self.test.assertTrue(self.ok(*case), f"{case} must pass")
        for case in denied:
            self.test.assertFalse(self.ok(*case), f"{case} must be dropped")


DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
DENY_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}
WEB = {"matchLabels": {"app": "web"}}


class ScenarioTests(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(self)

    def test_01_no_policy_nothing_judged_and_no_k8s_flow(self):
        c = self.c
        c.expect([("cd", "web1"), ("web1", "cd"), ("ext", "db", "udp", 9)], [])
        for flows in c.flows.values():
            self.assertFalse([f for f in flows if T.K8S <= f.table <= T.K8S_INGRESS])
            self.assertFalse([f for f in flows if f.table == T.L2 and f.goto == T.K8S])

    def test_02_default_deny_ingress(self):
        c = self.c.add("deny", "prod", DENY_INGRESS)
        c.expect([("web1", "cd"), ("tool", "cd"), ("cd", "tool")],  # egress free; dev not selected
                 [("cd", "web1"), ("cp", "web1"), ("ext", "db"), ("web2", "web1", "udp", 5)])
        self.assertTrue(c.ok("web1", "cd", dport=5000))
        self.assertTrue(c.reply("web1", "cd", dport=5000), "replies always pass into an isolated pod")

    def test_03_default_deny_egress(self):
        c = self.c.add("deny", "prod", DENY_EGRESS)
        c.expect([("cd", "web1"), ("tool", "ext")], [("web1", "cd"), ("cp", "web2"), ("db", "ext", "udp", 9)])
        self.assertTrue(c.ok("cd", "web1", dport=81))
        self.assertTrue(c.reply("cd", "web1", dport=81), "the reply leaves an egress-isolated pod")

    def test_04_allow_from_namespace_by_label(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}}]}]})
        c.expect([("cd", "web1"), ("tool", "web2")], [("cp", "web1"), ("db", "web2"), ("ext", "web1")])
        c.expect([("cp", "db")], [])  # db is not selected

    def test_05_pod_and_namespace_selector_in_one_peer_is_an_and(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"env": "dev"}}, "podSelector": {"matchLabels": {"app": "client"}}}]}]})
        c.expect([("cd", "web1")], [("tool", "web1"), ("cp", "web1")])

    def test_06_two_peers_are_an_or(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"env": "dev"}}}, {"podSelector": {"matchLabels": {"app": "client"}}}]}]})
        c.expect([("cd", "web1"), ("tool", "web1"), ("cp", "web1")], [("db", "web1"), ("dns", "web2")])

    def test_07_ip_block_with_except(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.1.1.0/24", "except": ["10.1.1.40/30"]}}]}]})
        c.expect([("cp", "web1"), ("ext", "web1"), ("dns", "web2")], [("cd", "web1"), ("tool", "web2")])

    def test_08_named_port_resolved_per_destination_pod(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [{"ports": [{"port": "http"}]}]})
        c.expect([("cd", "web1", "tcp", 8080), ("cd", "web2", "tcp", 8081)],
                 [("cd", "web1", "tcp", 8081), ("cd", "web2", "tcp", 8080), ("cd", "web1", "udp", 8080)])

    def test_09_end_port_range(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [{"ports": [{"port": 8000, "endPort": 8100}]}]})
        c.expect([("cd", "web1", "tcp", p) for p in (8000, 8001, 8064, 8099, 8100)],
                 [("cd", "web1", "tcp", p) for p in (7999, 8101, 80)] + [("cd", "web1", "udp", 8050)])

    def test_10_udp(self):
        c = self.c.add("p", "kube-system", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 53}]}]})
        c.expect([("web1", "dns", "udp", 53), ("ext", "dns", "udp", 53)],
                 [("web1", "dns", "tcp", 53), ("web1", "dns", "udp", 54), ("web1", "dns", "icmp", 0)])
        self.assertTrue(c.reply("web1", "dns", "udp", 53))

    def test_11_sctp(self):
        c = self.c.add("p", "prod", {"podSelector": {"matchLabels": {"app": "db"}},
                                     "ingress": [{"ports": [{"protocol": "SCTP", "port": 3868}]}]})
        c.expect([("cd", "db", "sctp", 3868)], [("cd", "db", "tcp", 3868), ("cd", "db", "sctp", 3869)])

    def test_12_several_policies_union(self):
        c = self.c.add("a", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 80}]}]})
        c.add("b", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}}], "ports": [{"port": 443}]}]})
        c.expect([("cp", "web1", "tcp", 80), ("cd", "web1", "tcp", 443), ("tool", "web2", "tcp", 443)],
                 [("cp", "web1", "tcp", 443), ("cd", "web1", "tcp", 80), ("db", "web1", "tcp", 80)])

    def test_13_pod_relabelled_into_and_out_of_a_peer_selector(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}]}]})
        c.expect([("cd", "web1")], [("tool", "web1")])
        c.relabel("tool", app="client")
        c.expect([("tool", "web1", "tcp", 81)], [])
        c.relabel("tool", app="tool")
        c.expect([], [("tool", "web1", "tcp", 82)])

    def test_14_pod_relabelled_out_of_the_protected_selector(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "policyTypes": ["Ingress"]})
        c.expect([("cd", "db")], [("cd", "web1")])
        c.relabel("web1", app="old")
        c.expect([("cd", "web1", "tcp", 81)], [("cd", "web2", "tcp", 81)])
        c.relabel("db", app="web")
        c.expect([], [("cd", "db", "tcp", 82)])

    def test_15_namespace_relabelled(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}}]}]})
        c.expect([("cd", "web1")], [])
        c.namespaces["dev"] = {"env": "staging"}
        c.load().expect([], [("cd", "web1", "tcp", 81), ("tool", "web2")])
        c.namespaces["prod"] = {"env": "dev"}
        c.load().expect([("cp", "web1", "tcp", 82)], [("cd", "web1", "tcp", 83)])

    def test_16_egress_only_to_dns(self):
        c = self.c.add("dns-only", "prod", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]})
        c.expect([("web1", "dns", "udp", 53), ("web2", "dns", "tcp", 53), ("cp", "ext", "udp", 53)],
                 [("web1", "cd", "tcp", 80), ("web1", "dns", "udp", 54), ("db", "dns", "icmp", 0)])
        self.assertTrue(c.reply("web1", "dns", "udp", 53))

    def test_17_coexists_with_a_contiv_deny(self):
        c = self.c
        c.groups["t1:web"] = Group("t1:web", "t1", "t1:net", 10, ("t1:pw",))
        for name in ("web1", "web2"):
            c.eps[name] = dataclasses.replace(c.eps[name], group="t1:web", epg_id=10)
        c.rules["t1:pw:1"] = Rule("t1:pw:1", "t1", "t1:pw", "in", "deny", 5, "tcp", 80)
        c.add("p", "prod", {"podSelector": WEB, "ingress": [{"ports": [{"port": 80}, {"port": 443}]}]})
        c.expect([("cd", "web1", "tcp", 443)],
                 [("cd", "web1", "tcp", 80),  # K8s allows, Contiv denies
                  ("cd", "web1", "tcp", 8443)])  # Contiv allows, K8s denies

    def test_18_egress_to_a_named_port_of_the_destination(self):
        c = self.c.add("p", "prod", {"podSelector": {"matchLabels": {"app": "client"}}, "egress": [
            {"to": [{"podSelector": WEB}], "ports": [{"port": "http"}]}]})
        c.expect([("cp", "web1", "tcp", 8080), ("cp", "web2", "tcp", 8081)],
                 [("cp", "web1", "tcp", 8081), ("cp", "web2", "tcp", 8080), ("cp", "db", "tcp", 8080)])

    def test_19_policy_added_then_removed(self):
        c = self.c.add("deny", "prod", DENY_INGRESS)
        c.expect([], [("cd", "web1")])
        c.remove("deny", "prod")
        c.expect([("cd", "web1", "tcp", 81)], [])
        for flows in c.flows.values():
            self.assertFalse([f for f in flows if T.K8S <= f.table <= T.K8S_INGRESS])

    def test_20_allow_all_ingress_rule_beside_a_deny(self):
        c = self.c.add("deny", "prod", DENY_INGRESS)
        c.add("all-to-web", "prod", {"podSelector": WEB, "ingress": [{}]})
        c.expect([("cd", "web1"), ("ext", "web2", "udp", 9)], [("cd", "db"), ("ext", "cp")])

    def test_21_pods_created_later_are_selected(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]})
        c.eps["cp2"] = pod("cp2", "h2", "prod", "10.1.1.21", {"app": "client"}, {}, 40)
        c.eps["web3"] = pod("web3", "h2", "prod", "10.1.1.13", {"app": "web", "v": "3"}, {}, 41)
        c.load().expect([("cp2", "web1"), ("cp", "web3")], [("cd", "web3"), ("db", "web3")])

    def test_22_egress_to_an_ip_block(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "egress": [
            {"to": [{"ipBlock": {"cidr": "10.1.1.192/26", "except": ["10.1.1.250/32"]}}]}]})
        c.expect([("web1", "ext"), ("web2", "ext", "udp", 9)], [("web1", "cd"), ("web2", "dns", "udp", 53)])

    def test_23_policy_types_egress_only_ignores_ingress_rules(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "policyTypes": ["Egress"],
                                     "ingress": [{"ports": [{"port": 1}]}],
                                     "egress": [{"to": [{"namespaceSelector": {}}]}]})
        c.expect([("cd", "web1", "tcp", 80), ("web1", "cd")], [("web1", "ext")])

    def test_24_in_one_host_and_across_hosts(self):
        c = self.c.add("p", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]})
        self.assertEqual((c.eps["cp"].host, c.eps["web1"].host, c.eps["web2"].host), ("h1", "h1", "h2"))
        c.expect([("cp", "web1"), ("cp", "web2")], [("tool", "web1"), ("tool", "web2"), ("db", "web1")])


class FlowCountTests(unittest.TestCase):
    def test_flows_follow_the_formula_and_not_the_pod_count(self):
        c = Cluster(self)
        c.add("deny", "prod", DENY_INGRESS)
        c.add("p", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}, {"ipBlock": {"cidr": "10.1.1.0/24"}}],
             "ports": [{"port": 8000, "endPort": 8003}, {"protocol": "UDP"}]}]})
        model = K8.model_of(c.snap)
        for h, flows in c.flows.items():
            local = {model.idents[K8.pod_key_of(e)] for e in c.eps.values() if e.host == h and e.k8s_namespace}
            n = sum(1 for f in flows if T.K8S <= f.table <= T.K8S_INGRESS)
            self.assertEqual(n, K8.formula(model, local, 1), h)
        before = {h: sum(1 for f in fl if T.K8S <= f.table <= T.K8S_INGRESS) for h, fl in c.flows.items()}
        built: List[tuple] = []
        c.eng.on_build = lambda kind, key: built.append((kind, key))
        c.eps["cp2"] = pod("cp2", "h1", "prod", "10.1.1.21", {"app": "client"}, {}, 40)  # cp's label set
        c.load()
        after = {h: sum(1 for f in fl if T.K8S <= f.table <= T.K8S_INGRESS) for h, fl in c.flows.items()}
        self.assertEqual(before, after, "a pod with an existing identity adds no policy flow")
        self.assertIn(("endpoint", "cp2"), built)
        self.assertNotIn("k8s", {k for k, _ in built}, "... and builds no policy fragment")

    def test_a_relabel_rebuilds_only_the_rules_whose_peers_change(self):
        c = Cluster(self)
        c.add("a", "prod", {"podSelector": WEB, "ingress": [
            {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}]}]})
        c.add("b", "prod", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})
        built: List[tuple] = []
        c.eng.on_build = lambda kind, key: built.append((kind, key))
        c.relabel("tool", app="client", v="2")  # a new label set: a new identity
        model = K8.model_of(c.snap)
        web_ids = {str(model.idents[K8.pod_key_of(c.eps[e])]) for e in ("web1", "web2")}
        db_id = str(model.idents[K8.pod_key_of(c.eps["db"])])
        rebuilt = {key for kind, key in built if kind == "k8s"}
        self.assertTrue(rebuilt & web_ids, "web's peers gained tool")
        self.assertNotIn(db_id, rebuilt, "db's peers did not change")
        self.assertIn(("endpoint", "tool"), built)
        c.eps["cd2"] = pod("cd2", "h1", "dev", "10.1.1.42", {"app": "client"}, {}, 42)  # cd's labels
        c.load()
        built.clear()
        c.relabel("cd2", app="client", v="2")  # from one existing identity to another: no rule changes
        self.assertNotIn("k8s", {k for k, _ in built})
        self.assertIn(("endpoint", "cd2"), built)
        self.assertTrue(c.ok("cd2", "web1"))


class SnapshotTests(unittest.TestCase):
    """controller/snapshot.py reads the K8s kinds and endpoint fields (shape-checked)."""

    def data(self) -> Dict[str, Dict[str, Any]]:
        return {
            "tenant": {"t1": {"vrfId": 1}},
            "obj:network": {"t1:net": {"encap": "vxlan", "subnet": "10.1.1.0/24"}},
            "network": {"t1:net": {"netId": 1, "vni": 5001, "subnet": "10.1.1.0/24"}},
            "endpoint": {
                "e1": {"network": "t1:net", "ipAddress": "10.1.1.2", "macAddress": "02:00:00:00:00:02",
                       "homingHost": "h1", "intfName": "p1", "k8sNamespace": "prod", "k8sPod": "web-1",
                       "labels": {"app": "web", "cni.contiv.io/network": "n"},
                       "namedPorts": {"http": {"port": 8080, "protocol": "TCP"}}},
                "e2": {"network": "t1:net", "ipAddress": "10.1.1.3", "macAddress": "02:00:00:00:00:03",
                       "homingHost": "h1", "intfName": "p2", "labels": {"app": "x"}},
                "bad": {"network": "t1:net", "ipAddress": "10.1.1.4", "macAddress": "02:00:00:00:00:04",
                        "k8sNamespace": "prod", "labels": {"app": 5}},
            },
            "k8sNamespace": {"prod": {"name": "prod", "labels": {"env": "prod"}},
                             "odd": {"name": "odd", "labels": ["x"]}},
            "k8sNetworkPolicy": {
                "prod/p": {"namespace": "prod", "name": "p", "uid": "u", "spec": {
                    "podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}},
                "prod/v6": {"namespace": "prod", "name": "v6", "uid": "u", "spec": {
                    "ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}]}},
                "prod/wrongkey": {"namespace": "prod", "name": "other", "uid": "u", "spec": {}},
            },
        }

    def test_k8s_kinds_and_endpoint_fields_are_read_and_bad_records_refused(self):
        built = build_checked(1, self.data(), {})
        snap = built.snapshot
        e1 = snap.endpoints["e1"]
        self.assertEqual((e1.k8s_namespace, e1.labels, e1.named_ports),
                         ("prod", (("app", "web"),), (("http", "TCP", 8080),)))
        self.assertEqual(snap.endpoints["e2"].k8s_namespace, "", "labels without a namespace: not a pod")
        self.assertEqual(snap.k8s_namespaces["prod"].labels, (("env", "prod"),))
        self.assertEqual(set(snap.k8s_policies), {"prod/p"})
        refused = {(r.kind, r.key): r.reason for r in built.refused}
        self.assertEqual(set(refused), {("endpoint", "bad"), ("k8sNamespace", "odd"),
                                        ("k8sNetworkPolicy", "prod/v6"), ("k8sNetworkPolicy", "prod/wrongkey")})
        self.assertIn("only IPv4", refused[("k8sNetworkPolicy", "prod/v6")])
        self.assertIn("EndpointK8s.labels", refused[("endpoint", "bad")])
        self.assertTrue(K8.model_of(snap).active)

    def test_a_pod_record_before_the_watcher_wrote_its_named_ports(self):
        """Right after CNI ADD the record has the plugin's labels only and no namedPorts:
        a pod of its namespace with no labels and no named ports (not refused)."""
        data = self.data()
        data["endpoint"] = {"new": {
            "network": "t1:net", "ipAddress": "10.1.1.9", "macAddress": "02:00:00:00:00:09",
            "homingHost": "h1", "intfName": "p9", "k8sNamespace": "prod", "k8sPod": "web-9",
            "k8sPodUID": "u-9", "labels": {"cni.contiv.io/network": "n", "cni.contiv.io/ifname": "eth0",
                                           "cni.contiv.io/k8s-pod-uid": "u-9"}}}
        built = build_checked(1, data, {})
        self.assertEqual([r for r in built.refused if r.kind == "endpoint"], [])
        e = built.snapshot.endpoints["new"]
        self.assertEqual((e.k8s_namespace, e.labels, e.named_ports), ("prod", (), ()))

    def test_the_compiler_does_not_import_the_watcher(self):
        """``pipeline/k8s.py`` needs only the pure NetworkPolicy module: importing it must not
        load the watcher's HTTP client (the package ``drivers.kubernetes`` imports lazily)."""
        import subprocess
        import sys
        code = ("import sys, contiv_sdn.pipeline.k8s\n"
                "print(sorted(m for m in sys.modules if m.startswith(('treq', 'drivers.kubernetes.'))))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "['drivers.kubernetes.netpol']")
        # the watcher is still reachable by its old name
        code = "import drivers.kubernetes as k; print(k.make_watcher.__module__)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout.strip(), "drivers.kubernetes.service", out.stderr)

    def test_a_label_change_is_visible_to_the_controller(self):
        from contiv_sdn.controller.snapshot import read_view
        a = self.data()["endpoint"]["e1"]
        b = dict(a, labels={"app": "db"})
        self.assertNotEqual(read_view("endpoint", a), read_view("endpoint", b))
        self.assertEqual(read_view("endpoint", a), read_view("endpoint", dict(a)))


def _every_shape(test: unittest.TestCase) -> Cluster:
    """A cluster whose flows use every K8s match: ranges, SCTP, UDP, named ports, ipBlocks."""
    c = Cluster(test)
    c.add("p", "prod", {"podSelector": WEB, "ingress": [
        {"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.1.40/30"]}}],
         "ports": [{"port": 8000, "endPort": 8100}, {"protocol": "SCTP", "port": 3868}, {"protocol": "UDP"},
                   {"port": "http"}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.1.1.0/24", "except": ["10.1.1.40/30"]}}]},
                   {"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]})
    return c


class CodecTests(unittest.TestCase):
    def test_every_k8s_flow_encodes_and_decodes_to_itself(self):
        c = _every_shape(self)
        n = 0
        for flows in c.flows.values():
            for f in flows:
                raw = codec.encode_flow_mod(f, codec.ADD, 1)
                self.assertEqual(raw, codec.encode_flow_mod_osken(f, codec.ADD, 1))
                self.assertEqual(codec.flow_from_stats(codec.parse_message(raw)), f)
                n += T.K8S <= f.table <= T.K8S_INGRESS
        self.assertGreater(n, 20)


class RealSwitchTests(unittest.TestCase):
    """OVS itself accepts the K8s stage's flows (masked ports, SCTP, reg6/reg7, ct to table 46)
    and gives them back unchanged."""

    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.lab = SwitchLab("k8snp")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    async def _roundtrip(self):
        flows = _every_shape(self).flows["h1"]
        sw = await self.lab.add_switch("np")
        b = sw.bundle()
        for f in flows:
            b.add_flow_mod(f, codec.ADD)
        await b.commit()
        back = await sw.read_flows(COOKIE_MARK, COOKIE_MASK)
        self.assertEqual(set(back), set(flows))

    def test_the_switch_takes_them(self):
        return Deferred.fromCoroutine(self._roundtrip())
