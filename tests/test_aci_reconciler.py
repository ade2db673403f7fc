"""The ACI reconciler on a real Redis (intent written through the netmaster's semantics)
against the stand-in APIC on loopback.

Proves: the seed walkthrough in ACI mode becomes the expected tenant/BD/EPG/contract
tree (read back by a subtree query); a rule added or removed changes only its
filter entry, in one call; an EPG deleted behind our back comes back; token
expiry and an APIC restart (configuration kept, or lost) are survived; an
operator's objects are never modified or deleted, even when ours around them go.
"""

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from contiv_sdn.master.config import MasterConfig
from contiv_sdn.master.core import Master
from contiv_sdn.model import TYPES, decode, validate
from contiv_sdn.store import Store
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary
from contiv_sdn.testing.wait import wait_for
from drivers.aci.client import ApicClient
from drivers.aci.mapping import DEFAULT_AP
from drivers.aci.mo import MARK
from drivers.aci.reconciler import Reconciler
from drivers.aci.standin import Mit, StandinApic

T = "uni/tn-default"
AP = f"{T}/ap-{DEFAULT_AP}"
PATH = "topology/pod-1/paths-101/pathep-[eth1/1]"


class ReconcilerTests(TestCase):
    timeout = 120

    async def _setUp(self):
        require_binary("redis-server")
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        self.master = Master(self.store, MasterConfig(infra="aci", vlans="100-200"))
        await self.master.ensure_defaults()
        self.port = free_tcp_port()
        self.mit = Mit()
        await self.start_apic()
        self.client = ApicClient([f"http://127.0.0.1:{self.port}"], "admin", "pw", timeout=5)
        self.rec = Reconciler(self.store, self.client, audit_interval=0.3)
        self.rec.RETRY_MAX = 0.5
        self.rec.startService()
        self.addCleanup(self.rec.stopService)
        await self.put("aciGw", "aciGw", {"name": "aciGw", "physicalDomain": "contivPhysDom",
                                          "pathBindings": PATH, "enforcePolicies": "yes",
                                          "includeCommonTenant": "no", "nodeBindings": ""})

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def start_apic(self, mit=None):
        if mit is not None:
            self.mit = mit
        self.apic = StandinApic("admin", "pw", mit=self.mit)
        await self.apic.listen(f"tcp:{self.port}:interface=127.0.0.1")
        apic = self.apic
        self.addCleanup(lambda: defer.ensureDeferred(apic.stop()))

    async def put(self, kind, key, body):
        spec = TYPES[kind]
        obj = validate(spec, decode(spec, json.dumps(body).encode()), key)
        await self.master.post(kind, key, obj)

    async def seed(self):
        """The seed README's walkthrough, ACI style (a VLAN network)."""
        await self.put("network", "default:contiv-net", {
            "tenantName": "default", "networkName": "contiv-net", "encap": "vlan",
            "subnet": "20.1.1.0/24", "gateway": "20.1.1.254", "pktTag": 101})
        await self.put("policy", "default:prod_web", {"tenantName": "default",
                                                      "policyName": "prod_web"})
        for rid, port, action, prio in (("1", 0, "deny", 1), ("2", 80, "allow", 10),
                                        ("3", 443, "allow", 10)):
            await self.put("rule", f"default:prod_web:{rid}", {
                "tenantName": "default", "policyName": "prod_web", "ruleId": rid,
                "direction": "in", "protocol": "tcp", "port": port, "action": action,
                "priority": prio})
        await self.put("endpointGroup", "default:web", {
            "tenantName": "default", "groupName": "web", "networkName": "contiv-net",
            "policies": ["prod_web"]})

    async def converged(self, what="the APIC mirrors the intent"):
        async def check():
            rev = await self.store.revision()
            return self.rec.in_sync and self.rec.synced_rev >= rev
        await wait_for(check, timeout=30, what=what)

    def tree(self, prefix=T):
        return {dn: (cls, dict(attrs)) for dn, (cls, attrs) in self.mit.mos.items()
                if dn == prefix or dn.startswith(prefix + "/")}

    async def read_back(self):
        """The tenant's subtree through the REST API, as {dn: class}."""
        reader = ApicClient([f"http://127.0.0.1:{self.port}"], "admin", "pw")
        try:
            items = await reader.get_mo(T, query_target="subtree")
        finally:
            await reader.close()
        out = {}
        for item in items:
            (cls, body), = item.items()
            out[body["attributes"]["dn"]] = cls
        return out

    async def test_seed_walkthrough_yields_the_expected_tree(self):
        await self.seed()
        await self.converged()
        epg = f"{AP}/epg-web"
        self.assertEqual(await self.read_back(), {
            T: "fvTenant",
            f"{T}/ctx-default-Vrf": "fvCtx",
            f"{T}/ctx-default-Vrf/any": "vzAny",
            f"{T}/ctx-default-Vrf/any/rsanyToCons-prod_web-in-any": "vzRsAnyToCons",
            f"{T}/BD-contiv-net": "fvBD",
            f"{T}/BD-contiv-net/rsctx": "fvRsCtx",
            f"{T}/BD-contiv-net/subnet-[20.1.1.254/24]": "fvSubnet",
            AP: "fvAp",
            epg: "fvAEPg",
            f"{epg}/rsbd": "fvRsBd",
            f"{epg}/rsdomAtt-[uni/phys-contivPhysDom]": "fvRsDomAtt",
            f"{epg}/rspathAtt-[{PATH}]": "fvRsPathAtt",
            f"{epg}/rsprov-prod_web-in-any": "fvRsProv",
            f"{T}/flt-prod_web-in-any": "vzFilter",
            f"{T}/flt-prod_web-in-any/e-rule-2": "vzEntry",
            f"{T}/flt-prod_web-in-any/e-rule-3": "vzEntry",
            f"{T}/brc-prod_web-in-any": "vzBrCP",
            f"{T}/brc-prod_web-in-any/subj-subj": "vzSubj",
            f"{T}/brc-prod_web-in-any/subj-subj/rssubjFiltAtt-prod_web-in-any": "vzRsSubjFiltAtt",
        })
        tree = self.tree()
        # the EPG's own VLAN (ACI mode): the pool's lowest free one, not the network's 101
        self.assertEqual(tree[f"{epg}/rspathAtt-[{PATH}]"][1]["encap"], "vlan-100")
        self.assertEqual(tree[f"{T}/flt-prod_web-in-any/e-rule-3"][1]["dToPort"], "443")
        self.assertEqual(tree[f"{T}/ctx-default-Vrf"][1]["pcEnfPref"], "enforced")
        self.assertTrue(all(a["annotation"] == MARK for _, a in tree.values()))

    async def test_rule_add_and_remove_change_only_the_filter_entries(self):
        await self.seed()
        await self.converged()
        before = self.tree()
        posts = self.client.calls["POST mo"]
        await self.put("rule", "default:prod_web:4", {
            "tenantName": "default", "policyName": "prod_web", "ruleId": "4", "direction": "in",
            "protocol": "tcp", "port": 8080, "action": "allow", "priority": 10})
        await self.converged("rule 4 mirrored")
        after = self.tree()
        entry = f"{T}/flt-prod_web-in-any/e-rule-4"
        self.assertEqual(set(after) - set(before), {entry})
        self.assertEqual({dn: v for dn, v in after.items() if dn != entry}, before)
        self.assertEqual(self.client.calls["POST mo"] - posts, 1)
        await self.master.delete("rule", "default:prod_web:4")
        await self.converged("rule 4 removed")
        self.assertEqual(self.tree(), before)
        self.assertEqual(self.client.calls["POST mo"] - posts, 2)

    async def test_an_epg_deleted_behind_our_back_comes_back(self):
        await self.seed()
        await self.converged()
        before = self.tree()
        vandal = ApicClient([f"http://127.0.0.1:{self.port}"], "admin", "pw")
        self.addCleanup(lambda: defer.ensureDeferred(vandal.close()))
        await vandal.delete(f"{AP}/epg-web")
        await vandal.post(f"{T}/ctx-default-Vrf", {"fvCtx": {"attributes": {
            "dn": f"{T}/ctx-default-Vrf", "pcEnfPref": "unenforced"}}})
        self.assertNotIn(f"{AP}/epg-web", self.mit.mos)
        await wait_for(lambda: self.tree() == before, timeout=30,
                       what="the deleted EPG and the changed VRF repaired by the audit")

    async def test_token_expiry_and_apic_restarts_are_survived(self):
        await self.seed()
        await self.converged()
        logins = self.client.calls["login"]
        self.apic.expire_tokens()
        await self.put("endpointGroup", "default:db", {
            "tenantName": "default", "groupName": "db", "networkName": "contiv-net"})
        await self.converged("db mirrored after the token expired")
        self.assertIn(f"{AP}/epg-db", self.mit.mos)
        self.assertEqual(self.client.calls["login"], logins + 1)
        # restart keeping the configuration; a change made while it is down lands after
        await self.apic.stop()
        await self.put("endpointGroup", "default:app", {
            "tenantName": "default", "groupName": "app", "networkName": "contiv-net"})
        await self.start_apic()
        await self.converged("app mirrored after the APIC came back")
        self.assertIn(f"{AP}/epg-app", self.mit.mos)
        # restart with the configuration lost: everything is pushed again
        before = self.tree()
        await self.apic.stop()
        await self.start_apic(Mit())
        await wait_for(lambda: self.tree() == before, timeout=30,
                       what="the wiped APIC refilled")

    async def test_objects_we_did_not_create_are_never_touched(self):
        operator = ApicClient([f"http://127.0.0.1:{self.port}"], "admin", "pw")
        self.addCleanup(lambda: defer.ensureDeferred(operator.close()))
        # an operator's tenant, and in ours (made first, by hand) a BD and an EPG
        await operator.post("uni/tn-ops", {"fvTenant": {"attributes": {"name": "ops"},
                                                        "children": [{"fvBD": {"attributes": {
                                                            "name": "b", "arpFlood": "yes"}}}]}})
        await operator.post(T, {"fvTenant": {"attributes": {"name": "default", "descr": "ops"},
                                             "children": [
            {"fvBD": {"attributes": {"name": "contiv-net", "arpFlood": "yes"}}},
            {"fvAp": {"attributes": {"name": DEFAULT_AP}, "children": [
                {"fvAEPg": {"attributes": {"name": "legacy"}}}]}}]}})
        theirs = {dn: v for dn, v in self.tree("uni").items()
                  if dn in ("uni/tn-ops", "uni/tn-ops/BD-b", T, f"{T}/BD-contiv-net", AP,
                            f"{AP}/epg-legacy")}
        await self.seed()
        await self.converged()
        self.assertIn(f"{AP}/epg-web", self.mit.mos)
        for dn, v in theirs.items():
            self.assertEqual(self.mit.mos[dn], v, f"{dn} was modified")
        # now take all intent away: ours goes, theirs stays exactly as it was
        await self.master.delete("endpointGroup", "default:web")
        for rid in ("1", "2", "3"):
            await self.master.delete("rule", f"default:prod_web:{rid}")
        await self.master.delete("policy", "default:prod_web")
        await self.master.delete("network", "default:contiv-net")
        await self.converged("intent removed")
        for dn, v in theirs.items():
            self.assertEqual(self.mit.mos[dn], v, f"{dn} was modified or deleted")
        left = {dn for dn, (_, a) in self.tree("uni").items() if a.get("annotation") == MARK}
        # the tenant itself still has intent (the default tenant exists); nothing else of ours
        self.assertEqual(left, {f"{T}/ctx-default-Vrf", f"{T}/ctx-default-Vrf/any"})
