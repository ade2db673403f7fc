"""Agent pieces with no I/O (names, ids, options, request validation).  Host
registration through a real netmaster is tested in ``tests/test_hosts_api.py``."""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial import unittest


class NamingTests(unittest.SynchronousTestCase):
    def test_dpid_is_stable_48_bits_nonzero_and_distinct(self):
        from contiv_sdn.agent.registration import host_dpid
        names = [f"node{i}" for i in range(1, 200)] + ["", "a", "host.example.com"]
        ids = [host_dpid(n) for n in names]
        self.assertEqual(ids, [host_dpid(n) for n in names])
        self.assertTrue(all(0 < d < 1 << 48 for d in ids))
        self.assertEqual(len(set(ids)), len(ids))
        # the high 16 bits are used too (not just a 32-bit CRC)
        self.assertTrue(any(d >= 1 << 32 for d in ids))

    def test_port_name(self):
        from contiv_sdn.agent.endpoints import port_name
        docker_id = "3f4e5d6c7b8a" + "0" * 52
        self.assertEqual(port_name(docker_id), "cv3f4e5d6c7b8a")
        self.assertEqual(port_name(docker_id.upper()), "cv3f4e5d6c7b8a")
        cni = port_name("default/web-1/eth0")
        self.assertRegex(cni, r"^cv[0-9a-f]{12}$")
        self.assertNotEqual(cni, port_name("default/web-2/eth0"))
        self.assertTrue(all(len(port_name(x)) <= 15 for x in (docker_id, "x", "y" * 300)))

    def test_prefix_len(self):
        from contiv_sdn.agent.endpoints import prefix_len
        self.assertEqual(prefix_len("10.1.1.0/24"), 24)
        self.assertEqual(prefix_len("10.1.1.10-10.1.1.20/22"), 22)
        self.assertRaises(ValueError, prefix_len, "10.1.1.0")

    def test_host_record_shape(self):
        from contiv_sdn.agent.registration import host_record
        from contiv_sdn.model.plugin_api import REGISTER_HOST
        rec = host_record("n1", "192.168.50.1", 42, "br-int", None, 1500)
        self.assertEqual(rec, {"name": "n1", "vtepIP": "192.168.50.1", "dpid": 42,
                               "bridge": "br-int", "tunnelPort": "vxlan0", "uplinkPort": "",
                               "mtu": 1500})
        # what the agent sends is the declared request, field for field (plus refresh;
        # the netmaster stamps ``updated``)
        self.assertEqual(REGISTER_HOST.coerce(dict(rec, refresh=30.0)),
                         dict(rec, refresh=30.0))


class RequestValidationTests(unittest.SynchronousTestCase):
    def parse(self, **body):
        from contiv_sdn.agent.endpoints import EndpointRequest
        return EndpointRequest.from_json(body)

    def test_defaults(self):
        req = self.parse(id="e1", netns="/var/run/netns/c1", network="net")
        self.assertEqual((req.ifname, req.tenant, req.group, req.ip, req.labels),
                         ("eth0", "default", "", "", {}))

    def test_refusals_say_what_is_wrong(self):
        from contiv_sdn.agent.endpoints import BadRequest
        good = dict(id="e1", netns="/var/run/netns/c1", network="net")
        cases = [
            ({"id": None}, "'id'"), ({"netns": "c1"}, "path"), ({"network": ""}, "network"),
            ({"ifname": "x" * 16}, "ifname"), ({"ifname": "a/b"}, "ifname"),
            ({"ip": "10.1.1"}, "IPv4"), ({"labels": {"a": 1}}, "labels"), ({"tenant": 5}, "tenant"),
        ]
        for change, word in cases:
            body = dict(good, **change)
            body = {k: v for k, v in body.items() if v is not None}
            with self.assertRaises(BadRequest, msg=str(change)) as ctx:
                self.parse(**body)
            self.assertIn(word, str(ctx.exception))
        from contiv_sdn.agent.endpoints import EndpointRequest
        self.assertRaises(BadRequest, EndpointRequest.from_json, ["not", "an", "object"])

    def test_ip_with_prefix_is_accepted_as_address(self):
        self.assertEqual(self.parse(id="e", netns="/x", network="n", ip="10.1.1.9/24").ip,
                         "10.1.1.9")


class OptionsTests(unittest.SynchronousTestCase):
    def parse(self, *argv):
        from contiv_sdn.agent.options import Options
        opts = Options()
        opts.parseOptions(list(argv))
        return opts

    def test_defaults(self):
        opts = self.parse("--vtep-ip", "192.0.2.9")
        self.assertEqual(opts["controllers"], ["tcp:127.0.0.1:6653"])
        self.assertEqual(opts["netmaster"], "http://127.0.0.1:9999")
        self.assertEqual(opts["redis"], "unix:///var/lib/contiv-sdn/netmaster/redis.sock")
        self.assertEqual(opts["datapath-type"], "system")
        self.assertEqual(opts["bridge"], "br-int")
        self.assertEqual(opts["socket"], "/run/contiv/netplugin.sock")
        self.assertEqual(opts["underlay-mtu"], 1500)
        self.assertTrue(opts["host"])
        self.assertTrue(opts["ovs-db"].startswith("unix:") and opts["ovs-db"].endswith("db.sock"))

    def test_ovs_rundir_default(self):
        old = os.environ.get("OVS_RUNDIR")
        os.environ["OVS_RUNDIR"] = "/tmp/agt-rundir"
        try:
            self.assertEqual(self.parse("--vtep-ip", "192.0.2.9")["ovs-db"],
                             "unix:/tmp/agt-rundir/db.sock")
        finally:
            if old is None:
                os.environ.pop("OVS_RUNDIR")
            else:
                os.environ["OVS_RUNDIR"] = old

    def test_controllers_repeat_and_dedupe(self):
        opts = self.parse("--vtep-ip", "192.0.2.9", "--controller", "tcp:10.0.0.1:6653",
                          "--controller", "tcp:10.0.0.2:6653", "--controller",
                          "tcp:10.0.0.1:6653")
        self.assertEqual(opts["controllers"], ["tcp:10.0.0.1:6653", "tcp:10.0.0.2:6653"])

    def test_bad_values(self):
        for argv in (["--controller", "tcp:master:6653"], ["--controller", "10.0.0.1:6653"],
                     ["--datapath-type", "kernel"], ["--vtep-ip", "1.2.3"],
                     ["--underlay-mtu", "100"], ["--bridge", "b" * 16], ["--refresh", "0"],
                     ["--refresh", "-5"], ["--refresh", "1e9"]):
            with self.assertRaises(usage.UsageError, msg=str(argv)):
                self.parse("--vtep-ip", "192.0.2.9", *argv)
