"""Intent -> APIC MO tree (drivers.aci.mapping), and the plan/payload the reconciler sends.

Pure functions on plain records: one test per object kind, plus the diff's
promises (only what differs is sent; an operator's objects are never touched).
"""

from twisted.trial.unittest import TestCase

from drivers.aci import mapping
from drivers.aci.mo import MARK, Mo, aci_name, naming_from_rn, parent_dn, split_dn
from drivers.aci.reconciler import payload, plan

T = "uni/tn-t1"


def base(**extra):
    kinds = {
        "obj:global": {"global": {"networkInfraType": "aci"}},
        "obj:tenant": {"t1": {"tenantName": "t1"}},
        "obj:network": {"t1:net": {"tenantName": "t1", "networkName": "net",
                                   "subnet": "10.1.1.0/24", "gateway": "10.1.1.254"}},
        "network": {"t1:net": {"subnetLen": 24}},
        "obj:endpointGroup": {
            "t1:web": {"tenantName": "t1", "groupName": "web", "networkName": "net",
                       "policies": []},
            "t1:db": {"tenantName": "t1", "groupName": "db", "networkName": "net"}},
        "endpointGroup": {"t1:web": {"pktTag": 101}, "t1:db": {"pktTag": 102}},
    }
    for k, v in extra.items():
        kinds[k.replace("__", ":")] = v
    return kinds


def rule(rid, direction="in", action="allow", peer="", proto="tcp", port=0, **kw):
    r = {"tenantName": "t1", "policyName": "p", "ruleId": rid, "direction": direction,
         "action": action, "protocol": proto, "port": port}
    r["fromEndpointGroup" if direction == "in" else "toEndpointGroup"] = peer
    r.update(kw)
    return r


def with_policy(kinds, *rules, gw=None):
    kinds["obj:endpointGroup"]["t1:web"]["policies"] = ["p"]
    kinds["obj:policy"] = {"t1:p": {"tenantName": "t1", "policyName": "p"}}
    kinds["obj:rule"] = {f"t1:p:{r['ruleId']}": r for r in rules}
    if gw is not None:
        kinds["obj:aciGw"] = {"aciGw": gw}
    return kinds


class DnTests(TestCase):
    def test_split_keeps_bracketed_slashes(self):
        dn = "uni/tn-a/ap-b/epg-c/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/1]]"
        self.assertEqual(split_dn(dn)[-1], "rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/1]]")
        self.assertEqual(parent_dn(dn), "uni/tn-a/ap-b/epg-c")
        self.assertEqual(naming_from_rn("fvSubnet", "subnet-[10.1.1.254/24]"),
                         {"ip": "10.1.1.254/24"})
        self.assertIsNone(naming_from_rn("fvBD", "ap-x"))

    def test_long_names_stay_distinct_and_legal(self):
        a = aci_name("p" * 40, "in", "g" * 40)
        b = aci_name("p" * 40, "in", "g" * 39 + "h")
        self.assertLessEqual(len(a), 64)
        self.assertNotEqual(a, b)
        self.assertRegex(a, r"^[a-zA-Z0-9_.:-]+$")


class MappingTests(TestCase):
    def test_tenant_vrf_enforced_by_default(self):
        want = mapping.desired(base())
        self.assertEqual(want[T], Mo("fvTenant", {"name": "t1", "annotation": MARK}))
        self.assertEqual(want[f"{T}/ctx-t1-Vrf"].attrs["pcEnfPref"], "enforced")
        self.assertIn(f"{T}/ctx-t1-Vrf/any", want)

    def test_every_mo_is_marked(self):
        want = mapping.desired(with_policy(base(), rule("1", peer="db", port=80)))
        self.assertTrue(all(mo.attrs["annotation"] == MARK for mo in want.values()))

    def test_network_bd_with_vrf_and_gateway_subnet(self):
        want = mapping.desired(base())
        self.assertEqual(want[f"{T}/BD-net"].cls, "fvBD")
        self.assertEqual(want[f"{T}/BD-net/rsctx"].attrs["tnFvCtxName"], "t1-Vrf")
        self.assertEqual(want[f"{T}/BD-net/subnet-[10.1.1.254/24]"].cls, "fvSubnet")

    def test_network_without_gateway_is_l2_only(self):
        kinds = base()
        kinds["obj:network"]["t1:net"]["gateway"] = ""
        self.assertFalse([dn for dn in mapping.desired(kinds) if "/subnet-" in dn])

    def test_common_tenant_bd_is_not_created(self):
        kinds = base(obj__aciGw={"aciGw": {"includeCommonTenant": "yes"}})
        want = mapping.desired(kinds)
        self.assertNotIn(f"{T}/BD-net", want)
        self.assertEqual(want[f"{T}/ap-contiv-default-ap/epg-web/rsbd"].attrs["tnFvBDName"], "net")

    def test_epg_in_default_ap_with_bd_domain_and_bindings(self):
        gw = {"physicalDomain": "contivPhysDom",
              "pathBindings": "topology/pod-1/paths-101/pathep-[eth1/1],"
                              "topology/pod-1/paths-102/pathep-[eth1/2]",
              "nodeBindings": "topology/pod-1/node-101"}
        want = mapping.desired(base(obj__aciGw={"aciGw": gw}))
        epg = f"{T}/ap-{mapping.DEFAULT_AP}/epg-web"
        self.assertEqual(want[epg].cls, "fvAEPg")
        self.assertEqual(want[f"{epg}/rsbd"].attrs["tnFvBDName"], "net")
        self.assertIn(f"{epg}/rsdomAtt-[uni/phys-contivPhysDom]", want)
        p1 = f"{epg}/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/1]]"
        self.assertEqual(want[p1].attrs["encap"], "vlan-101")
        self.assertIn(f"{epg}/rspathAtt-[topology/pod-1/paths-102/pathep-[eth1/2]]", want)
        self.assertEqual(want[f"{epg}/rsnodeAtt-[topology/pod-1/node-101]"].attrs["encap"],
                         "vlan-101")
        # db has its own VLAN
        db = f"{T}/ap-{mapping.DEFAULT_AP}/epg-db"
        self.assertEqual(want[f"{db}/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/1]]"]
                         .attrs["encap"], "vlan-102")

    def test_app_profile_holds_its_epgs(self):
        kinds = base(obj__appProfile={"t1:app": {"tenantName": "t1", "appProfileName": "app",
                                                 "endpointGroups": ["web"]}})
        want = mapping.desired(kinds)
        self.assertIn(f"{T}/ap-app/epg-web", want)
        self.assertIn(f"{T}/ap-{mapping.DEFAULT_AP}/epg-db", want)
        self.assertNotIn(f"{T}/ap-{mapping.DEFAULT_AP}/epg-web", want)

    def test_in_rule_from_group_contract_provided_and_consumed(self):
        want = mapping.desired(with_policy(base(), rule("2", peer="db", port=80)))
        name = "p-in-db"
        self.assertEqual(want[f"{T}/flt-{name}/e-rule-2"].attrs,
                         {"name": "rule-2", "etherT": "ip", "prot": "tcp", "dFromPort": "80",
                          "dToPort": "80", "annotation": MARK})
        self.assertEqual(want[f"{T}/brc-{name}"].cls, "vzBrCP")
        self.assertEqual(want[f"{T}/brc-{name}/subj-subj/rssubjFiltAtt-{name}"].cls,
                         "vzRsSubjFiltAtt")
        ap = f"{T}/ap-{mapping.DEFAULT_AP}"
        self.assertIn(f"{ap}/epg-web/rsprov-{name}", want)
        self.assertIn(f"{ap}/epg-db/rscons-{name}", want)

    def test_in_rule_from_anyone_is_consumed_by_vzany(self):
        want = mapping.desired(with_policy(base(), rule("3", port=443), rule("4", proto="icmp")))
        self.assertIn(f"{T}/ctx-t1-Vrf/any/rsanyToCons-p-in-any", want)
        self.assertEqual(want[f"{T}/flt-p-in-any/e-rule-4"].attrs["prot"], "icmp")
        self.assertEqual(want[f"{T}/flt-p-in-any/e-rule-4"].attrs["dFromPort"], "unspecified")

    def test_out_rule_consumed_by_carrier_provided_by_peer(self):
        want = mapping.desired(with_policy(base(), rule("5", direction="out", peer="db",
                                                        proto="udp", port=53)))
        ap = f"{T}/ap-{mapping.DEFAULT_AP}"
        self.assertIn(f"{ap}/epg-web/rscons-p-out-db", want)
        self.assertIn(f"{ap}/epg-db/rsprov-p-out-db", want)

    def test_deny_and_address_rules_make_no_entries(self):
        kinds = with_policy(base(), rule("1", action="deny"),
                            rule("6", fromIpAddress="10.9.9.9"))
        want = mapping.desired(kinds)
        self.assertFalse([dn for dn in want if "/flt-" in dn])
        self.assertEqual([k for k, _ in mapping.skipped(kinds)], ["t1:p:6"])

    def test_unenforced_makes_no_contracts(self):
        kinds = with_policy(base(), rule("2", peer="db", port=80),
                            gw={"enforcePolicies": "no"})
        want = mapping.desired(kinds)
        self.assertEqual(want[f"{T}/ctx-t1-Vrf"].attrs["pcEnfPref"], "unenforced")
        self.assertFalse([dn for dn in want if "brc-" in dn or "flt-" in dn])

    def test_external_contracts(self):
        kinds = base(obj__extContractsGroup={
            "t1:cons": {"tenantName": "t1", "contractsGroupName": "cons",
                        "contractsType": "consumed",
                        "contracts": ["uni/tn-common/brc-default", "uni/tn-other/brc-web"]},
            "t1:prov": {"tenantName": "t1", "contractsGroupName": "prov",
                        "contractsType": "provided", "contracts": ["uni/tn-t1/brc-mine",
                                                                   "uni/tn-other/brc-x"]}})
        kinds["obj:endpointGroup"]["t1:web"]["extContractsGrps"] = ["cons", "prov"]
        want = mapping.desired(kinds)
        epg = f"{T}/ap-{mapping.DEFAULT_AP}/epg-web"
        self.assertIn(f"{epg}/rscons-default", want)
        self.assertIn(f"{epg}/rsprov-mine", want)
        self.assertEqual(want[f"{T}/cif-other-web/rsif"].attrs["tDn"], "uni/tn-other/brc-web")
        self.assertIn(f"{epg}/rsconsIf-other-web", want)
        self.assertEqual([k for k, _ in mapping.skipped_ext(kinds)], ["t1:prov"])

    def test_objects_of_a_missing_tenant_are_not_mapped(self):
        kinds = base()
        del kinds["obj:tenant"]["t1"]
        self.assertEqual(mapping.desired(kinds), {})


class PlanTests(TestCase):
    def have_of(self, want):
        return {dn: (mo.cls, dict(mo.attrs)) for dn, mo in want.items()}

    def test_in_step_means_no_ops(self):
        want = mapping.desired(with_policy(base(), rule("2", peer="db", port=80)))
        self.assertEqual(plan(want, self.have_of(want))[0], [])

    def test_a_rule_added_sends_one_entry(self):
        before = mapping.desired(with_policy(base(), rule("2", peer="db", port=80)))
        after = mapping.desired(with_policy(base(), rule("2", peer="db", port=80),
                                            rule("3", peer="db", port=443)))
        ops, _, _ = plan(after, self.have_of(before))
        self.assertEqual([(op, dn) for op, dn, _, _ in ops],
                         [("set", f"{T}/flt-p-in-db/e-rule-3")])
        body = payload("t1", ops, after, self.have_of(before))
        self.assertEqual(body, {"fvTenant": {"attributes": {"dn": T}, "children": [
            {"vzFilter": {"attributes": {"dn": f"{T}/flt-p-in-db"}, "children": [
                {"vzEntry": {"attributes": dict(dn=f"{T}/flt-p-in-db/e-rule-3",
                                                **after[f"{T}/flt-p-in-db/e-rule-3"].attrs)}}]}}]}})

    def test_changed_attribute_sends_only_it(self):
        want = mapping.desired(base())
        have = self.have_of(want)
        have[f"{T}/ctx-t1-Vrf"][1]["pcEnfPref"] = "unenforced"
        ops, _, _ = plan(want, have)
        self.assertEqual(ops, [("set", f"{T}/ctx-t1-Vrf", "fvCtx",
                                {"pcEnfPref": "enforced", "name": "t1-Vrf"})])

    def test_foreign_objects_are_never_touched(self):
        want = mapping.desired(base())
        have = self.have_of(want)
        # an operator's EPG under our app profile, and an operator's tenant attribute
        foreign = f"{T}/ap-{mapping.DEFAULT_AP}/epg-ops"
        have[foreign] = ("fvAEPg", {"name": "ops", "annotation": ""})
        have[f"{T}/BD-net"] = ("fvBD", {"name": "net", "annotation": "", "arpFlood": "yes"})
        ops, left, kept = plan({dn: mo for dn, mo in want.items()
                                if "/ap-" not in dn}, have)
        self.assertIn(f"{T}/BD-net", left)
        deleted = [dn for op, dn, _, _ in ops if op == "delete"]
        # our EPGs go one by one; the app profile holding the operator's EPG stays
        self.assertIn(f"{T}/ap-{mapping.DEFAULT_AP}/epg-web", deleted)
        self.assertNotIn(f"{T}/ap-{mapping.DEFAULT_AP}", deleted)
        self.assertNotIn(foreign, deleted)
        self.assertEqual([dn for dn, _ in kept], [f"{T}/ap-{mapping.DEFAULT_AP}"])
        self.assertFalse([dn for _, dn, _, _ in ops if dn == f"{T}/BD-net"])

    def test_unwanted_tenant_goes_in_one_delete(self):
        want = mapping.desired(base())
        ops, _, _ = plan({}, self.have_of(want))
        self.assertEqual(ops, [("delete", T, "fvTenant", {})])
        self.assertEqual(payload("t1", ops, {}, self.have_of(want)),
                         {"fvTenant": {"attributes": {"dn": T, "status": "deleted"}}})
