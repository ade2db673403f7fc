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


class SnapshotBuilderTests(TestCase):
    """The controller's memoizing :class:`SnapshotBuilder` must build exactly what a fresh
    :func:`build_checked` builds, run after run, whatever changed — including records
    that are refused, referenced objects that come and go, and port maps mutated in
    place — while keeping the objects of records that did not change."""

    def _random_data(self, rnd) -> dict:
        data = _data()
        data["obj:global"]["global"]["fwdMode"] = "bridge"
        data["serviceLB"] = {"default:svc": {"tenant": "default", "serviceName": "svc",
                                             "network": "default:contiv-net",
                                             "ipAddress": "20.1.1.200", "ports": ["80:8080:TCP"],
                                             "selectors": {"app": "web"}}}
        data["obj:rule"] = {"default:p-1": {"policyName": "p", "direction": "in", "action": "deny",
                                            "priority": 1, "protocol": "tcp", "port": 80}}
        data["obj:endpointGroup"] = {"default:web": {"policies": ["p"]}}
        for i in range(30):
            data["endpoint"][f"x{i}"] = self._endpoint(rnd, i)
        return data

    def _endpoint(self, rnd, i: int) -> dict:
        rec = {"network": rnd.choice(["default:contiv-net", "blue:vl", "default:gone"]),
               "group": rnd.choice(["", "default:web", "default:nope"]),
               "ipAddress": f"20.1.1.{i + 30}", "macAddress": f"02:02:14:01:01:{i + 30:02x}",
               "homingHost": rnd.choice(["node1", "node2"]), "intfName": f"cv{i}"}
        if rnd.random() < 0.3:
            rec["labels"] = {"app": rnd.choice(["web", "db"])}
        if rnd.random() < 0.05:
            rec["homingHost"] = {"not": "a string"}  # refused
        if rnd.random() < 0.05:
            rec["network"] = ["unhashable"]  # refused, and must not break the memo
        return rec

    def _mutate(self, rnd, data: dict, ports: dict) -> None:
        what = rnd.randrange(9)
        if what == 0:  # an endpoint replaced, added or removed
            i = rnd.randrange(40)
            if rnd.random() < 0.2:
                data["endpoint"].pop(f"x{i}", None)
            else:
                data["endpoint"][f"x{i}"] = self._endpoint(rnd, i)
        elif what == 1:  # a network's state changes or goes
            key = rnd.choice(["default:contiv-net", "blue:vl"])
            if rnd.random() < 0.3:
                data["network"].pop(key, None)
            else:
                rec = dict(data["network"].get(key) or _data()["network"][key])
                rec["vni"] = rnd.choice([1001, 1002, "bad"])
                data["network"][key] = rec
        elif what == 2:  # a tenant toggles
            if "blue" in data["tenant"] and rnd.random() < 0.5:
                del data["tenant"]["blue"]
            else:
                data["tenant"]["blue"] = {"vrfId": rnd.choice([2, 3])}
        elif what == 3:  # a group changes
            if rnd.random() < 0.3:
                data["endpointGroup"].pop("default:web", None)
            else:
                data["endpointGroup"]["default:web"] = {"epgId": rnd.choice([7, 8]),
                                                        "network": rnd.choice(["default:contiv-net",
                                                                               "blue:vl"])}
        elif what == 4:  # a switch's port map mutated in place
            dpid = rnd.choice([11, 12])
            ports.setdefault(dpid, {})[f"cv{rnd.randrange(40)}"] = rnd.randrange(1, 50)
        elif what == 5:  # a host record replaced
            name = rnd.choice(["node1", "node2"])
            data["host"][name] = dict(data["host"].get(name) or {"name": name, "dpid": 11},
                                      vtepIP=rnd.choice(["192.168.50.1", "192.168.50.9", ""]))
        elif what == 6:  # a network's configuration replaced
            data["obj:network"]["default:contiv-net"] = {
                "encap": "vxlan", "subnet": rnd.choice(["20.1.1.0/24", "nonsense/99"]),
                "gateway": "20.1.1.254"}
        elif what == 7:  # a rule changes
            data["obj:rule"]["default:p-1"] = dict(data["obj:rule"]["default:p-1"],
                                                   port=rnd.choice([80, 81, 70000]))
        else:  # the service's selectors change
            data["serviceLB"]["default:svc"] = dict(data["serviceLB"]["default:svc"],
                                                    selectors={"app": rnd.choice(["web", "db"])})

    def test_memoized_build_equals_a_fresh_build_after_random_changes(self):
        import random

        from contiv_sdn.controller.snapshot import SnapshotBuilder, build_checked
        for seed in range(25):
            rnd = random.Random(seed)
            data = self._random_data(rnd)
            ports = {11: {"vxlan0": 1, "cve1": 5}, 12: {"vxlan0": 1}}
            builder = SnapshotBuilder()
            changed = None  # the first build knows nothing
            for step in range(60):
                got = builder.build(step, data, ports, changed=changed)
                want = build_checked(step, data, ports)
                self.assertEqual(got.snapshot, want.snapshot, f"seed {seed} step {step}")
                self.assertEqual(sorted(got.refused), sorted(want.refused), f"seed {seed} step {step}")
                before = self._objects(data)
                for _ in range(rnd.choice([1, 1, 1, 3])):
                    self._mutate(rnd, data, ports)
                after = self._objects(data)
                # what the controller's mirror reports: every record object replaced,
                # added or removed (sometimes "unknown", as after a full read)
                changed = None if rnd.random() < 0.1 else {
                    k for k in set(before) | set(after) if before.get(k) is not after.get(k)}

    def test_a_mirrored_endpoint_builds_what_its_whole_record_builds(self):
        """The controller's mirror keeps only an endpoint record's view (``mirrored``):
        every field the build reads must survive it, whatever else the record holds."""
        import random

        from contiv_sdn.controller.snapshot import build_checked, mirrored, read_view
        for seed in range(25):
            rnd = random.Random(seed)
            data = self._random_data(rnd)
            for i, rec in enumerate(data["endpoint"].values()):
                rec.update(id=f"{i:064x}", tenant="default", networkName="n", groupName="g",
                           epgId=7, vtepIP="192.168.50.1", containerID="c" * 64,
                           containerName=f"ctr{i}")
                if rnd.random() < 0.5:
                    rec.setdefault("labels", {})  # what every agent's create sends
                if rnd.random() < 0.3:
                    rec.update(k8sNamespace=rnd.choice(["ns1", "", "ns2"]), k8sPod=f"pod{i}",
                               namedPorts=rnd.choice([{}, {"http": {"port": 80, "protocol": "TCP"}},
                                                      {"http": {"port": "x"}}]))
            kept = dict(data, endpoint={key: mirrored("endpoint", rec)
                                        for key, rec in data["endpoint"].items()})
            ports = {11: {"vxlan0": 1, "cve1": 5}, 12: {"vxlan0": 1}}
            whole, part = build_checked(1, data, ports), build_checked(1, kept, ports)
            self.assertEqual(part.snapshot, whole.snapshot, f"seed {seed}")
            self.assertEqual(sorted(r[:3] for r in part.refused), sorted(r[:3] for r in whole.refused))
            for key, rec in data["endpoint"].items():
                self.assertEqual(read_view("endpoint", kept["endpoint"][key]), read_view("endpoint", rec))
                self.assertNotIn("containerID", kept["endpoint"][key])
                if rec.get("labels") == {}:
                    self.assertNotIn("labels", kept["endpoint"][key])  # empty: kept as absent
        self.assertIs(mirrored("network", data["network"]), data["network"])  # other kinds: as read

    @staticmethod
    def _objects(data: dict) -> dict:
        return {(kind, key): rec for kind, table in data.items() for key, rec in table.items()}

    def test_unchanged_records_keep_their_objects(self):
        from contiv_sdn.controller.snapshot import SnapshotBuilder
        data = _data()
        builder = SnapshotBuilder()
        first = builder.build(1, data, {11: {"cve1": 5}}).snapshot
        data["endpoint"]["e2"] = dict(data["endpoint"]["e2"], intfName="cve9")
        second = builder.build(2, data, {11: {"cve1": 5}}).snapshot
        self.assertIs(second.endpoints["e1"], first.endpoints["e1"])
        self.assertIs(second.networks["default:contiv-net"], first.networks["default:contiv-net"])
        self.assertIs(second.hosts["node1"], first.hosts["node1"])
        self.assertIsNot(second.endpoints["e2"], first.endpoints["e2"])
        self.assertEqual(second.endpoints["e2"].port, "cve9")
        # a port appearing on a switch rebuilds that host only
        third = builder.build(3, data, {11: {"cve1": 5, "cve2": 6}}).snapshot
        self.assertIsNot(third.hosts["node1"], second.hosts["node1"])
        self.assertIs(third.hosts["node2"], second.hosts["node2"])
