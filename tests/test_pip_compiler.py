"""The flow compiler, checked by walking packets through its output (plain data, no switch).

A three-host fabric carries two tenants: t1 with vxlan networks blue and red and
a vlan network green, and t2 whose blue and green reuse t1's subnets, IPs and
even MACs.  Behaviour is asserted with the simulator (where does this packet
go?), never by comparing flow text.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import tempfile
from types import MappingProxyType
from typing import Dict, Iterable, Optional

from twisted.internet import utils
from twisted.trial import unittest

from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.compiler import compile_all, compile_switch, cookie_for, diagnose
from contiv_sdn.pipeline.flow import COOKIE_MASK, COOKIE_MARK, Flow, make_match, shared, shared_actions
from contiv_sdn.pipeline.mtu import container_mtu
from contiv_sdn.pipeline.simulator import Trace, trace
from contiv_sdn.pipeline.state import (ROUTER_MAC, Endpoint, GlobalCfg, Host, Network, Snapshot,
                                       Tenant)
from contiv_sdn.testing import require_binary

HOSTS = ("h1", "h2", "h3")
TUNNEL_OFPORT, UPLINK_OFPORT = 1, 2
TENANTS = [Tenant("t1", 1), Tenant("t2", 2)]
NETWORKS = [
    Network("t1:blue", "t1", "blue", "vxlan", 5001, 1, "10.1.1.0/24", "10.1.1.254"),
    Network("t1:red", "t1", "red", "vxlan", 5002, 2, "10.1.2.0/24", "10.1.2.254"),
    Network("t1:green", "t1", "green", "vlan", 100, 3, "10.1.3.0/24", "10.1.3.254"),
    Network("t2:blue", "t2", "blue", "vxlan", 6001, 4, "10.1.1.0/24", "10.1.1.254"),
    Network("t2:green", "t2", "green", "vlan", 200, 5, "10.1.3.0/24", "10.1.3.254"),
]


def _ep(eid: str, host: str, net: str, ip: str, mac: str, epg: int = 0) -> Endpoint:
    return Endpoint(eid, host, net, ip, mac, f"pip-{eid}", None, epg)


ENDPOINTS = [
    _ep("a", "h1", "t1:blue", "10.1.1.1", "02:00:00:00:01:01", 10),
    _ep("d", "h1", "t1:blue", "10.1.1.4", "02:00:00:00:01:04", 10),
    _ep("b", "h2", "t1:blue", "10.1.1.2", "02:00:00:00:01:02", 20),
    _ep("c", "h3", "t1:blue", "10.1.1.3", "02:00:00:00:01:03"),
    _ep("r1", "h2", "t1:red", "10.1.2.1", "02:00:00:00:02:01", 30),
    _ep("r2", "h3", "t1:red", "10.1.2.2", "02:00:00:00:02:02"),
    _ep("g1", "h1", "t1:green", "10.1.3.1", "02:00:00:00:03:01"),
    _ep("g2", "h2", "t1:green", "10.1.3.2", "02:00:00:00:03:02"),
    _ep("g3", "h3", "t1:green", "10.1.3.3", "02:00:00:00:03:03"),
    # tenant t2: identical subnets; x is a's twin (IP and MAC), y has b's IP, z is g2's twin.
    _ep("x", "h1", "t2:blue", "10.1.1.1", "02:00:00:00:01:01", 40),
    _ep("y", "h2", "t2:blue", "10.1.1.2", "02:00:00:00:0b:02"),
    _ep("z", "h2", "t2:green", "10.1.3.2", "02:00:00:00:03:02"),
    _ep("zz", "h3", "t2:green", "10.1.3.3", "02:00:00:00:0c:03"),
]


def build(fwd: str = "bridge", arp: str = "proxy", endpoints: Optional[Iterable[Endpoint]] = None,
          unported: Iterable[str] = (), shuffle: Optional[int] = None) -> Snapshot:
    """The fabric as a snapshot; ``unported`` endpoints have a record but no OVS port yet."""
    eps = list(ENDPOINTS if endpoints is None else endpoints)
    unported = set(unported)
    hosts = {}
    for i, name in enumerate(HOSTS, 1):
        ports = {"vxlan0": TUNNEL_OFPORT, "eth1": UPLINK_OFPORT}
        # ofports follow the endpoint table order, so removing a record does not renumber others
        for n, e in enumerate(ENDPOINTS + [e for e in eps if e not in ENDPOINTS]):
            if e.host == name and e in eps and e.id not in unported:
                ports[e.port] = 10 + n
        hosts[name] = Host(name, i, f"192.168.50.{i}", MappingProxyType(ports), "vxlan0", "eth1")
    parts = [[(t.name, t) for t in TENANTS], [(n.key, n) for n in NETWORKS],
             list(hosts.items()), [(e.id, e) for e in eps]]
    if shuffle is not None:
        rnd = random.Random(shuffle)
        for p in parts:
            rnd.shuffle(p)
    tenants, nets, hosts_, eps_ = (MappingProxyType(dict(p)) for p in parts)
    return Snapshot(7, GlobalCfg(fwd, arp), tenants, nets, MappingProxyType({}), hosts_, eps_)


EP = {e.id: e for e in ENDPOINTS}


def ip_packet(src: str, dst_ip: str, dst_mac: str, **extra) -> dict:
    e = EP[src]
    return dict(dict(eth_src=e.mac, eth_dst=dst_mac, eth_type=0x0800, ipv4_src=e.ip, ipv4_dst=dst_ip,
                     ip_proto=1, ip_ttl=64), **extra)


def ping(src: str, dst: str) -> dict:
    return ip_packet(src, EP[dst].ip, EP[dst].mac)


def arp_request(src: str, target_ip: str) -> dict:
    e = EP[src]
    return dict(eth_src=e.mac, eth_dst="ff:ff:ff:ff:ff:ff", eth_type=0x0806, arp_op=1,
                arp_sha=e.mac, arp_spa=e.ip, arp_tha="00:00:00:00:00:00", arp_tpa=target_ip)


class Fabric:
    """A compiled snapshot plus convenience walks from an endpoint's port."""

    def __init__(self, snap: Snapshot, extra: Optional[Dict[str, Iterable[Flow]]] = None) -> None:
        self.snap = snap
        self.flows = {h: set(f) for h, f in compile_all(snap).items()}
        for h, fl in (extra or {}).items():
            self.flows[h] |= set(fl)

    def send(self, src: str, packet: dict) -> Trace:
        e = EP.get(src) or self.snap.endpoints[src]
        return trace(self.flows, self.snap.hosts, e.host, e.port, packet)

    def inject(self, host: str, port: str, packet: dict) -> Trace:
        return trace(self.flows, self.snap.hosts, host, port, packet)


def where(tr: Trace):
    return tr.delivered_to()


MODES = [(f, a) for f in ("bridge", "routing") for a in ("proxy", "flood")]


class CompilerContractTests(unittest.TestCase):

    def test_every_flow_passes_its_table_declaration(self):
        for fwd, arp in MODES:
            snap = build(fwd, arp)
            self.assertEqual(diagnose(snap), ())
            for host, flows in compile_all(snap).items():
                self.assertTrue(flows, host)
                T.check_flows(flows)  # raises on any breach
                for f in flows:
                    self.assertEqual(f.cookie & COOKIE_MASK, COOKIE_MARK)

    def test_compile_twice_and_in_any_order_gives_equal_flows(self):
        for fwd, arp in MODES:
            first = compile_all(build(fwd, arp))
            self.assertEqual(first, compile_all(build(fwd, arp)))
            for seed in (1, 2, 3):
                self.assertEqual(first, compile_all(build(fwd, arp, shuffle=seed)))
            snap = build(fwd, arp)
            self.assertEqual(first["h2"], compile_switch(snap, "h2"))

    def test_flood_lists_of_different_hosts_share_their_per_vtep_actions(self):
        """Each host's flood list names every other host's VTEP: made afresh, those
        actions were hosts² tuples (most of an engine's memory at 500 hosts).  Equal
        actions are now one object, and the flows are still equal values."""
        per_vtep: Dict[tuple, list] = {}
        compiled = compile_all(build("bridge", "flood"))
        for host, flows in compiled.items():
            for f in flows:
                for a in f.actions:
                    if a[:2] == ("set_field", "tun_ipv4_dst"):
                        per_vtep.setdefault(a, []).append(a)
        self.assertGreaterEqual(len(per_vtep), 2)
        self.assertTrue(any(len(same) > 1 for same in per_vtep.values()), per_vtep)
        for same in per_vtep.values():
            self.assertTrue(all(a is same[0] for a in same), same)
        self.assertEqual(compiled, compile_all(build("bridge", "flood")))

    def test_int_valued_pairs_and_actions_are_one_object_each(self):
        """Equal int-valued match pairs and actions of all compiled flows are one tuple
        each (``flow.shared``), masked int values too; MAC- and address-valued ones,
        bools and masked MACs are left alone, and nothing compares differently."""
        compiled = compile_all(build("routing", "proxy"))
        seen: Dict[tuple, tuple] = {}
        n = masked = 0

        def int_or_masked_int(v):
            return type(v) is int or (type(v) is tuple and len(v) == 2
                                      and all(type(x) is int for x in v))

        for flows in compiled.values():
            for f in flows:
                for t in f.match + f.actions:
                    if int_or_masked_int(t[-1]) and all(type(v) in (int, str) for v in t[1:-1]):
                        self.assertIs(seen.setdefault(t, t), t, t)
                        n += 1
                        masked += type(t[-1]) is tuple
        self.assertGreater(n, len(seen))  # there were equal ones to share
        self.assertGreater(masked, 1)

        def fresh(*values):  # (made at run time: equal constants may be one object already)
            return tuple(values)
        a, b = fresh("reg1", 7), fresh("reg1", 7)
        self.assertIsNot(a, b)
        self.assertIs(shared(a), shared(b))
        m1, m2 = fresh("reg4", fresh(1, 3)), fresh("reg4", fresh(1, 3))
        self.assertIs(shared(m1), shared(m2))
        self.assertIs(shared(m1)[1], shared(fresh("reg5", fresh(1, 3)))[1])
        for kept in (fresh("eth_dst", "02:00:00:00:00:01"), fresh("ct", True, 5, 51),
                     fresh("eth_dst", fresh("01:00:00:00:00:00", "01:00:00:00:00:00")),
                     fresh("reg4", fresh(1, 3, 5)), fresh("x", 1.0)):
            self.assertIs(shared(kept), kept)
        one = fresh("x", 1)
        self.assertIs(shared(one), one)
        self.assertIsNot(shared(fresh("x", True)), one)  # a bool is kept apart from the equal int
        self.assertEqual(compiled, compile_all(build("routing", "proxy")))

    def test_an_endpoints_address_and_mac_are_the_stored_records_strings(self):
        """From the stored record through the snapshot to the engine's endpoint, an
        already canonical address and MAC are the same strings, not a copy at each step."""
        from contiv_sdn.controller.snapshot import build_checked
        from contiv_sdn.pipeline.compiler import resolve_ep, resolve_net
        rec = {"network": "default:n", "ipAddress": "".join(["10.1.1.5", "/24"]),
               "macAddress": "".join(["02:02:0a:01:01:", "05"]), "homingHost": "h1", "intfName": "p1"}
        data = {"tenant": {"default": {"vrfId": 1}},
                "obj:network": {"default:n": {"encap": "vxlan", "subnet": "10.1.1.0/24"}},
                "network": {"default:n": {"netId": 1, "encap": "vxlan", "vni": 5001, "subnet": "10.1.1.0/24"}},
                "endpoint": {"e1": rec}}
        snap = build_checked(1, data, {}).snapshot
        e = snap.endpoints["e1"]
        self.assertIs(e.mac, rec["macAddress"])
        net, _issue = resolve_net("default:n", snap.networks["default:n"], snap.tenants)
        ep, _issue = resolve_ep("e1", e, {"default:n": net})
        self.assertIs(ep.mac, e.mac)
        self.assertIs(ep.ip, e.ip)
        upper = dataclasses.replace(e, mac="02:AB:00:00:00:01", ip="10.1.1.6/24")
        ep, _issue = resolve_ep("e1", upper, {"default:n": net})
        self.assertEqual((ep.mac, ep.ip), ("02:ab:00:00:00:01", "10.1.1.6"))

    def test_an_endpoints_mac_is_one_string_in_all_its_flows(self):
        """A lower-case MAC is kept as given (it was lowered into a new string in each
        flow: five copies per endpoint); an upper-case one is still lowered."""
        compiled = compile_all(build("routing", "proxy"))
        macs: Dict[tuple, list] = {}
        for flows in compiled.values():
            for f in flows:
                if not f.note.startswith("ep:"):
                    continue
                for t in f.match + f.actions:
                    v = t[-1]
                    if type(v) is str and len(v) == 17 and v.count(":") == 5:
                        macs.setdefault((f.cookie, v), []).append(v)
        self.assertTrue(any(len(same) > 2 for same in macs.values()), macs)
        for same in macs.values():
            self.assertTrue(all(m is same[0] for m in same), same)
        upper = make_match(eth_dst="02:AB:00:00:00:01")
        self.assertEqual(upper, (("eth_dst", "02:ab:00:00:00:01"),))

    def test_short_action_lists_of_shared_actions_are_one_tuple(self):
        """Every endpoint of a network classifies with the same short action list: one
        tuple for all (``flow.shared_actions``); a list holding an endpoint's own MAC is
        its own, and a long list is never kept in the table."""
        def fresh(*values):
            return tuple(values)
        one = shared_actions([fresh("set_field", "reg0", 1), fresh("set_field", "reg1", 2)])
        two = shared_actions([fresh("set_field", "reg0", 1), fresh("set_field", "reg1", 2)])
        self.assertIs(one, two)
        mine = [fresh("set_field", "eth_dst", "02:00:00:00:00:01"), fresh("output", 3)]
        self.assertIsNot(shared_actions(mine), shared_actions(list(mine)))
        self.assertEqual(shared_actions(mine), tuple(mine))
        long = [fresh("output", p) for p in range(5)]
        self.assertIsNot(shared_actions(long), shared_actions(list(long)))
        compiled = compile_all(build("bridge", "proxy"))
        lists: Dict[tuple, list] = {}
        for flows in compiled.values():
            for f in flows:
                if f.table == T.CLASSIFY and f.actions:
                    lists.setdefault(f.actions, []).append(f.actions)
        self.assertTrue(any(len(same) > 1 for same in lists.values()), lists)
        for same in lists.values():
            if all(type(a[-1]) is int for a in same[0]):
                self.assertTrue(all(x is same[0] for x in same), same)

    def test_modes_really_differ(self):
        # guards the tests below against a compiler that ignores the global settings
        flows = {m: compile_all(build(*m))["h1"] for m in MODES}
        self.assertEqual(len({flows[m] for m in [("bridge", "proxy"), ("bridge", "flood"), ("routing", "proxy")]}), 3)
        # routing mode never floods ARP, so the ARP mode makes no difference there
        self.assertEqual(flows[("routing", "proxy")], flows[("routing", "flood")])

    def test_no_flow_can_send_remote_traffic_back_to_the_underlay(self):
        # OpenFlow already drops output to the ingress port; this is the pipeline's own guard,
        # which also covers tunnel -> uplink.  Every output to an underlay port requires REMOTE=0.
        for fwd, arp in MODES:
            for host, flows in compile_all(build(fwd, arp)).items():
                underlay = {TUNNEL_OFPORT, UPLINK_OFPORT}
                checked = 0
                for f in flows:
                    if any(a[0] == "output" and a[1] in underlay for a in f.actions):
                        self.assertEqual(dict(f.match).get(T.REG_FLAGS), (0, T.FLAG_REMOTE), f.to_ofctl())
                        checked += 1
                self.assertGreater(checked, 0)

    def test_unknown_host_gets_nothing(self):
        self.assertEqual(compile_switch(build(), "nope"), frozenset())

    def test_cookies_name_their_owner(self):
        flows = compile_all(build("routing"))
        cookies = {f.cookie for fl in flows.values() for f in fl}
        owners = ({cookie_for("base")} | {cookie_for("net", n.key) for n in NETWORKS}
                  | {cookie_for("ep", e.id) for e in ENDPOINTS})
        self.assertLessEqual(cookies, owners)
        self.assertEqual(len(owners), 1 + len(NETWORKS) + len(ENDPOINTS))  # no collision here
        # an endpoint's local flows carry its cookie
        self.assertTrue(any(f.cookie == cookie_for("ep", "a") and f.table == T.CLASSIFY
                            for f in flows["h1"]))

    async def _dump_in_subprocess(self, seed: str) -> bytes:
        code = ("from tests.test_pip_compiler import build; from contiv_sdn.pipeline.compiler import compile_all;"
                "f = compile_all(build('routing'));"
                "print('\\n'.join(x.to_ofctl() for h in sorted(f) for x in sorted(f[h])))")
        env = dict(os.environ, PYTHONHASHSEED=seed)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out, err, rc = await utils.getProcessOutputAndValue(sys.executable, ["-c", code], env=env, path=root)
        self.assertEqual(rc, 0, err)
        return out

    async def test_output_does_not_depend_on_the_hash_seed(self):
        a = await self._dump_in_subprocess("1")
        b = await self._dump_in_subprocess("2")
        self.assertTrue(a.strip())
        self.assertEqual(a, b)

    async def test_ovs_ofctl_accepts_every_flow(self):
        require_binary("ovs-ofctl")
        for fwd, arp in MODES:
            for host, flows in compile_all(build(fwd, arp)).items():
                with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as fh:
                    fh.write("".join(f.to_ofctl() + "\n" for f in sorted(flows)))
                self.addCleanup(os.unlink, fh.name)
                out, err, rc = await utils.getProcessOutputAndValue(
                    "ovs-ofctl", ["-O", "OpenFlow13", "parse-flows", fh.name], env=os.environ)
                self.assertEqual(rc, 0, err)
                self.assertEqual(out.count(b"FLOW_MOD"), len(flows), (fwd, arp, host))

    def test_invalid_records_are_reported_not_fatal(self):
        eps = ENDPOINTS + [
            _ep("bad-ip", "h1", "t1:blue", "10.1.1.300", "02:00:00:00:0f:01"),
            _ep("no-net", "h1", "t1:nope", "10.9.9.9", "02:00:00:00:0f:02"),
            _ep("dup-mac", "h3", "t1:blue", "10.1.1.77", "02:00:00:00:01:02"),  # b's MAC
        ]
        snap = build(endpoints=eps)
        issues = "\n".join(diagnose(snap))
        self.assertIn("bad-ip", issues)
        self.assertIn("no-net", issues)
        self.assertIn("dup-mac", issues)
        flows = compile_all(snap)
        for fl in flows.values():
            T.check_flows(fl)
        # the first record in id order ("b" < "dup-mac") keeps the MAC
        fab = Fabric(snap)
        self.assertEqual(where(fab.send("a", ping("a", "b"))), [("h2", "pip-b")])

    def test_container_mtu(self):
        self.assertEqual(container_mtu("vxlan"), 1450)
        self.assertEqual(container_mtu("vxlan", 9000), 8950)
        self.assertEqual(container_mtu("vlan"), 1500)
        self.assertRaises(ValueError, container_mtu, "gre")
        self.assertRaises(ValueError, container_mtu, "vxlan", 100)


class BridgeModeTests(unittest.TestCase):

    def setUp(self):
        self.fab = Fabric(build("bridge", "proxy"))

    def assertPing(self, src: str, dst: str, vni: Optional[int] = None, vlan: Optional[int] = None):
        sent = ping(src, dst)
        tr = self.fab.send(src, sent)
        self.assertEqual(where(tr), [(EP[dst].host, EP[dst].port)], str(tr))
        self.assertEqual(dict(tr.deliveries[0].packet), sent)  # bridged: unchanged, untagged
        if vni is not None:
            self.assertEqual([(t.packet["tunnel_id"], t.receivers) for t in tr.transmissions],
                             [(vni, (EP[dst].host,))])
        if vlan is not None:
            self.assertEqual([t.packet["vlan_vid"] for t in tr.transmissions], [T.OFPVID_PRESENT | vlan])
        return tr

    def test_ping_over_vxlan_both_ways(self):
        self.assertPing("a", "b", vni=5001)
        self.assertPing("b", "a", vni=5001)
        self.assertPing("c", "a", vni=5001)

    def test_ping_over_vlan_uplink_both_ways(self):
        tr = self.assertPing("g1", "g3", vlan=100)
        self.assertEqual(tr.transmissions[0].receivers, ("h2", "h3"))  # shared segment; h2 drops it
        self.assertPing("g3", "g1", vlan=100)
        self.assertPing("g2", "g1", vlan=100)

    def test_local_delivery_stays_on_the_host(self):
        tr = self.fab.send("a", ping("a", "d"))
        self.assertEqual(where(tr), [("h1", "pip-d")])
        self.assertEqual(tr.transmissions, [])

    def test_networks_are_isolated(self):
        for src, dst in (("a", "r1"), ("r1", "b"), ("a", "g1"), ("g2", "b")):
            tr = self.fab.send(src, ping(src, dst))
            self.assertEqual(tr.deliveries, [], str(tr))
        # no router in bridge mode
        tr = self.fab.send("a", ip_packet("a", EP["r1"].ip, ROUTER_MAC))
        self.assertEqual(tr.deliveries, [])
        self.assertEqual(tr.transmissions, [])

    def test_tenants_with_identical_addresses_are_isolated(self):
        # x is a's twin (same IP, same MAC) in t2; b's MAC is only in t1
        tr = self.fab.send("x", ip_packet("x", "10.1.1.2", EP["b"].mac))
        self.assertEqual(tr.deliveries, [], str(tr))
        tr = self.fab.send("x", ip_packet("x", "10.1.1.2", EP["y"].mac))
        self.assertEqual(where(tr), [("h2", "pip-y")])
        self.assertEqual([t.packet["tunnel_id"] for t in tr.transmissions], [6001])
        # replies to the shared MAC reach the right twin
        self.assertEqual(where(self.fab.send("y", ping("y", "x"))), [("h1", "pip-x")])
        self.assertEqual(where(self.fab.send("b", ping("b", "a"))), [("h1", "pip-a")])
        # g2 and z are twins on the same host, in different VLANs
        self.assertEqual(where(self.fab.send("g1", ping("g1", "g2"))), [("h2", "pip-g2")])
        self.assertEqual(where(self.fab.send("zz", ping("zz", "z"))), [("h2", "pip-z")])
        # broadcasts stay in the tenant's network
        bcast = ip_packet("x", "10.1.1.255", "ff:ff:ff:ff:ff:ff")
        self.assertEqual(where(self.fab.send("x", bcast)), [("h2", "pip-y")])

    def test_proxy_arp_is_answered_on_the_requesting_host(self):
        tr = self.fab.send("a", arp_request("a", EP["b"].ip))
        self.assertEqual(where(tr), [("h1", "pip-a")], str(tr))
        self.assertEqual(tr.transmissions, [])
        reply = tr.deliveries[0].packet
        self.assertEqual(reply, dict(eth_src=EP["b"].mac, eth_dst=EP["a"].mac, eth_type=0x0806, arp_op=2,
                                     arp_sha=EP["b"].mac, arp_spa=EP["b"].ip,
                                     arp_tha=EP["a"].mac, arp_tpa=EP["a"].ip))
        # the same question in t2 gets t2's answer
        tr = self.fab.send("x", arp_request("x", "10.1.1.2"))
        self.assertEqual(where(tr), [("h1", "pip-x")])
        self.assertEqual(tr.deliveries[0].packet["arp_sha"], EP["y"].mac)
        # vlan networks too
        tr = self.fab.send("g1", arp_request("g1", EP["g3"].ip))
        self.assertEqual((where(tr), tr.deliveries[0].packet["arp_sha"]), ([("h1", "pip-g1")], EP["g3"].mac))
        self.assertEqual(tr.transmissions, [])

    def test_proxy_arp_never_leaks(self):
        for src, target in (("a", "10.1.1.99"),  # unknown: dropped
                            ("a", EP["r1"].ip),  # another network
                            ("a", EP["a"].ip),  # gratuitous
                            ("a", "10.1.1.254")):  # no gateway ARP in bridge mode
            tr = self.fab.send(src, arp_request(src, target))
            self.assertEqual((tr.deliveries, tr.transmissions), ([], []), (target, str(tr)))

    def test_broadcast_is_replicated_within_the_network(self):
        tr = self.fab.send("a", ip_packet("a", "10.1.1.255", "ff:ff:ff:ff:ff:ff"))
        self.assertEqual(where(tr), [("h1", "pip-d"), ("h2", "pip-b"), ("h3", "pip-c")])
        self.assertEqual(sorted((t.packet["tun_ipv4_dst"], t.packet["tunnel_id"]) for t in tr.transmissions),
                         [("192.168.50.2", 5001), ("192.168.50.3", 5001)])
        tr = self.fab.send("g2", ip_packet("g2", "10.1.3.255", "ff:ff:ff:ff:ff:ff"))
        self.assertEqual(where(tr), [("h1", "pip-g1"), ("h3", "pip-g3")])
        self.assertEqual(len(tr.transmissions), 1)  # one copy on the shared segment

    def test_spoofed_sources_are_dropped(self):
        tagged = dict(ping("a", "b"), vlan_vid=T.OFPVID_PRESENT | 100)
        for packet in (dict(ping("a", "b"), ipv4_src="10.1.1.9"),
                       dict(ping("a", "b"), eth_src=EP["d"].mac),
                       dict(ping("a", "b"), ipv4_src=EP["d"].ip),
                       dict(arp_request("a", EP["b"].ip), arp_spa=EP["d"].ip),
                       dict(arp_request("a", EP["b"].ip), arp_sha=EP["d"].mac),
                       tagged,
                       dict(eth_src=EP["a"].mac, eth_dst=EP["b"].mac, eth_type=0x86DD)):
            tr = self.fab.send("a", packet)
            self.assertEqual((tr.deliveries, tr.transmissions), ([], []), (packet, str(tr)))
        # and the unspoofed version does go through (the checks above are not vacuous)
        self.assertEqual(where(self.fab.send("a", ping("a", "b"))), [("h2", "pip-b")])

    def test_tunnel_and_uplink_traffic_never_goes_back(self):
        from_tunnel = dict(ping("a", "c"), tunnel_id=5001, tun_ipv4_src="192.168.50.1",
                           tun_ipv4_dst="192.168.50.2")
        tr = self.fab.inject("h2", "vxlan0", from_tunnel)  # c lives on h3, not here
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []), str(tr))
        tr = self.fab.inject("h2", "vxlan0", dict(from_tunnel, eth_dst="ff:ff:ff:ff:ff:ff"))
        self.assertEqual(where(tr), [("h2", "pip-b")])
        self.assertEqual(tr.transmissions, [])
        tr = self.fab.inject("h2", "eth1", dict(ping("g1", "g3"), vlan_vid=T.OFPVID_PRESENT | 100))
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []))
        tr = self.fab.inject("h2", "eth1", dict(ping("g1", "g2"), vlan_vid=T.OFPVID_PRESENT | 100))
        self.assertEqual(where(tr), [("h2", "pip-g2")])
        # an unknown VNI or VLAN is not classified at all
        tr = self.fab.inject("h2", "vxlan0", dict(from_tunnel, tunnel_id=7777, eth_dst=EP["b"].mac))
        self.assertEqual(tr.deliveries, [])

    def test_endpoint_without_port_gets_no_local_flows(self):
        snap = build(unported=["c"])
        flows = compile_all(snap)
        self.assertFalse([f for f in flows["h3"] if f.cookie == cookie_for("ep", "c")])
        fab = Fabric(snap)
        tr = fab.send("a", ping("a", "c"))  # h1 already sends it to h3, where it is dropped
        self.assertEqual(tr.deliveries, [])
        self.assertEqual([t.receivers for t in tr.transmissions], [("h3",)])
        # the port appears: only c's own flows (and h3's flood list for blue) change
        after = compile_all(build())
        for host in HOSTS:
            added, removed = after[host] - flows[host], flows[host] - after[host]
            if host != "h3":
                self.assertEqual((added, removed), (frozenset(), frozenset()), host)
                continue
            self.assertTrue(added)
            self.assertEqual({f.cookie for f in added} - {cookie_for("ep", "c")}, {cookie_for("net", "t1:blue")})
            self.assertTrue(all(f.cookie == cookie_for("net", "t1:blue") and f.table == T.OUTPUT for f in removed))

    def test_removing_an_endpoint_removes_exactly_its_flows(self):
        for fwd, arp in MODES:
            before = compile_all(build(fwd, arp))
            after = compile_all(build(fwd, arp, endpoints=[e for e in ENDPOINTS if e.id != "d"]))
            mine = cookie_for("ep", "d")
            for host in HOSTS:
                removed, added = before[host] - after[host], after[host] - before[host]
                self.assertLessEqual({f for f in before[host] if f.cookie == mine}, removed)
                self.assertFalse([f for f in after[host] if f.cookie == mine])
                # anything else that changed is h1's blue flood list, which named d's port
                others = {f for f in removed | added if f.cookie != mine}
                expect_flood = host == "h1"
                self.assertEqual(bool(others), expect_flood, (fwd, arp, host, others))
                for f in others:
                    self.assertEqual((f.cookie, f.table), (cookie_for("net", "t1:blue"), T.OUTPUT))
                    self.assertEqual(dict(f.match)[T.REG_OUT], T.OUT_FLOOD)
            # the change really happened on every host that knew d
            self.assertTrue(any(f.cookie == mine for f in before["h2"]))


class FloodModeTests(unittest.TestCase):

    def setUp(self):
        self.fab = Fabric(build("bridge", "flood"))

    def test_arp_request_is_flooded_within_the_network_only(self):
        tr = self.fab.send("a", arp_request("a", EP["b"].ip))
        self.assertEqual(where(tr), [("h1", "pip-d"), ("h2", "pip-b"), ("h3", "pip-c")])
        self.assertEqual(sorted(t.receivers for t in tr.transmissions), [("h2",), ("h3",)])
        self.assertEqual({t.packet["tunnel_id"] for t in tr.transmissions}, {5001})
        # the answer is unicast back
        reply = dict(eth_src=EP["b"].mac, eth_dst=EP["a"].mac, eth_type=0x0806, arp_op=2,
                     arp_sha=EP["b"].mac, arp_spa=EP["b"].ip, arp_tha=EP["a"].mac, arp_tpa=EP["a"].ip)
        self.assertEqual(where(self.fab.send("b", reply)), [("h1", "pip-a")])
        # t2's twin floods in t2 only
        tr = self.fab.send("x", arp_request("x", "10.1.1.2"))
        self.assertEqual(where(tr), [("h2", "pip-y")])
        # vlan
        tr = self.fab.send("zz", arp_request("zz", "10.1.3.2"))
        self.assertEqual(where(tr), [("h2", "pip-z")])

    def test_unknown_target_is_flooded_too(self):
        tr = self.fab.send("c", arp_request("c", "10.1.1.99"))
        self.assertEqual(where(tr), [("h1", "pip-a"), ("h1", "pip-d"), ("h2", "pip-b")])


def with_dns_ports(snap: Snapshot, host: str, ports: Dict[str, int]) -> Snapshot:
    hosts = dict(snap.hosts)
    h = hosts[host]
    hosts[host] = dataclasses.replace(h, ports=MappingProxyType({**h.ports, **ports}))
    return dataclasses.replace(snap, hosts=MappingProxyType(hosts))


class DNSServingPathTests(unittest.TestCase):
    """A local endpoint's DNS (any resolver) goes to its VRF's ``cdns<vrf>`` port before
    policy; answers from that port reach only the endpoint they are addressed to."""

    def setUp(self):
        self.fab = Fabric(with_dns_ports(build("bridge", "proxy"), "h1", {"cdns1": 90, "cdns2": 91}))

    def test_queries_go_to_the_tenants_dns_port(self):
        q = ip_packet("a", "192.0.2.53", ROUTER_MAC, ip_proto=17, udp_dst=53)
        self.assertEqual(where(self.fab.send("a", q)), [("h1", "cdns1")])
        self.assertEqual(self.fab.send("a", q).deliveries[0].packet["eth_dst"], "02:00:00:00:00:53")
        tq = ip_packet("a", "10.1.1.254", ROUTER_MAC, ip_proto=6, tcp_dst=53)
        self.assertEqual(where(self.fab.send("a", tq)), [("h1", "cdns1")])
        # a's twin in t2 (same IP and MAC) reaches t2's port
        x = ip_packet("x", "192.0.2.53", ROUTER_MAC, ip_proto=17, udp_dst=53)
        self.assertEqual(where(self.fab.send("x", x)), [("h1", "cdns2")])
        # other ports are not DNS; a spoofed source is not served
        other = ip_packet("a", "192.0.2.53", ROUTER_MAC, ip_proto=17, udp_dst=54)
        self.assertEqual(self.fab.send("a", other).deliveries, [])
        spoofed = dict(q, ipv4_src="10.1.1.9")
        self.assertEqual(self.fab.send("a", spoofed).deliveries, [])

    def test_answers_reach_only_their_endpoint(self):
        ans = dict(eth_src="02:00:00:00:00:53", eth_dst=ROUTER_MAC, eth_type=0x0800,
                   ipv4_src="192.0.2.53", ipv4_dst="10.1.1.1", ip_proto=17, ip_ttl=64)
        tr = self.fab.inject("h1", "cdns1", ans)
        self.assertEqual(where(tr), [("h1", "pip-a")])
        self.assertEqual(tr.deliveries[0].packet["eth_dst"], EP["a"].mac)
        self.assertEqual(where(self.fab.inject("h1", "cdns2", ans)), [("h1", "pip-x")])
        # nothing else leaves a DNS port: not to a remote endpoint, not ARP
        self.assertEqual(self.fab.inject("h1", "cdns1", dict(ans, ipv4_dst="10.1.1.2")).deliveries, [])
        tr = self.fab.inject("h1", "cdns1", dict(arp_request("a", "10.1.1.4"), eth_src="02:00:00:00:00:53"))
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []))

    def test_gateway_arp_only_with_the_dns_port(self):
        tr = self.fab.send("a", arp_request("a", "10.1.1.254"))
        self.assertEqual(where(tr), [("h1", "pip-a")])
        plain = Fabric(build("bridge", "proxy"))
        self.assertEqual(where(plain.send("a", arp_request("a", "10.1.1.254"))), [])
        # h2 has no DNS port: no DNS flows there
        q = ip_packet("b", "192.0.2.53", ROUTER_MAC, ip_proto=17, udp_dst=53)
        self.assertEqual(self.fab.send("b", q).deliveries, [])


class RoutingModeTests(unittest.TestCase):

    def setUp(self):
        self.fab = Fabric(build("routing", "proxy"))

    def assertRouted(self, src: str, dst: str, vni: Optional[int] = None, vlan: Optional[int] = None):
        tr = self.fab.send(src, ip_packet(src, EP[dst].ip, ROUTER_MAC))
        self.assertEqual(where(tr), [(EP[dst].host, EP[dst].port)], str(tr))
        got = tr.deliveries[0].packet
        self.assertEqual((got["eth_src"], got["eth_dst"], got["ip_ttl"], got["ipv4_src"], got.get("vlan_vid")),
                         (ROUTER_MAC, EP[dst].mac, 63, EP[src].ip, None))
        if vni is not None:
            self.assertEqual([t.packet["tunnel_id"] for t in tr.transmissions], [vni])
        if vlan is not None:
            self.assertEqual([t.packet["vlan_vid"] for t in tr.transmissions], [T.OFPVID_PRESENT | vlan])
        return tr

    def test_routed_between_vxlan_networks_both_ways(self):
        self.assertRouted("a", "r1", vni=5002)  # carried in the destination network's VNI
        self.assertRouted("r1", "a", vni=5001)
        self.assertRouted("c", "r2")  # same host
        self.assertEqual(self.fab.send("c", ip_packet("c", EP["r2"].ip, ROUTER_MAC)).transmissions, [])

    def test_routed_between_vxlan_and_vlan(self):
        self.assertRouted("a", "g3", vlan=100)
        self.assertRouted("g3", "a", vni=5001)
        self.assertRouted("g2", "r2", vni=5002)

    def test_bridging_still_works_in_routing_mode(self):
        tr = self.fab.send("a", ping("a", "b"))
        self.assertEqual(where(tr), [("h2", "pip-b")])

    def test_gateway_answers_arp_with_the_router_mac(self):
        for src, gw in (("a", "10.1.1.254"), ("g2", "10.1.3.254"), ("x", "10.1.1.254")):
            tr = self.fab.send(src, arp_request(src, gw))
            self.assertEqual(where(tr), [(EP[src].host, EP[src].port)])
            self.assertEqual(tr.transmissions, [])
            got = tr.deliveries[0].packet
            self.assertEqual((got["arp_op"], got["arp_sha"], got["arp_spa"], got["eth_dst"]),
                             (2, ROUTER_MAC, gw, EP[src].mac))

    def test_no_arp_flooding_even_if_flood_is_configured(self):
        fab = Fabric(build("routing", "flood"))
        tr = fab.send("a", arp_request("a", "10.1.1.99"))
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []))
        tr = fab.send("a", arp_request("a", EP["b"].ip))
        self.assertEqual((where(tr), tr.transmissions), ([("h1", "pip-a")], []))

    def test_routing_never_crosses_tenants(self):
        tr = self.fab.send("x", ip_packet("x", EP["r1"].ip, ROUTER_MAC))  # t2 has no 10.1.2.0/24
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []), str(tr))
        # 10.1.3.2 exists in both tenants (g2, z, same MAC, same host): x reaches its own
        tr = self.fab.send("x", ip_packet("x", "10.1.3.2", ROUTER_MAC))
        self.assertEqual(where(tr), [("h2", "pip-z")])
        self.assertEqual([t.packet["vlan_vid"] for t in tr.transmissions], [T.OFPVID_PRESENT | 200])
        tr = self.fab.send("a", ip_packet("a", "10.1.3.2", ROUTER_MAC))
        self.assertEqual(where(tr), [("h2", "pip-g2")])

    def test_ttl_expires(self):
        tr = self.fab.send("a", ip_packet("a", EP["r1"].ip, ROUTER_MAC, ip_ttl=1))
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []))
        self.assertIn("TTL expired", [d.reason for d in tr.drops])

    def test_unknown_destination_is_dropped(self):
        tr = self.fab.send("a", ip_packet("a", "10.1.2.99", ROUTER_MAC))
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []))


class PolicyRegisterTests(unittest.TestCase):
    """The registers the policy stage will match are really set when a packet reaches POLICY."""

    def _deny(self, **match) -> Flow:
        flow = Flow(T.POLICY, 100, make_match(**match), cookie=COOKIE_MARK | 0xFFFF)
        T.check_flow(flow)
        return flow

    def _fabric(self, fwd: str, deny: Dict[str, Flow]) -> Fabric:
        eps = [dataclasses.replace(e, epg_id={"a": 65535, "b": 40000, "r1": 1}.get(e.id, e.epg_id))
               for e in ENDPOINTS]
        return Fabric(build(fwd, endpoints=eps), {h: [f] for h, f in deny.items()})

    def test_source_and_destination_groups_on_the_sending_host(self):
        deny = self._deny(reg2=65535, reg3=40000)
        fab = self._fabric("bridge", {"h1": deny})
        tr = fab.send("a", ping("a", "b"))
        self.assertEqual((tr.deliveries, tr.transmissions), ([], []))
        self.assertEqual(where(fab.send("d", ping("d", "b"))), [("h2", "pip-b")])  # other group: allowed
        self.assertEqual(where(fab.send("b", ping("b", "a"))), [("h1", "pip-a")])  # other direction

    def test_source_group_is_known_on_the_receiving_host(self):
        deny = self._deny(reg2=65535, reg3=40000, reg4=(T.FLAG_REMOTE, T.FLAG_REMOTE))
        fab = self._fabric("bridge", {"h2": deny})
        tr = fab.send("a", ping("a", "b"))
        self.assertEqual(tr.deliveries, [])
        self.assertEqual(len(tr.transmissions), 1)  # left h1, stopped at h2's policy
        self.assertEqual(where(fab.send("d", ping("d", "b"))), [("h2", "pip-b")])

    def test_routed_source_group_is_known_on_the_receiving_host(self):
        deny = self._deny(reg2=65535, reg3=1, reg1=2)
        fab = self._fabric("routing", {"h2": deny})
        self.assertEqual(fab.send("a", ip_packet("a", EP["r1"].ip, ROUTER_MAC)).deliveries, [])
        self.assertEqual(where(fab.send("d", ip_packet("d", EP["r1"].ip, ROUTER_MAC))), [("h2", "pip-r1")])

    def test_vrf_register_separates_tenants(self):
        deny = self._deny(reg0=2)
        fab = self._fabric("bridge", {"h1": deny})
        self.assertEqual(fab.send("x", ping("x", "y")).deliveries, [])
        self.assertEqual(where(fab.send("a", ping("a", "b"))), [("h2", "pip-b")])
