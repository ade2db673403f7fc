"""Pure parts of the netmaster: address/tag arithmetic, option parsing, oper text."""

from __future__ import annotations

from twisted.python import usage
from twisted.trial import unittest

from contiv_sdn.master import MasterError, netutil
from contiv_sdn.master.options import NetmasterOptions, listen_endpoint
from contiv_sdn.master.oper import endpoint_oper, go_map_string


class NetutilTests(unittest.TestCase):
    def test_tag_ranges(self):
        self.assertEqual(netutil.parse_tag_ranges("1-4094", "vlan"), [netutil.TagRange(1, 4094)])
        for text, kind, message in [
            ("1-5000", "vlan", "invalid range 1-5000, vlan values exceed 4095 max allowed"),
            ("0-10", "vlan", "invalid range 0-10, values less than 1"),
            ("10-5", "vxlan", "invalid range 10-5, min is greater than max"),
            ("1-20000", "vxlan", "does not allow vxlan range to exceed 16000 range 1-20000"),
            ("1-2,5-6", "vxlan", "do not support more than 2 vxlan tag ranges"),
        ]:
            with self.assertRaises(MasterError) as e:
                netutil.parse_tag_ranges(text, kind)
            self.assertEqual(str(e.exception), message)
        self.assertTrue(netutil.covers_in_use("1-100", [(5, 7), (90, 90)], "vlan"))
        self.assertFalse(netutil.covers_in_use("6-100", [(5, 7)], "vlan"))

    def test_subnets(self):
        s = netutil.parse_subnet("20.1.1.10-20.1.1.20/24")
        self.assertEqual((s.address, s.length, s.alloc_lo, s.alloc_hi), ("20.1.1.0", 24, 10, 20))
        s = netutil.parse_subnet("20.1.1.0/24")
        self.assertEqual((s.alloc_lo, s.alloc_hi, s.ip(5)), (1, 254, "20.1.1.5"))
        with self.assertRaises(MasterError) as e:
            s.index("20.1.0.254")
        self.assertEqual(str(e.exception),
                         "hostIP 20.1.0.254 is exceeding beyond subnet 20.1.1.0/24, hostID 4294967294")
        self.assertTrue(netutil.overlapping("10.1.0.0/16", "10.1.5.0/24"))
        self.assertFalse(netutil.overlapping("10.1.0.0-10.1.0.9/24", "10.1.0.10-10.1.0.20/24"))
        self.assertEqual(netutil.mac_of("20.1.1.2"), "02:02:14:01:01:02")
        v6 = netutil.parse_v6("2001:db8::/64")
        self.assertEqual((v6.host_id("2001:db8::a"), v6.ip(11)), (10, "2001:db8::b"))


class OptionTests(unittest.TestCase):
    def test_listen_forms(self):
        self.assertEqual(listen_endpoint("tcp:9999"), "tcp:9999")
        self.assertEqual(listen_endpoint(":9999"), "tcp:9999")
        self.assertEqual(listen_endpoint("0.0.0.0:9999"), "tcp:9999")
        self.assertEqual(listen_endpoint("127.0.0.1:80"), "tcp:80:interface=127.0.0.1")
        self.assertRaises(usage.UsageError, listen_endpoint, "nowhere")

    def test_explicit_settings_only(self):
        o = NetmasterOptions()
        o.parseOptions(["--fwdmode", "routing", "--vlans", "100-200"])
        cfg = o.config()
        self.assertEqual((cfg.fwd_mode, cfg.vlans, cfg.vxlans, cfg.explicit),
                         ("routing", "100-200", "1-10000", frozenset({"fwd_mode", "vlans"})))
        self.assertRaises(usage.UsageError, NetmasterOptions().parseOptions, ["--fwdmode", "x"])
        self.assertRaises(usage.UsageError, NetmasterOptions().parseOptions,
                          ["--pvt-subnet", "10.0.0.0/24"])


class OperTextTests(unittest.TestCase):
    def test_endpoint_oper(self):
        self.assertEqual(go_map_string({"b": "2", "a": "1"}), "map[a:1 b:2]")
        self.assertEqual(go_map_string(None), "map[]")
        ep = {"id": "e1", "network": "blue:n1", "group": "blue:web", "epgId": 3,
              "ipAddress": "1.2.3.4", "intfName": "vport3", "labels": {}}
        oper = endpoint_oper(ep, key="e", with_port=True)
        self.assertEqual((oper["network"], oper["endpointGroupKey"], oper["serviceName"],
                          oper["virtualPort"], oper["ipAddress"]),
                         ("n1.blue", "web:blue", "web", "vvport3", ["1.2.3.4", ""]))
