"""ACI mode (issue 16, item 2): the datapath and the store, as Contiv did it.

Plain data first (compiler + simulator, no switch): a VLAN network ``t1:net``
(tag 100) on three hosts, groups ``web`` (VLAN 301) and ``db`` (VLAN 302), and an
endpoint without a group.  Behaviour is asserted by walking packets:

* an endpoint in a group leaves on the uplink with its group's VLAN (unicast and
  broadcast), one without a group with the network's;
* a frame from the uplink with any group VLAN of the network is the network's
  (a fabric may deliver with the sender's or the receiver's group VLAN);
* a deny-all policy that drops the ping outside ACI mode lets it through in ACI
  mode, and no group rule flow exists there: the fabric enforces policy;
* two groups on one host are switched locally (see docs/design.md, "ACI mode").

Then the store, through a real netmaster (``--infra aci``) on a real redis-server:
a vxlan network is refused with Contiv's text, each group takes its own VLAN from
the global pool in the create's transaction (nothing of a refused create is
kept), shows it as ``pktTag`` in its oper, and gives it back when deleted.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Dict, Optional

from twisted.trial import unittest

from contiv_sdn.controller.snapshot import build_snapshot
from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.compiler import compile_all
from contiv_sdn.pipeline.incremental import IncrementalCompiler
from contiv_sdn.pipeline.policy import P_RULE_BASE
from contiv_sdn.pipeline.simulator import Trace, trace
from contiv_sdn.pipeline.state import Endpoint, GlobalCfg, Group, Host, Network, Rule, Snapshot, Tenant
from tests.test_fnd_api import NetmasterCase
from tests.test_fnd_helpers import async_test

NET = Network("t1:net", "t1", "net", "vlan", 100, 1, "20.1.1.0/24", "20.1.1.254")
GROUPS = {
    "t1:web": Group("t1:web", "t1", "t1:net", 10, ("t1:deny",), vlan=301),
    "t1:db": Group("t1:db", "t1", "t1:net", 11, ("t1:deny",), vlan=302),
}
EPS = {e.id: e for e in (
    Endpoint("w1", "h1", "t1:net", "20.1.1.1", "02:00:00:00:00:01", "p-w1", "t1:web", 10),
    Endpoint("d1", "h1", "t1:net", "20.1.1.2", "02:00:00:00:00:02", "p-d1", "t1:db", 11),
    Endpoint("d2", "h2", "t1:net", "20.1.1.3", "02:00:00:00:00:03", "p-d2", "t1:db", 11),
    Endpoint("w2", "h2", "t1:net", "20.1.1.4", "02:00:00:00:00:04", "p-w2", "t1:web", 10),
    Endpoint("n3", "h3", "t1:net", "20.1.1.5", "02:00:00:00:00:05", "p-n3"),
)}
#: in: deny everything (priority 1): outside ACI mode no group member can be reached
DENY_ALL = Rule("t1:deny:1", "t1", "t1:deny", "in", "deny", 1)
UPLINK = 2


def snapshot(aci: bool = True, arp: str = "proxy", groups: Optional[Dict[str, Group]] = None) -> Snapshot:
    hosts = {}
    for i, name in enumerate(("h1", "h2", "h3"), 1):
        ports = {"vxlan0": 1, "eth1": UPLINK}
        for n, e in enumerate(EPS.values()):
            if e.host == name:
                ports[e.port] = 10 + n
        hosts[name] = Host(name, i, f"192.168.71.{i}", MappingProxyType(ports), "vxlan0", "eth1")
    f = MappingProxyType
    return Snapshot(1, GlobalCfg("bridge", arp, aci), f({"t1": Tenant("t1", 1)}), f({NET.key: NET}),
                    f(GROUPS if groups is None else groups), f(hosts), f(EPS), f({DENY_ALL.key: DENY_ALL}))


def ping(src: str, dst: str) -> dict:
    s, d = EPS[src], EPS[dst]
    return dict(eth_src=s.mac, eth_dst=d.mac, eth_type=0x0800, ipv4_src=s.ip, ipv4_dst=d.ip,
                ip_proto=1, ip_ttl=64)


class Fabric:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.flows = compile_all(snap)

    def send(self, src: str, packet: dict) -> Trace:
        e = EPS[src]
        return trace(self.flows, self.snap.hosts, e.host, e.port, packet)

    def inject(self, host: str, packet: dict) -> Trace:
        return trace(self.flows, self.snap.hosts, host, "eth1", packet)


def tags(tr: Trace):
    return [t.packet.get("vlan_vid", 0) & 0xFFF for t in tr.transmissions]


class AciDatapathTests(unittest.TestCase):

    def test_a_group_member_leaves_on_its_group_vlan_others_on_the_networks(self):
        fab = Fabric(snapshot())
        for src, dst, vlan in (("w1", "d2", 301), ("d2", "w1", 302), ("w2", "d1", 301),
                               ("n3", "w1", 100), ("w1", "n3", 301)):
            tr = fab.send(src, ping(src, dst))
            self.assertEqual(tr.delivered_to(), [(EPS[dst].host, EPS[dst].port)], f"{src}->{dst}\n{tr}")
            self.assertEqual(tags(tr), [vlan], f"{src}->{dst}")
            self.assertNotIn("vlan_vid", tr.deliveries[0].packet)  # popped before delivery

    def test_without_own_vlans_groups_share_the_networks_vlan(self):
        # the same snapshot without group VLANs (outside ACI mode): the network's tag
        plain = {k: dataclasses.replace(g, vlan=0) for k, g in GROUPS.items()}
        fab = Fabric(snapshot(aci=False, groups=plain))
        tr = fab.send("w1", ping("w1", "n3"))
        self.assertEqual(tags(tr), [100])

    def test_a_broadcast_from_a_group_floods_on_its_vlan(self):
        fab = Fabric(snapshot(arp="flood"))
        w1 = EPS["w1"]
        bcast = dict(eth_src=w1.mac, eth_dst="ff:ff:ff:ff:ff:ff", eth_type=0x0806, arp_op=1,
                     arp_sha=w1.mac, arp_spa=w1.ip, arp_tha="00:00:00:00:00:00", arp_tpa="20.1.1.3")
        tr = fab.send("w1", bcast)
        self.assertEqual(tags(tr), [301])
        self.assertEqual(tr.delivered_to(), sorted((e.host, e.port) for e in EPS.values() if e.id != "w1"))
        bcast = dict(bcast, eth_src=EPS["n3"].mac, arp_sha=EPS["n3"].mac, arp_spa=EPS["n3"].ip)
        self.assertEqual(tags(fab.send("n3", bcast)), [100])

    def test_any_group_vlan_of_the_network_is_accepted_from_the_uplink(self):
        fab = Fabric(snapshot())
        # as the lab trunk delivers it (the sender's group VLAN), or a fabric that
        # re-tags it with the receiver's group VLAN, or untranslated
        for vlan in (301, 302, 100):
            tr = fab.inject("h2", dict(ping("w1", "d2"), vlan_vid=T.OFPVID_PRESENT | vlan))
            self.assertEqual(tr.delivered_to(), [("h2", "p-d2")], f"VLAN {vlan}\n{tr}")
        tr = fab.inject("h2", dict(ping("w1", "d2"), vlan_vid=T.OFPVID_PRESENT | 303))
        self.assertEqual(tr.delivered_to(), [])

    def test_ovs_enforces_no_group_policy_in_aci_mode(self):
        plain = Fabric(snapshot(aci=False))
        self.assertEqual(plain.send("w1", ping("w1", "d2")).delivered_to(), [],
                         "outside ACI mode the deny-all rule drops the ping")
        fab = Fabric(snapshot(aci=True))
        for src, dst in (("w1", "d2"), ("d2", "w1"), ("n3", "w2"), ("w1", "d1")):
            self.assertEqual(fab.send(src, ping(src, dst)).delivered_to(),
                             [(EPS[dst].host, EPS[dst].port)], f"{src}->{dst}")
        for host, flows in fab.flows.items():
            # rule flows are owned by their group (cookie kind 4) and sit in 52/53
            self.assertEqual([f for f in flows if (f.cookie >> 32) & 0xFFFF == 4 or
                              (f.table == T.POLICY_OUT and f.priority >= P_RULE_BASE)], [], host)
        self.assertTrue(any((f.cookie >> 32) & 0xFFFF == 4 for f in plain.flows["h2"]))
        # the conntrack stage stays (it only tracks: no rule to judge by)
        self.assertTrue(any(f.table == T.POLICY_CT for f in fab.flows["h1"]))

    def test_two_groups_on_one_host_are_switched_locally(self):
        tr = Fabric(snapshot()).send("w1", ping("w1", "d1"))
        self.assertEqual((tr.delivered_to(), tr.transmissions), ([("h1", "p-d1")], []))

    def test_every_flow_passes_its_table_declaration(self):
        for aci in (True, False):
            for flows in compile_all(snapshot(aci=aci, arp="flood")).values():
                T.check_flows(flows)

    def test_the_incremental_engine_follows_group_vlans(self):
        eng = IncrementalCompiler()
        plain = {k: dataclasses.replace(g, vlan=0) for k, g in GROUPS.items()}
        one = dict(GROUPS, **{"t1:db": plain["t1:db"]})
        for snap in (snapshot(groups=plain), snapshot(), snapshot(groups=one), snapshot(aci=False),
                     snapshot(groups={"t1:web": GROUPS["t1:web"]})):
            eng.update(snap, ("h1", "h2", "h3"))
            want = compile_all(snap)
            for h in ("h1", "h2", "h3"):
                self.assertEqual(eng.flows(h), want[h], h)

    def test_snapshot_reads_aci_mode_and_group_vlans(self):
        data = {
            "obj:global": {"global": {"fwdMode": "bridge", "networkInfraType": "aci"}},
            "tenant": {"t1": {"vrfId": 1}},
            "obj:network": {"t1:net": {"encap": "vlan", "subnet": "20.1.1.0/24"}},
            "network": {"t1:net": {"netId": 1, "encap": "vlan", "vlan": 100, "subnet": "20.1.1.0/24"}},
            "endpointGroup": {"t1:web": {"network": "t1:net", "epgId": 10, "vlan": 301, "pktTag": 301},
                              "t1:db": {"network": "t1:net", "epgId": 11, "pktTag": 100}},
        }
        snap = build_snapshot(1, data, {})
        self.assertTrue(snap.global_cfg.aci)
        self.assertEqual((snap.groups["t1:web"].vlan, snap.groups["t1:db"].vlan), (301, 0))
        data["obj:global"]["global"]["networkInfraType"] = "default"
        self.assertFalse(build_snapshot(1, data, {}).global_cfg.aci)


class AciStoreTests(NetmasterCase):
    """A real netmaster with ``--infra aci`` on a real redis-server."""

    extra_args = ("--infra", "aci")

    async def vlans_in_use(self) -> str:
        return (await self.inspect("globals", "global"))["Oper"].get("vlansInUse", "")

    async def group_tags(self, name: str):
        oper = (await self.inspect("endpointGroups", f"default:{name}"))["Oper"]
        return oper.get("pktTag", 0), oper.get("externalPktTag", 0)

    @async_test
    async def test_vxlan_networks_are_refused(self):
        self.assertEqual(await self.net_err("vx", "20.1.1.0/24"),
                         "network type must be VLAN for ACI mode\n")
        self.assertEqual(await self.c.ok("GET", "/api/v1/networks/"), [])
        self.assertEqual(await self.vlans_in_use(), "")
        await self.net("vl", "20.1.1.0/24", encap="vlan")

    @async_test
    async def test_each_group_takes_its_own_vlan_from_the_pool_and_gives_it_back(self):
        g = await self.c.ok("GET", "/api/v1/globals/global/")
        self.assertEqual(g["networkInfraType"], "aci")
        await self.c.ok("POST", "/api/v1/globals/global/", dict(g, vlans="10-12"))
        await self.net("n", "20.1.1.0/24", encap="vlan", gateway="20.1.1.254")
        self.assertEqual(await self.vlans_in_use(), "10")
        await self.epg("web", "n")
        await self.epg("db", "n", ipPool="20.1.1.10-20.1.1.12")
        self.assertEqual((await self.group_tags("web"), await self.group_tags("db")),
                         ((11, 0), (12, 0)))
        self.assertEqual(await self.vlans_in_use(), "10-12")
        # the pool is empty: the create is refused and keeps nothing (not its
        # ip-pool, not its group id)
        self.assertEqual(await self.epg("app", "n", ok=False, ipPool="20.1.1.20-20.1.1.22"),
                         "no vlans available\n")
        self.assertEqual(sorted(x["groupName"] for x in await self.c.ok("GET", "/api/v1/endpointGroups/")),
                         ["db", "web"])
        # a group's VLAN is in use: the range cannot shrink below it
        self.assertIn("cannot update the vlan range due to existing vlans",
                      await self.c.err("POST", "/api/v1/globals/global/", dict(g, vlans="10-11")))
        await self.c.ok("DELETE", "/api/v1/endpointGroups/default:web/")
        self.assertEqual(await self.vlans_in_use(), "10, 12")
        await self.epg("app", "n", ipPool="20.1.1.20-20.1.1.22")
        self.assertEqual(await self.group_tags("app"), (11, 0))
        for name in ("app", "db"):
            await self.c.ok("DELETE", f"/api/v1/endpointGroups/default:{name}/")
        self.assertEqual(await self.vlans_in_use(), "10")
