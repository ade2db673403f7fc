"""Validation of the Contiv object model: the accept/reject lists of the spec
(§1.2, Appendix A) and of contiv/netplugin's objapi_test.go, one test per field
family, plus defaults, the key check and first-failure-wins ordering."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from contiv_sdn.model import TYPES, ModelError, by_collection, validate
from contiv_sdn.model import regexes as rx

#: A valid object of every config type; tests change one field at a time.
VALID = {
    "aciGw": {"name": "aciGw", "enforcePolicies": "yes", "includeCommonTenant": "no",
              "physicalDomain": "testDom"},
    "appProfile": {"tenantName": "default", "appProfileName": "prof1",
                   "endpointGroups": ["g1", "g2"]},
    "Bgp": {"hostname": "hostA", "as": "65001", "neighbor": "16.1.2.3",
            "neighbor-as": "65002", "routerip": "65.1.1.1/24"},
    "endpointGroup": {"tenantName": "default", "groupName": "web", "networkName": "net1"},
    "extContractsGroup": {"tenantName": "default", "contractsGroupName": "ext1",
                          "contractsType": "provided", "contracts": ["uni/tn-x/brc-y"]},
    "global": {"name": "global", "arpMode": "proxy", "fwdMode": "bridge",
               "networkInfraType": "default", "pvtSubnet": "172.19.0.0/16",
               "vlans": "1-4094", "vxlans": "1-10000"},
    "netprofile": {"tenantName": "default", "profileName": "p1", "bandwidth": "10gbps",
                   "DSCP": 5, "burst": 1500},
    "network": {"tenantName": "default", "networkName": "net1", "encap": "vxlan",
                "subnet": "10.1.1.0/24", "gateway": "10.1.1.254"},
    "policy": {"tenantName": "default", "policyName": "pol1"},
    "rule": {"tenantName": "default", "policyName": "pol1", "ruleId": "1",
             "direction": "in", "action": "allow", "protocol": "tcp", "port": 80},
    "serviceLB": {"tenantName": "default", "serviceName": "svc", "networkName": "net1",
                  "ipAddress": "10.1.1.3", "selectors": ["app=web"], "ports": ["80:8080:TCP"]},
    "tenant": {"tenantName": "blue"},
    "volume": {"tenantName": "default", "volumeName": "v1"},
    "volumeProfile": {"tenantName": "default", "volumeProfileName": "vp1"},
}

NAME_OK = ["a", "Z", "9", "tenant1", "tenant-valid", "io.contiv.x", "A1-b2.C3", "a.b-c.d",
           "0-0", "a" * 64, "prod_web", "a_b.c_d"]
NAME_BAD = ["tenant:invalid", "tenant|invalid", "tenant\\invalid", "tenant#invalid",
            "-tenant", "tenant-", "tenant@invalid", "tenant!invalid", "tenant~invalid",
            "tenant*invalid", "tenant^invalid", "_tenant", "tenant_", "tenant/x", "a.", ".a", "a..b",
            "a b", "tenant\n", "\ntenant", "t\u00e9"]


class ValidateHelpers:
    def obj(self, tname: str, **changes) -> dict:
        obj = dict(VALID[tname])
        obj.update(changes)
        return obj

    def accept(self, tname: str, field: str, value, expect=None) -> dict:
        spec = TYPES[tname]
        obj = self.obj(tname, **{field: value})
        try:
            out = validate(spec, obj, spec.key_of(obj))
        except ModelError as e:
            self.fail(f"{tname}.{field}={value!r} rejected: {e}")
        self.assertEqual(out[field], value if expect is None else expect)
        return out

    def reject(self, tname: str, field: str, value, message: str) -> None:
        spec = TYPES[tname]
        obj = self.obj(tname, **{field: value})
        with self.assertRaises(ModelError, msg=f"{tname}.{field}={value!r}") as cm:
            validate(spec, obj, spec.key_of(obj))
        self.assertEqual(str(cm.exception), message, f"{tname}.{field}={value!r}")

    def family(self, tname: str, field: str, ok, bad) -> None:
        for v in ok:
            self.accept(tname, field, v)
        for v in bad:
            self.reject(tname, field, v, f"{field} string invalid format")


class ValidObjectsTests(ValidateHelpers, SynchronousTestCase):
    def test_every_type_accepts_its_valid_object(self):
        for tname, spec in TYPES.items():
            if not spec.has_config:
                continue
            obj = VALID[tname]
            out = validate(spec, obj, spec.key_of(obj))
            self.assertEqual(out["key"], spec.key_of(obj))
            for k, v in obj.items():
                self.assertEqual(out[k], v)

    def test_input_is_not_mutated(self):
        spec = TYPES["network"]
        obj = {"tenantName": "default", "networkName": "n", "encap": "vlan", "subnet": "1.1.1.0/24"}
        before = dict(obj)
        out = validate(spec, obj, "default:n")
        self.assertEqual(obj, before)
        self.assertEqual(out["nwType"], "data")

    def test_missing_and_null_fields_are_zero(self):
        spec = TYPES["rule"]
        out = validate(spec, {"tenantName": "t", "policyName": "p", "ruleId": "r",
                              "direction": "out", "action": "deny", "port": None}, "t:p:r")
        self.assertEqual(out["port"], 0)
        self.assertEqual(out["protocol"], "")
        self.assertEqual(out["links"], {"MatchEndpointGroup": {"type": "", "key": ""}})
        self.assertEqual(out["link-sets"], {"Policies": {}})

    def test_endpoint_has_no_config(self):
        self.assertRaises(ValueError, validate, TYPES["endpoint"], {}, "x")


class KeyTests(ValidateHelpers, SynchronousTestCase):
    def test_key_of(self):
        self.assertEqual(TYPES["network"].key_of({"tenantName": "t", "networkName": "n"}), "t:n")
        self.assertEqual(TYPES["rule"].key_of(VALID["rule"]), "default:pol1:1")
        self.assertEqual(TYPES["global"].key_of(VALID["global"]), "global")
        self.assertEqual(TYPES["Bgp"].key_of(VALID["Bgp"]), "hostA")
        self.assertEqual(TYPES["aciGw"].key_of(VALID["aciGw"]), "aciGw")
        self.assertEqual(TYPES["tenant"].key_of({}), "")

    def test_url_key_must_match_body(self):
        for tname, spec in TYPES.items():
            if not spec.has_config:
                continue
            obj = VALID[tname]
            with self.assertRaises(ModelError) as cm:
                validate(spec, obj, spec.key_of(obj) + "x")
            self.assertEqual(str(cm.exception), "Invalid Key")

    def test_body_key_is_replaced_by_url_key(self):
        spec = TYPES["tenant"]
        out = validate(spec, {"key": "other", "tenantName": "blue"}, "blue")
        self.assertEqual(out["key"], "blue")

    def test_missing_key_field_is_invalid_key(self):
        spec = TYPES["network"]
        obj = {"networkName": "n", "encap": "vlan", "subnet": "1.1.1.0/24"}
        with self.assertRaises(ModelError) as cm:
            validate(spec, obj, "default:n")
        self.assertEqual(str(cm.exception), "Invalid Key")

    def test_key_check_comes_before_field_checks(self):
        # contivModel.go Validate<Obj> compares the key first.
        spec = TYPES["network"]
        obj = self.obj("network", encap="bogus", cfgdTag="bad=tag")
        with self.assertRaises(ModelError) as cm:
            validate(spec, obj, "default:other")
        self.assertEqual(str(cm.exception), "Invalid Key")

    def test_global_and_aci_names_are_fixed(self):
        self.reject("global", "name", "glob", "name string invalid format")
        self.reject("aciGw", "name", "aci", "name string invalid format")


class NameFamilyTests(ValidateHelpers, SynchronousTestCase):
    def name_fields(self, regex):
        for tname, spec in TYPES.items():
            for f in spec.fields:
                if f.regex == regex:
                    yield tname, f

    def test_name_fields(self):
        fields = list(self.name_fields(rx.NAME))
        # tenant/network/group/policy/rule/service/app/contracts names, hostname, domain
        self.assertEqual(len(fields), 20)
        for tname, f in fields:
            self.family(tname, f.name, NAME_OK, NAME_BAD + [""])

    def test_name_opt_fields_accept_empty(self):
        fields = list(self.name_fields(rx.NAME_OPT))
        self.assertEqual(sorted(f.name for _, f in fields),
                         ["defaultNetwork", "fromEndpointGroup", "fromNetwork",
                          "toEndpointGroup", "toNetwork"])
        # the optional last label makes a trailing dot acceptable ("a." = "a." + "")
        for tname, f in fields:
            self.family(tname, f.name, NAME_OK + ["", "a.", "a.b."],
                        [v for v in NAME_BAD if v != "a."] + ["."])

    def test_lengths_are_bytes_and_checked_before_regex(self):
        for tname, spec in TYPES.items():
            for f in spec.fields:
                if f.maxlen is None:
                    continue
                if f.regex in (rx.NAME, rx.NAME_OPT, rx.TAG, None):
                    self.accept(tname, f.name, "a" * f.maxlen)
                # too long wins over a format error
                self.reject(tname, f.name, "!" * (f.maxlen + 1), f"{f.name} string too long")
        # 33 two-byte characters are 66 bytes: too long for a 64-byte field
        self.reject("tenant", "tenantName", "\u00e9" * 33, "tenantName string too long")
        self.reject("tenant", "tenantName", "\u00e9" * 32, "tenantName string invalid format")

    def test_name_and_length_limits(self):
        self.assertEqual(TYPES["Bgp"].field("hostname").maxlen, 256)
        self.assertEqual(TYPES["serviceLB"].field("serviceName").maxlen, 256)
        self.assertEqual(TYPES["aciGw"].field("physicalDomain").maxlen, 128)
        self.accept("serviceLB", "serviceName", "s" * 256)
        self.reject("serviceLB", "serviceName", "s" * 257, "serviceName string too long")

    def test_unchecked_fields(self):
        # netprofile.profileName: length only; netprofile.tenantName, volume*: no check
        self.accept("netprofile", "profileName", "any thing: at/all!")
        self.accept("netprofile", "tenantName", "")
        self.accept("netprofile", "tenantName", "x" * 500)
        for tname in ("volume", "volumeProfile"):
            for f in TYPES[tname].fields:
                self.accept(tname, f.name, "!! free text !!")
        self.accept("endpointGroup", "netProfile", "any: thing")
        self.accept("Bgp", "as", "not a number")
        self.accept("Bgp", "neighbor-as", "")


class TagTests(ValidateHelpers, SynchronousTestCase):
    def test_cfgd_tag(self):
        ok = ["", "contiv-net", "io.contiv.network.test", "test-tag", "epg-tag", "a" * 128]
        bad = ["tag=contiv-net", "io.contiv.network/test", "-tag", "tag.", "a_b", "a b", "tag\n"]
        for tname in ("network", "endpointGroup"):
            self.family(tname, "cfgdTag", ok, bad)
            self.reject(tname, "cfgdTag", "a" * 129, "cfgdTag string too long")


class BandwidthTests(ValidateHelpers, SynchronousTestCase):
    def test_bandwidth(self):
        ok = ["", "2gbps", "5gbps", "10gbps", "20mbps", "10 Gbps", "10 Gb", "10 gb", "5Gb",
              "6gb", "3gbps", "3Gbps", "4g", "4G", "13mb", "20mb", "1kbps", "100 k", "7Mb",
              # RE2 character class [kmgKMG{1}] also takes '{', '1', '}' (spaced form only)
              "10 {bps", "10 1"]
        bad = ["invalid", "10 Gkms", "10 G12ms", "10 ms", "10 bms", "Gkms", "Gbps", "0 Gbps",
               " 10 Gbps", "10  Gbps", "10Gbps ", "10 Gbps\n", "010mb", "10{bps", "10 KB"]
        self.family("netprofile", "bandwidth", ok, bad)


class IPv4Tests(ValidateHelpers, SynchronousTestCase):
    def test_subnet(self):
        ok = ["10.1.1.0/24", "10.1.1.1/16", "20.1.1.10-20.1.1.45/24", "10.1.1.10-10.1.5.254/16",
              # passes the regex; the network callback rejects it later
              "10.1.1.10-10.1.1.1/24", "1.2.3.4/1", "1.2.3.4/31", "255.255.255.255/9"]
        bad = ["", "10.1.1.10-20/24", "10.1.1.10-10.1.20/24", "10.1.1.10-10.1.1.1.30/24",
               "10.1.1/24", "10.1.1.256/24", "10.1.1.1/32", "10.1.1.1/0", "10.1.1.0",
               "010.1.1.0/24", "10.1.1.0/24\n", "10.1.1.0 /24", "10.1.1.1-70/26"]
        self.family("network", "subnet", ok, bad)

    def test_ipv4_optional(self):
        ok = ["", "10.1.1.254", "0.0.0.0", "255.255.255.255", "1.2.3.4"]
        bad = ["10.1.1.256", "10.1.1", "10.1.1.1/24", "a.b.c.d", "1.2.3.04", "1.2.3.4 "]
        self.family("network", "gateway", ok, bad)
        self.family("serviceLB", "ipAddress", ok, bad[:-1])
        self.family("Bgp", "neighbor", ok, bad[:-1])
        # ipAddress/neighbor are also limited to 15 bytes, checked first
        self.reject("serviceLB", "ipAddress", "1.2.3.4 " * 2, "ipAddress string too long")
        self.reject("Bgp", "neighbor", "1234567890123456", "neighbor string too long")

    def test_ip_pool(self):
        ok = ["", "10.1.1.1", "10.1.1.1-10.1.1.5", "10.1.1.9-10.1.1.1"]
        bad = ["10.1.1.1/24", "10.1.1.1-5", "10.1.1", "-10.1.1.1", "10.1.1.1-"]
        self.family("endpointGroup", "ipPool", ok, bad)

    def test_pvt_subnet(self):
        self.family("global", "pvtSubnet", ["172.19.0.0/16", "172.21.0.0/16", "10.0.0.0/16"],
                    ["", "172.21.0.0/24", "172.19.0.0", "172.19.0.0/16 ", "172.300.0.0/16"])

    def test_router_ip(self):
        self.family("Bgp", "routerip", ["65.1.1.1/24", "10.0.0.1-5/24", "1.1.1.1/31"],
                    ["", "65.1.1.1", "65.1.1.1/32", "65.1.1.1-65.1.1.2/24", "65.1.1.1/0"])

    def test_rule_ip_addresses(self):
        ok = ["", "10.1.1.1", "10.1.1.1/24", "10.1.1.1-20", "10.1.1.10-20/24", "10.2.1.11"]
        bad = ["10.1.1.1-10.1.1.2", "invalid", "10.1.1.1/32", "10.1.1.1/", "10.1.1.1-256"]
        self.family("rule", "fromIpAddress", ok, bad)
        self.family("rule", "toIpAddress", ok, bad)


class IPv6Tests(ValidateHelpers, SynchronousTestCase):
    def test_ipv6_subnet(self):
        ok = ["", "::/64", "1::/64", "2001:3332:3244:2422::/64", "2001:2000::/32",
              "ffff:ffff:ffff::/48", "2016:0617::/120", "1:2:3:4:5:6:7:8/64", "ABCD::/1"]
        bad = ["2016:0617::", "2016:0617::/", "gggg::/64", "1:2:3:4:5:6:7:8:9/64",
               "2016:0617::/0", "10.1.1.0/24", "::1/64/64"]
        self.family("network", "ipv6Subnet", ok, bad)

    def test_ipv6_prefix_length_quirk(self):
        # (1[0-2][0-7]|[1-9][0-9]|[1-9]): 108, 109, 118, 119 and 128 are refused.
        refused = {108, 109, 118, 119, 128}
        for n in range(1, 140):
            value = f"2016:617::/{n}"
            if n <= 127 and n not in refused:
                self.accept("network", "ipv6Subnet", value)
            else:
                self.reject("network", "ipv6Subnet", value, "ipv6Subnet string invalid format")

    def test_ipv6_gateway(self):
        self.family("network", "ipv6Gateway",
                    ["", "2016:0617::1", "::", "::1", "fe80::1", "1:2:3:4:5:6:7:8"],
                    ["2016:0617::/64", "zz::1", "1:2:3:4:5:6:7:8:9", "10.1.1.1", "12345::1"])


class AciTests(ValidateHelpers, SynchronousTestCase):
    def test_path_bindings(self):
        ok = ["", "topology/pod-1/paths-101/pathep-[eth1/14]",
              "topology/pod-1/paths-101/pathep-[eth1/14],topology/pod-1/paths-101/pathep-[eth1/15]",
              "topology/pod-1/paths-101/pathep-[eth1/14],topology/pod-1/paths-101/pathep-[eth1/15],"
              "topology/pod-1/paths-102/pathep-[eth1/5],topology/pod-1/paths-101/pathep-[eth1/6]"]
        bad = ["pod-1/paths-101/pathep-[eth1/14]",
               "topology/pod-1/paths-101/pathep-[eth1/14],pod-1/paths-101/pathep-[eth1/15]",
               "topology/pod-1/paths-101/pathep-[eth1/14],",
               "topology/pod-12345/paths-101/pathep-[eth1/14]",
               "topology/pod-1/paths-101/pathep-eth1/14"]
        self.family("aciGw", "pathBindings", ok, bad)

    def test_node_bindings(self):
        ok = ["", "topology/pod-1/node-101",
              "topology/pod-1/node-101,topology/pod-1/node-102,topology/pod-1/node-103"]
        bad = ["topology/tor-1/node-101", "topology/pod-1/node-101,", "pod-1/node-101",
               "topology/pod-1/node-10101"]
        self.family("aciGw", "nodeBindings", ok, bad)
        self.reject("aciGw", "nodeBindings", "x" * 2049, "nodeBindings string too long")

    def test_yes_no(self):
        for field in ("enforcePolicies", "includeCommonTenant"):
            self.family("aciGw", field, ["yes", "no"], ["", "Yes", "yesno", "y", "true"])


class GlobalTests(ValidateHelpers, SynchronousTestCase):
    def test_vlans(self):
        # 1-5000 and 0-4094 pass the regex; the global callback refuses them later.
        self.family("global", "vlans", ["1-4094", "9-301", "1-1000", "100-1000", "1-5000",
                                        "0-4094", "0001-0002"],
                    ["", "1", "1?2", "abcd", "1-", "-1", "12345-1", "1-4094,5-6", "1 - 2"])

    def test_vxlans(self):
        self.family("global", "vxlans", ["1-10000", "1001-2000", "1-100000", "12345678-1"],
                    ["", "1", "123456789-1", "1-123456789", "a-b", "1-2-3"])

    def test_modes(self):
        self.family("global", "arpMode", ["", "proxy", "flood"], ["Proxy", "xyz", "proxyflood"])
        self.family("global", "fwdMode", ["", "bridge", "routing"], ["Bridge", "route"])
        self.family("global", "networkInfraType", ["", "aci", "aci-opflex", "default"],
                    ["xyz", "aci-", "ACI"])


class NetworkEnumTests(ValidateHelpers, SynchronousTestCase):
    def test_encap(self):
        self.family("network", "encap", ["vlan", "vxlan"], ["", "vvvv", "VLAN", "vlan\n"])

    def test_nw_type_default(self):
        self.accept("network", "nwType", "", expect="data")
        self.family("network", "nwType", ["infra", "data"],
                    ["infratest", "testinfra", "testdata", "datatest", "Data"])


class RuleTests(ValidateHelpers, SynchronousTestCase):
    def test_protocol(self):
        self.family("rule", "protocol",
                    ["", "tcp", "udp", "icmp", "0", "1", "17", "255", "999"],
                    ["xyz", "TCP", "1000", "tcp ", "-1", "tcpudp", "6a"])

    def test_action_direction(self):
        self.family("rule", "action", ["allow", "deny"], ["", "xyz", "accept", "Allow"])
        self.family("rule", "direction", ["in", "out"], ["", "both", "xyz", "In"])

    def test_port_bounds(self):
        for v in (0, 1, 80, 65535, -1):  # only an upper bound in the original
            self.accept("rule", "port", v)
        for v in (65536, 1 << 40):
            self.reject("rule", "port", v, "port Value Out of bound")

    def test_priority_default_and_bounds(self):
        self.accept("rule", "priority", 0, expect=1)
        for v in (1, 50, 100):
            self.accept("rule", "priority", v)
        for v in (101, -1, -100):
            self.reject("rule", "priority", v, "priority Value Out of bound")
        spec = TYPES["rule"]
        obj = dict(VALID["rule"])
        obj.pop("port")
        self.assertEqual(validate(spec, obj, spec.key_of(obj))["priority"], 1)


class NetprofileTests(ValidateHelpers, SynchronousTestCase):
    def test_dscp(self):
        self.accept("netprofile", "DSCP", 0, expect=0)  # "default 0" is a no-op
        for v in (1, 22, 63, -5):
            self.accept("netprofile", "DSCP", v)
        for v in (64, 72):
            self.reject("netprofile", "DSCP", v, "DSCP Value Out of bound")

    def test_burst(self):
        for v in (0, 1, 450, 1500, 10486):
            self.accept("netprofile", "burst", v)
        for v in (10487, 100000):
            self.reject("netprofile", "burst", v, "burst Value Out of bound")


class PktTagTests(ValidateHelpers, SynchronousTestCase):
    def test_pkt_tag(self):
        for v in (0, 1, 4094, 20000, 16777216):
            self.accept("network", "pktTag", v)
        self.reject("network", "pktTag", 16777217, "pktTag Value Out of bound")


def _bad_value(f):
    """A value that fails ``f``'s first check (length before regex)."""
    if f.type is int:
        return (f.max + 1) if f.max is not None else (f.min - 1)
    if f.maxlen is not None:
        return "!" * (f.maxlen + 1)
    return "!!"


class FirstFailureWinsTests(ValidateHelpers, SynchronousTestCase):
    def test_errors_come_in_struct_order(self):
        """Break every checked field; fixing them one by one must reveal the errors in
        Go struct order, which is also the JSON output order."""
        for tname, spec in TYPES.items():
            if not spec.has_config:
                continue
            checked = [f for f in spec.fields
                       if f.maxlen is not None or f.regex is not None
                       or f.min is not None or f.max is not None]
            obj = dict(VALID[tname])
            for f in checked:
                obj[f.name] = _bad_value(f)
            seen = []
            for f in checked:
                with self.assertRaises(ModelError) as cm:
                    validate(spec, obj, spec.key_of(obj))
                seen.append(str(cm.exception).split(" ")[0])
                obj[f.name] = VALID[tname].get(f.name, f.zero())
            self.assertEqual(seen, [f.name for f in checked], tname)
            validate(spec, obj, spec.key_of(obj))

    def test_two_bad_fields(self):
        spec = TYPES["network"]
        obj = self.obj("network", encap="bogus", subnet="bogus")
        with self.assertRaises(ModelError) as cm:
            validate(spec, obj, spec.key_of(obj))
        self.assertEqual(str(cm.exception), "encap string invalid format")
        obj = self.obj("rule", protocol="xyz", priority=101, port=70000)
        with self.assertRaises(ModelError) as cm:
            validate(TYPES["rule"], obj, TYPES["rule"].key_of(obj))
        self.assertEqual(str(cm.exception), "port Value Out of bound")


class CollectionTests(SynchronousTestCase):
    def test_collections(self):
        expect = {
            "aciGws": "aciGw", "appProfiles": "appProfile", "Bgps": "Bgp",
            "endpointGroups": "endpointGroup", "extContractsGroups": "extContractsGroup",
            "globals": "global", "netprofiles": "netprofile", "networks": "network",
            "policys": "policy", "rules": "rule", "serviceLBs": "serviceLB",
            "tenants": "tenant", "volumes": "volume", "volumeProfiles": "volumeProfile",
        }
        for coll, name in expect.items():
            self.assertIs(by_collection(coll), TYPES[name])
            self.assertTrue(TYPES[name].has_config)
        self.assertIsNone(by_collection("bgps"))
        self.assertIsNone(by_collection("policies"))
        self.assertIs(by_collection("endpoints"), TYPES["endpoint"])
        self.assertFalse(TYPES["endpoint"].has_config)
        self.assertEqual(len(TYPES), 15)

    def test_oper_presence(self):
        with_oper = {n for n, t in TYPES.items() if t.has_oper}
        self.assertEqual(with_oper, {"aciGw", "Bgp", "endpointGroup", "global", "network",
                                     "policy", "serviceLB", "tenant", "endpoint"})

    def test_key_fields(self):
        self.assertEqual(TYPES["network"].key_fields, ("tenantName", "networkName"))
        self.assertEqual(TYPES["rule"].key_fields, ("tenantName", "policyName", "ruleId"))
        self.assertEqual(TYPES["global"].key_fields, ("name",))
        self.assertEqual(TYPES["Bgp"].key_fields, ("hostname",))
        self.assertEqual(TYPES["network"].link_sets, ("EndpointGroups", "Servicelbs", "Services"))
        self.assertEqual(TYPES["network"].links, ("Tenant",))


class TypeGuardTests(SynchronousTestCase):
    def test_wrong_python_types_are_caller_bugs(self):
        spec = TYPES["network"]
        base = dict(VALID["network"])
        for field, value in (("pktTag", "5"), ("pktTag", True), ("subnet", 5)):
            self.assertRaises(TypeError, validate, spec, dict(base, **{field: value}), "default:net1")
        sl = TYPES["serviceLB"]
        self.assertRaises(TypeError, validate, sl, dict(VALID["serviceLB"], ports="80:80:TCP"),
                          "default:svc")
        self.assertRaises(TypeError, validate, sl, dict(VALID["serviceLB"], ports=[80]),
                          "default:svc")
