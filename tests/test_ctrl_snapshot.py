"""build_snapshot: Redis records + switch port maps -> compiler input, on plain data."""

from twisted.trial.unittest import TestCase

from contiv_sdn.controller.snapshot import build_snapshot


def _data(**extra):
    data = {
        "obj:global": {"global": {"name": "global", "fwdMode": "routing", "arpMode": "flood"}},
        "tenant": {"default": {"vrfId": 1}, "blue": {"vrfId": 2}},
        "obj:network": {
            "default:contiv-net": {"encap": "vxlan", "subnet": "20.1.1.0/24", "gateway": "20.1.1.254"},
            "blue:vl": {"encap": "vlan", "subnet": "20.1.1.10-20.1.1.20/24"},
        },
        "network": {
            "default:contiv-net": {"netId": 1, "encap": "vxlan", "vni": 1001, "vlan": 0,
                                   "localVlan": 1, "subnet": "20.1.1.0/24", "gateway": "20.1.1.254"},
            "blue:vl": {"netId": 2, "encap": "vlan", "vni": 0, "vlan": 45, "localVlan": 45,
                        "subnet": "20.1.1.0/24"},
        },
        "endpointGroup": {"default:web": {"epgId": 7, "network": "default:contiv-net"}},
        "host": {
            "node1": {"name": "node1", "vtepIP": "192.168.50.1", "dpid": 11, "uplinkPort": "eth1"},
            "node2": {"name": "node2", "vtepIP": "192.168.50.2", "dpid": 12},
            "half": {"name": "half", "dpid": 13},
        },
        "endpoint": {
            "e1": {"network": "default:contiv-net", "group": "default:web", "ipAddress": "20.1.1.1",
                   "macAddress": "02:02:14:01:01:01", "homingHost": "node1", "intfName": "cve1"},
            "e2": {"network": "blue:vl", "group": "", "ipAddress": "20.1.1.10/24",
                   "macAddress": "02:02:14:01:01:0A", "homingHost": "node2", "intfName": "cve2"},
            "orphan": {"network": "default:gone", "ipAddress": "1.1.1.1",
                       "macAddress": "02:02:01:01:01:01", "homingHost": "node2"},
        },
    }
    data.update(extra)
    return data


class BuildSnapshotTests(TestCase):
    def test_global_and_tenants(self):
        snap = build_snapshot(5, _data(), {})
        self.assertEqual(snap.revision, 5)
        self.assertEqual((snap.global_cfg.fwd_mode, snap.global_cfg.arp_mode), ("routing", "flood"))
        self.assertEqual(snap.tenants["blue"].vrf_id, 2)

    def test_networks_take_the_tag_of_their_encap(self):
        snap = build_snapshot(1, _data(), {})
        self.assertEqual(snap.networks["default:contiv-net"].pkt_tag, 1001)
        self.assertEqual(snap.networks["blue:vl"].pkt_tag, 45)
        self.assertEqual(snap.networks["blue:vl"].subnet, "20.1.1.0/24")
        self.assertEqual(snap.networks["default:contiv-net"].gateway, "20.1.1.254")

    def test_hosts_need_a_vtep_and_get_their_switch_ports(self):
        snap = build_snapshot(1, _data(), {11: {"vxlan0": 1, "cve1": 5}})
        self.assertEqual(sorted(snap.hosts), ["node1", "node2"])
        self.assertEqual(dict(snap.hosts["node1"].ports), {"vxlan0": 1, "cve1": 5})
        self.assertEqual(snap.hosts["node1"].uplink_port, "eth1")
        self.assertEqual(dict(snap.hosts["node2"].ports), {})
        self.assertEqual((snap.hosts["node2"].dpid, snap.hosts["node1"].dpid), (12, 11))

    def test_endpoints_resolve_groups_and_drop_orphans(self):
        snap = build_snapshot(1, _data(), {})
        self.assertEqual(sorted(snap.endpoints), ["e1", "e2"])
        e1, e2 = snap.endpoints["e1"], snap.endpoints["e2"]
        self.assertEqual((e1.group, e1.epg_id, e1.port), ("default:web", 7, "cve1"))
        self.assertEqual((e2.group, e2.epg_id, e2.ip, e2.mac), (None, 0, "20.1.1.10", "02:02:14:01:01:0a"))

    def test_network_of_missing_tenant_is_left_out(self):
        data = _data(tenant={"default": {"vrfId": 1}})
        snap = build_snapshot(1, data, {})
        self.assertNotIn("blue:vl", snap.networks)
        self.assertNotIn("e2", snap.endpoints)

    def test_same_input_gives_equal_snapshots(self):
        self.assertEqual(build_snapshot(3, _data(), {11: {"a": 1}}),
                         build_snapshot(3, _data(), {11: {"a": 1}}))

    def test_snapshot_kinds_cover_everything_it_reads(self):
        from contiv_sdn.controller.snapshot import SNAPSHOT_KINDS
        data = _data(**{"obj:policy": {"default:p": {}}, "netmaster": {"x": {}}})
        only = {k: v for k, v in data.items() if k in SNAPSHOT_KINDS}
        self.assertEqual(build_snapshot(1, only, {11: {"a": 1}}), build_snapshot(1, data, {11: {"a": 1}}))
        self.assertNotEqual(build_snapshot(1, {}, {}), build_snapshot(1, only, {}))

    def test_rules_and_group_policies_are_read_and_wrong_ones_refused(self):
        from contiv_sdn.controller.snapshot import build_checked
        from contiv_sdn.pipeline.state import Rule
        data = _data(**{
            "obj:endpointGroup": {"default:web": {"policies": ["prod_web", "extra"]},
                                  "default:bad": {"policies": ["x", 5]}},
            "obj:rule": {
                "default:prod_web:2": {"tenantName": "default", "policyName": "prod_web", "ruleId": "2",
                                       "direction": "in", "protocol": "tcp", "port": 80, "action": "allow",
                                       "priority": 10, "fromIpAddress": "20.1.1.2-9"},
                "default:prod_web:1": {"tenantName": "default", "policyName": "prod_web", "direction": "in",
                                       "protocol": "tcp", "action": "deny"},
                "default:prod_web:3": {"policyName": "prod_web", "port": "80"},
                "default:prod_web:4": {"policyName": "prod_web", "port": 70000},
            }})
        built = build_checked(1, data, {})
        snap = built.snapshot
        self.assertEqual(snap.groups["default:web"].policies, ("default:extra", "default:prod_web"))
        self.assertEqual(snap.rules["default:prod_web:2"],
                         Rule("default:prod_web:2", "default", "default:prod_web", "in", "allow", 10, "tcp", 80,
                              from_ip="20.1.1.2-9"))
        self.assertEqual(snap.rules["default:prod_web:1"].priority, 1, "priority 0 means Contiv's default 1")
        self.assertEqual(sorted((r.kind, r.key) for r in built.refused),
                         [("obj:endpointGroup", "default:bad"), ("obj:rule", "default:prod_web:3"),
                          ("obj:rule", "default:prod_web:4")])
