"""Stateful policy, checked by walking packets through compiled flows and the simulator's conntrack.

Plain data, no switch.  Three hosts: h1 and h2 on VXLAN, h3 also on a VLAN
uplink; tenant t1 and tenant t2 whose network reuses t1's subnet and addresses.
Every rule shape of the spec (protocols, ports, from/to group, network, single
address, last-octet range, CIDR), priorities and ties, conntrack states, live
rule changes, and the flow-count formula.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Dict, Iterable, List, Optional, Tuple

from twisted.trial import unittest

from contiv_sdn.pipeline import policy as PL
from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.compiler import compile_all, compile_hosts, diagnose
from contiv_sdn.pipeline.incremental import IncrementalCompiler
from contiv_sdn.pipeline.simulator import ConnTrack, Trace, trace
from contiv_sdn.pipeline.state import (ROUTER_MAC, Endpoint, GlobalCfg, Group, Host, Network, Rule, Snapshot,
                                       Tenant)

TENANTS = {"t1": Tenant("t1", 1), "t2": Tenant("t2", 2)}
NETWORKS = {n.key: n for n in (
    Network("t1:net", "t1", "net", "vxlan", 5001, 1, "10.1.1.0/24", "10.1.1.254"),
    Network("t1:other", "t1", "other", "vxlan", 5002, 2, "10.1.2.0/24", "10.1.2.254"),
    Network("t1:vl", "t1", "vl", "vlan", 100, 3, "10.1.3.0/24", "10.1.3.254"),
    Network("t2:net", "t2", "net", "vxlan", 6001, 4, "10.1.1.0/24", "10.1.1.254"),
)}
GROUP_IDS = {"t1:web": 10, "t1:client": 11, "t1:db": 12, "t1:vweb": 13, "t2:web": 20}
GROUP_NETS = {"t1:web": "t1:net", "t1:client": "t1:net", "t1:db": "t1:net", "t1:vweb": "t1:vl",
              "t2:web": "t2:net"}

_EPS = [  # id, host, network, ip, group
    ("web1", "h1", "t1:net", "10.1.1.10", "t1:web"),
    ("web2", "h2", "t1:net", "10.1.1.11", "t1:web"),
    ("cl1", "h2", "t1:net", "10.1.1.20", "t1:client"),
    ("cl0", "h1", "t1:net", "10.1.1.21", "t1:client"),
    ("free", "h2", "t1:net", "10.1.1.30", None),
    ("db1", "h3", "t1:net", "10.1.1.40", "t1:db"),
    ("o1", "h2", "t1:other", "10.1.2.5", None),
    ("vweb", "h1", "t1:vl", "10.1.3.10", "t1:vweb"),
    ("vcl", "h3", "t1:vl", "10.1.3.20", None),
    ("t2web", "h1", "t2:net", "10.1.1.10", "t2:web"),
    ("t2cl", "h2", "t2:net", "10.1.1.20", None),
]


def _mac(i: int) -> str:
    return f"02:00:00:00:00:{i:02x}"


ENDPOINTS = {eid: Endpoint(eid, host, net, ip, _mac(i + 1), f"p-{eid}", group, GROUP_IDS.get(group or "", 0))
             for i, (eid, host, net, ip, group) in enumerate(_EPS)}


def _hosts(endpoints: Iterable[Endpoint]) -> Dict[str, Host]:
    hosts = {}
    eps = list(endpoints)
    for i, name in enumerate(("h1", "h2", "h3"), 1):
        ports = {"vxlan0": 1, "eth1": 2}
        for n, e in enumerate(eps):
            if e.host == name:
                ports[e.port] = 10 + n
        hosts[name] = Host(name, i, f"192.168.50.{i}", MappingProxyType(ports), "vxlan0", "eth1")
    return hosts


def rule(policy: str, rid: str, direction: str, action: str, priority: int = 1, protocol: str = "",
         port: int = 0, **peer: str) -> Rule:
    return Rule(f"{policy}:{rid}", policy.split(":")[0], policy, direction, action, priority, protocol, port,
                **peer)


def snapshot(rules: Iterable[Rule] = (), attach: Optional[Dict[str, Tuple[str, ...]]] = None,
             fwd: str = "bridge", endpoints: Optional[Dict[str, Endpoint]] = None) -> Snapshot:
    eps = ENDPOINTS if endpoints is None else endpoints
    attach = attach or {}
    groups = {k: Group(k, k.split(":")[0], GROUP_NETS[k], gid, tuple(attach.get(k, ())))
              for k, gid in GROUP_IDS.items()}
    f = MappingProxyType
    return Snapshot(1, GlobalCfg(fwd, "proxy"), f(TENANTS), f(NETWORKS), f(groups), f(_hosts(eps.values())),
                    f(dict(eps)), f({r.key: r for r in rules}))


PROTO = {"tcp": 6, "udp": 17, "icmp": 1}


class Net:
    """Compiled flows plus one conntrack that survives recompiles (as on a real switch)."""

    def __init__(self, snap: Snapshot) -> None:
        self.ct = ConnTrack()
        self.load(snap)

    def load(self, snap: Snapshot) -> None:
        self.snap = snap
        self.flows = compile_all(snap)

    def packet(self, src: str, dst: str, proto: str = "tcp", dport: int = 80, sport: int = 40000,
               routed: bool = False, **extra) -> dict:
        s, d = self.snap.endpoints[src], self.snap.endpoints[dst]
        p = dict(eth_src=s.mac, eth_dst=ROUTER_MAC if routed else d.mac, eth_type=0x0800, ipv4_src=s.ip,
                 ipv4_dst=d.ip, ip_proto=PROTO[proto], ip_ttl=64)
        if proto in ("tcp", "udp"):
            p[f"{proto}_src"], p[f"{proto}_dst"] = sport, dport
        p.update(extra)
        return p

    def send(self, src: str, dst: str, proto: str = "tcp", dport: int = 80, sport: int = 40000,
             routed: bool = False, **extra) -> Trace:
        e = self.snap.endpoints[src]
        return trace(self.flows, self.snap.hosts, e.host, e.port,
                     self.packet(src, dst, proto, dport, sport, routed, **extra), conntrack=self.ct)

    def ok(self, src: str, dst: str, proto: str = "tcp", dport: int = 80, sport: int = 40000,
           routed: bool = False, **extra) -> bool:
        """Did the packet reach ``dst`` (and nobody else)?"""
        d = self.snap.endpoints[dst]
        tr = self.send(src, dst, proto, dport, sport, routed, **extra)
        got = tr.delivered_to()
        self.last = tr
        if got:
            assert got == [(d.host, d.port)], f"{src}->{dst} delivered to {got}:\n{tr}"
        return bool(got)

    def reply(self, src: str, dst: str, proto: str = "tcp", dport: int = 80, sport: int = 40000,
              routed: bool = False) -> bool:
        """The reply of the connection ``src`` opened to ``dst``: ``dst`` answers."""
        return self.ok(dst, src, proto, sport, dport, routed)


PROD_WEB = [rule("t1:prod_web", "1", "in", "deny", protocol="tcp"),
            rule("t1:prod_web", "2", "in", "allow", 10, "tcp", 80),
            rule("t1:prod_web", "3", "in", "allow", 10, "tcp", 443)]


class SeedExampleTests(unittest.TestCase):
    """The seed README's prod_web policy on group web."""

    def setUp(self):
        self.net = Net(snapshot(PROD_WEB, {"t1:web": ("t1:prod_web",)}))

    def test_80_and_443_connect_22_and_8080_do_not_from_any_host(self):
        n = self.net
        for client in ("cl1", "cl0", "free"):  # another host over VXLAN, the same host, no group
            for port, allowed in ((80, True), (443, True), (22, False), (8080, False)):
                self.assertEqual(n.ok(client, "web1", dport=port), allowed, f"{client} -> web1:{port}")
                if allowed:
                    self.assertTrue(n.reply(client, "web1", dport=port), f"reply to {client}:{port}")

    def test_ping_still_works_and_web_opens_outbound_tcp_with_replies(self):
        n = self.net
        self.assertTrue(n.ok("cl1", "web1", "icmp"))
        self.assertTrue(n.reply("cl1", "web1", "icmp"))
        self.assertTrue(n.ok("web1", "cl1", dport=5000))
        self.assertTrue(n.reply("web1", "cl1", dport=5000), "the reply of web's own connection")
        self.assertTrue(n.ok("web1", "cl0", dport=5000))  # same host
        self.assertTrue(n.reply("web1", "cl0", dport=5000))

    def test_a_denied_connection_from_a_tunnel_is_judged_on_the_destination_host(self):
        n = self.net
        self.assertFalse(n.ok("cl1", "web1", dport=8080))
        tr = n.last
        self.assertEqual([t.host for t in tr.transmissions], ["h2"])  # left h2 (no out rule) ...
        self.assertIn("deny in", tr.steps[-1])  # ... stopped by web's in rules on h1
        self.assertTrue(tr.steps[-1].startswith("h1 t53"), tr.steps[-1])
        self.assertEqual(n.ct.log[-2:], [("h2", 1, T.CT_TRK | T.CT_NEW), ("h1", 1, T.CT_TRK | T.CT_NEW)])

    def test_other_groups_are_not_protected_by_web_rules(self):
        self.assertTrue(self.net.ok("cl1", "db1", dport=8080))
        self.assertTrue(self.net.ok("cl1", "free", dport=22))
        self.assertTrue(self.net.ok("cl1", "web2", dport=8080) is False)  # web2 is in web too (same host)


class RuleShapeTests(unittest.TestCase):
    def net(self, rules: List[Rule], attach: Dict[str, Tuple[str, ...]], fwd: str = "bridge") -> Net:
        return Net(snapshot(rules, attach, fwd))

    def test_equal_priority_deny_wins_and_higher_priority_wins(self):
        n = self.net([rule("t1:p", "a", "in", "allow", 5, "tcp", 80), rule("t1:p", "d", "in", "deny", 5, "tcp")],
                     {"t1:web": ("t1:p",)})
        self.assertFalse(n.ok("cl1", "web1"))
        n = self.net([rule("t1:p", "a", "in", "allow", 6, "tcp", 80), rule("t1:p", "d", "in", "deny", 5, "tcp")],
                     {"t1:web": ("t1:p",)})
        self.assertTrue(n.ok("cl1", "web1"))
        n = self.net([rule("t1:p", "a", "in", "allow", 100, "tcp", 80), rule("t1:p", "d", "in", "deny", 100)],
                     {"t1:web": ("t1:p",)})
        self.assertFalse(n.ok("cl1", "web1"), "deny wins a tie whatever else the rules name")

    def test_from_group(self):
        n = self.net([rule("t1:p", "1", "in", "deny", 1, "tcp"),
                      rule("t1:p", "2", "in", "allow", 10, "tcp", from_group="client")], {"t1:web": ("t1:p",)})
        self.assertTrue(n.ok("cl1", "web1"))
        self.assertTrue(n.ok("cl0", "web1", sport=1))
        self.assertFalse(n.ok("db1", "web1"))
        self.assertFalse(n.ok("free", "web1"))

    def test_from_ip_single_range_and_cidr(self):
        cases = {"10.1.1.20": {"cl1"}, "10.1.1.20-21": {"cl1", "cl0"}, "10.1.1.16/28": {"cl1", "cl0", "free"}}
        for spec, allowed in cases.items():
            n = self.net([rule("t1:p", "1", "in", "deny", 1, "tcp"),
                          rule("t1:p", "2", "in", "allow", 10, "tcp", from_ip=spec)], {"t1:web": ("t1:p",)})
            for client in ("cl1", "cl0", "free", "db1"):
                self.assertEqual(n.ok(client, "web1"), client in allowed, f"{spec}: {client}")

    def test_from_network_in_routing_mode(self):
        n = self.net([rule("t1:p", "1", "in", "deny", 1, "", from_network="other")], {"t1:web": ("t1:p",)},
                     "routing")
        self.assertFalse(n.ok("o1", "web1", routed=True))
        self.assertFalse(n.ok("o1", "web1", "icmp", routed=True))
        self.assertTrue(n.ok("cl1", "web1"))
        self.assertTrue(n.ok("o1", "cl1", routed=True), "cl1 is not in web")

    def test_out_rules_to_group_ip_and_network(self):
        base = [rule("t1:c", "1", "out", "deny", 1, "tcp")]
        n = self.net(base + [rule("t1:c", "2", "out", "allow", 5, "tcp", to_group="web")], {"t1:client": ("t1:c",)})
        self.assertTrue(n.ok("cl1", "web1"))
        self.assertFalse(n.ok("cl1", "db1"))
        self.assertEqual([t.host for t in n.last.transmissions], [], "out rules judge on the source host")
        self.assertFalse(n.ok("cl1", "free"))
        self.assertTrue(n.ok("db1", "web1"), "db has no out rules")
        n = self.net(base + [rule("t1:c", "2", "out", "allow", 5, "tcp", to_ip="10.1.1.40")],
                     {"t1:client": ("t1:c",)})
        self.assertTrue(n.ok("cl1", "db1"))
        self.assertFalse(n.ok("cl1", "web1"))
        n = self.net([rule("t1:c", "1", "out", "deny", 1, "", to_network="other")], {"t1:client": ("t1:c",)},
                     "routing")
        self.assertFalse(n.ok("cl1", "o1", routed=True))
        self.assertTrue(n.ok("cl1", "web1"))
        self.assertTrue(n.ok("free", "o1", routed=True), "free has no group")

    def test_an_endpoint_without_a_group_is_subject_only_to_rules_naming_it(self):
        n = self.net([rule("t1:c", "1", "out", "deny", 1, "", to_ip="10.1.1.30")], {"t1:client": ("t1:c",)})
        self.assertFalse(n.ok("cl1", "free"))
        self.assertFalse(n.ok("cl1", "free", "icmp"))
        self.assertTrue(n.ok("db1", "free"))
        self.assertTrue(n.ok("free", "cl1", dport=22), "free is never a protected side")

    def test_in_icmp_deny_then_higher_from_ip_allow_and_pinging_out(self):
        n = self.net([rule("t1:p", "1", "in", "deny", 1, "icmp"),
                      rule("t1:p", "2", "in", "allow", 10, "icmp", from_ip="10.1.1.20")], {"t1:web": ("t1:p",)})
        self.assertTrue(n.ok("cl1", "web1", "icmp"))
        self.assertFalse(n.ok("cl0", "web1", "icmp"))
        self.assertFalse(n.ok("db1", "web1", "icmp"))
        self.assertTrue(n.ok("web1", "db1", "icmp"), "web can still ping out ...")
        self.assertTrue(n.reply("web1", "db1", "icmp"), "... and gets its echo replies (Contiv could not)")
        self.assertTrue(n.ok("db1", "web1", dport=80), "tcp untouched")

    def test_udp_and_a_port_without_protocol(self):
        n = self.net([rule("t1:p", "1", "in", "deny", 1, "udp"),
                      rule("t1:p", "2", "in", "allow", 10, "udp", 53)], {"t1:web": ("t1:p",)})
        self.assertTrue(n.ok("cl1", "web1", "udp", 53))
        self.assertTrue(n.reply("cl1", "web1", "udp", 53))
        self.assertFalse(n.ok("cl1", "web1", "udp", 54))
        self.assertTrue(n.ok("cl1", "web1", "tcp", 54))
        n = self.net([rule("t1:p", "1", "in", "deny", 1),
                      rule("t1:p", "2", "in", "allow", 10, "", 8000)], {"t1:web": ("t1:p",)})
        self.assertTrue(n.ok("cl1", "web1", "tcp", 8000))
        self.assertTrue(n.ok("cl1", "web1", "udp", 8000))
        self.assertFalse(n.ok("cl1", "web1", "tcp", 8001))
        self.assertFalse(n.ok("cl1", "web1", "icmp"))

    def test_numbered_protocol(self):
        n = self.net([rule("t1:p", "1", "in", "deny", 1, "17")], {"t1:web": ("t1:p",)})
        self.assertFalse(n.ok("cl1", "web1", "udp", 53))
        self.assertTrue(n.ok("cl1", "web1", "tcp", 53))

    def test_vlan_uplink_traffic_is_judged(self):
        n = self.net([rule("t1:v", "1", "in", "deny", 1, "tcp")], {"t1:vweb": ("t1:v",)})
        self.assertFalse(n.ok("vcl", "vweb"))
        self.assertEqual([t.host for t in n.last.transmissions], ["h3"])
        self.assertTrue(n.ok("vcl", "vweb", "icmp"))

    def test_two_policies_combine_and_detach(self):
        rules = [rule("t1:a", "1", "in", "deny", 1, "tcp"), rule("t1:b", "1", "in", "allow", 10, "tcp", 80)]
        n = self.net(rules, {"t1:web": ("t1:a", "t1:b")})
        self.assertTrue(n.ok("cl1", "web1"))
        self.assertFalse(n.ok("cl1", "web1", dport=22))
        n = self.net(rules, {"t1:web": ("t1:a",)})
        self.assertFalse(n.ok("cl1", "web1"))

    def test_tenants_with_identical_subnets(self):
        n = self.net([rule("t2:p", "1", "in", "deny", 1, "tcp")], {"t2:web": ("t2:p",)})
        self.assertTrue(n.ok("cl1", "web1"), "t1 is not t2")
        self.assertFalse(n.ok("t2cl", "t2web"))
        # the same 5-tuple, committed in t1's zone, is still new (and denied) in t2's
        n = self.net([rule("t2:p", "1", "in", "deny", 1, "tcp")], {"t2:web": ("t2:p",)})
        self.assertTrue(n.ok("cl1", "web1", sport=1234))
        self.assertTrue(n.ok("cl1", "web1", sport=1234))
        self.assertFalse(n.ok("t2cl", "t2web", sport=1234))
        self.assertEqual(n.ct.connections("h1", 1), 1)
        self.assertEqual(n.ct.connections("h1", 2), 0)


class DNSBeforePolicyTests(unittest.TestCase):
    """A group's ``out`` rules never cut a container off its names: DNS leaves for the
    host's DNS port before the policy stage (a deliberate choice, see pipeline/tables.py)."""

    def test_out_deny_all_still_reaches_the_dns_port(self):
        snap = snapshot([rule("t1:c", "1", "out", "deny", 1, "")], {"t1:client": ("t1:c",)})
        h = snap.hosts["h1"]
        hosts = dict(snap.hosts, h1=dataclasses.replace(h, ports=MappingProxyType({**h.ports, "cdns1": 90})))
        n = Net(dataclasses.replace(snap, hosts=MappingProxyType(hosts)))
        self.assertFalse(n.ok("cl0", "db1", "udp", 54))
        self.assertFalse(n.ok("cl0", "db1", "icmp"))
        tr = n.send("cl0", "db1", "udp", 53)
        self.assertEqual(tr.delivered_to(), [("h1", "cdns1")], str(tr))
        self.assertEqual(n.send("cl0", "db1", "tcp", 53).delivered_to(), [("h1", "cdns1")])


class ConntrackStateTests(unittest.TestCase):
    def setUp(self):
        self.net = Net(snapshot(PROD_WEB, {"t1:web": ("t1:prod_web",)}))

    def test_invalid_is_dropped_even_where_everything_is_allowed(self):
        n = self.net
        self.assertTrue(n.ok("cl1", "db1", dport=22))
        self.assertFalse(n.ok("cl1", "db1", dport=23, tcp_flags=0x12), "an unsolicited SYN+ACK")
        n.ct.invalidate(n.packet("cl1", "db1", "udp", 9))
        self.assertFalse(n.ok("cl1", "db1", "udp", 9))

    def test_related_passes_a_deny(self):
        n = self.net
        self.assertFalse(n.ok("cl1", "web1", dport=22))
        n.ct.relate(n.packet("cl1", "web1", dport=22))
        self.assertTrue(n.ok("cl1", "web1", dport=22))

    def test_new_then_established_then_reply(self):
        n = self.net
        self.assertTrue(n.ok("cl1", "web1"))
        self.assertEqual(n.ct.log[-1], ("h1", 1, T.CT_TRK | T.CT_NEW))
        self.assertTrue(n.ok("cl1", "web1"))
        self.assertEqual(n.ct.log[-1], ("h1", 1, T.CT_TRK | T.CT_EST))
        self.assertTrue(n.reply("cl1", "web1"))
        self.assertEqual(n.ct.log[-1], ("h2", 1, T.CT_TRK | T.CT_EST | T.CT_RPL))

    def test_removing_the_allowing_rule_cuts_established_connections_only(self):
        n = self.net
        self.assertTrue(n.ok("cl1", "web1", dport=80))
        self.assertTrue(n.reply("cl1", "web1", dport=80))
        self.assertTrue(n.ok("cl1", "web1", dport=443))
        self.assertTrue(n.ok("web1", "cl1", dport=5000))
        n.load(snapshot([r for r in PROD_WEB if r.key != "t1:prod_web:2"], {"t1:web": ("t1:prod_web",)}))
        self.assertFalse(n.ok("cl1", "web1", dport=80), "the opener's next packet is dropped: cut")
        self.assertTrue(n.reply("cl1", "web1", dport=80), "replies are not re-judged (documented)")
        self.assertTrue(n.ok("cl1", "web1", dport=443), "an unrelated connection goes on")
        self.assertTrue(n.ok("web1", "cl1", dport=5000))
        self.assertTrue(n.reply("web1", "cl1", dport=5000))
        n.load(snapshot(PROD_WEB, {"t1:web": ("t1:prod_web",)}))
        self.assertTrue(n.ok("cl1", "web1", dport=80), "the rule back: allowed again")

    def test_non_ip_and_broadcast_are_not_tracked(self):
        n = self.net
        before = len(n.ct.log)
        e = n.snap.endpoints["cl1"]
        arp = dict(eth_src=e.mac, eth_dst="ff:ff:ff:ff:ff:ff", eth_type=0x0806, arp_op=1, arp_sha=e.mac,
                   arp_spa=e.ip, arp_tha="00:00:00:00:00:00", arp_tpa="10.1.1.99")
        trace(n.flows, n.snap.hosts, e.host, e.port, arp, conntrack=n.ct)
        bcast = dict(n.packet("cl1", "web1", "udp", 67), eth_dst="ff:ff:ff:ff:ff:ff", ipv4_dst="10.1.1.255")
        tr = trace(n.flows, n.snap.hosts, e.host, e.port, bcast, conntrack=n.ct)
        self.assertIn(("h1", "p-web1"), tr.delivered_to())
        self.assertEqual(len(n.ct.log), before)


class IncrementalPolicyTests(unittest.TestCase):
    def test_a_rule_change_builds_only_the_groups_holding_it(self):
        rules = PROD_WEB + [rule("t1:dbp", "1", "in", "deny", 1, "udp")]
        attach = {"t1:web": ("t1:prod_web",), "t1:db": ("t1:dbp",)}
        built: List[tuple] = []
        eng = IncrementalCompiler(on_build=lambda kind, key: built.append((kind, key)))
        hosts = ("h1", "h2", "h3")
        eng.update(snapshot(rules, attach), hosts)
        built.clear()
        rules = rules + [rule("t1:prod_web", "4", "in", "allow", 10, "tcp", 8080)]
        snap = snapshot(rules, attach)
        upd = eng.update(snap, hosts)
        self.assertEqual(built, [("group", "t1:web")], "one fragment, shared by h1 and h2")
        self.assertEqual(set(upd.deltas), {"h1", "h2"}, "db's host h3 has no web endpoint")
        self.assertEqual({len(d) for d in upd.deltas.values()}, {1})
        for h in hosts:
            self.assertEqual(eng.flows(h), compile_hosts(snap, hosts).flows[h])
        built.clear()
        # an endpoint joining a group on a host where the group already is: no policy work
        eps = dict(ENDPOINTS, web3=Endpoint("web3", "h1", "t1:net", "10.1.1.12", _mac(99), "p-web3", "t1:web", 10))
        snap = snapshot(rules, attach, endpoints=eps)
        upd = eng.update(snap, hosts)
        self.assertNotIn(("group", "t1:web"), built)
        self.assertEqual(eng.flows("h1"), compile_hosts(snap, hosts).flows["h1"])
        # the first endpoint of a group on a host brings the group's fragment there, built already
        eps = dict(eps, db2=Endpoint("db2", "h1", "t1:net", "10.1.1.41", _mac(98), "p-db2", "t1:db", 12))
        built.clear()
        snap = snapshot(rules, attach, endpoints=eps)
        upd = eng.update(snap, hosts)
        self.assertNotIn(("group", "t1:db"), built)
        self.assertTrue(any(f is not None and f.table == T.POLICY_IN and f.note.startswith("t1:db")
                            for f in upd.deltas["h1"].values()))
        self.assertEqual(eng.flows("h1"), compile_hosts(snap, hosts).flows["h1"])


class FlowFormulaTests(unittest.TestCase):
    """Policy flows grow with networks and (group, rule) pairs, never with endpoints."""

    def _snap(self, n_eps: int, n_groups: int = 10, rules_per_group: int = 5) -> Tuple[Snapshot, List[Rule]]:
        net = Network("t1:big", "t1", "big", "vxlan", 7000, 9, "10.8.0.0/16")
        groups, rules, eps = {}, [], {}
        shapes = [dict(protocol="tcp", port=80), dict(protocol="", port=8000), dict(protocol="udp"),
                  dict(protocol="tcp", from_ip="10.8.1.2-200"), dict(protocol="icmp", from_group="g0")]
        for g in range(n_groups):
            pol = f"t1:pol{g}"
            groups[f"t1:g{g}"] = Group(f"t1:g{g}", "t1", net.key, 100 + g, (pol, "t1:shared"))
            for r in range(rules_per_group):
                shape = shapes[r % len(shapes)]
                rules.append(rule(pol, f"r{r}", ("in", "out")[r % 2] if "from_ip" not in shape and
                                  "from_group" not in shape else "in", ("allow", "deny")[r % 2], 1 + g + r,
                                  **shape))
        rules.append(rule("t1:shared", "s", "in", "deny", 1, "tcp"))
        for i in range(n_eps):
            eid = f"e{i}"
            eps[eid] = Endpoint(eid, "h1" if i % 4 else "h2", net.key, f"10.8.{i // 250}.{i % 250 + 1}",
                                f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}", f"p{i}", f"t1:g{i % n_groups}",
                                100 + i % n_groups)
        hosts = {}
        for i, name in enumerate(("h1", "h2"), 1):
            ports = {"vxlan0": 1, **{e.port: 10 + n for n, e in enumerate(eps.values()) if e.host == name}}
            hosts[name] = Host(name, i, f"192.168.50.{i}", MappingProxyType(ports))
        f = MappingProxyType
        return Snapshot(1, GlobalCfg(), f(TENANTS), f({net.key: net}), f(groups), f(hosts), f(eps),
                        f({r.key: r for r in rules})), rules

    @staticmethod
    def _policy_flows(flows) -> int:
        return sum(1 for f in flows if T.POLICY <= f.table <= T.POLICY_COMMIT)

    def test_200_endpoints_in_10_groups_with_50_rules(self):
        snap, rules = self._snap(200)
        flows = compile_all(snap)["h1"]
        self.assertEqual([i for i in diagnose(snap) if "rule" in i], [])
        by_group = []
        for g in snap.groups.values():
            args, _ = PL.group_args(g.key, g, [r for r in rules if r.policy in g.policies], snap.groups,
                                    snap.networks)
            by_group.append(args.rules)
        bound = PL.formula(1, by_group) - 1  # h1 has a tunnel, no uplink
        self.assertEqual(self._policy_flows(flows), bound)
        self.assertLess(bound, 200 * 50 // 10, "nowhere near endpoints x rules")
        # 4x the endpoints: the same policy flows; only the endpoints' own flows grow
        big, _ = self._snap(800)
        self.assertEqual(self._policy_flows(compile_all(big)["h1"]), bound)
