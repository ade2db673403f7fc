"""The endpoint MAC rule is declared once (``contiv_sdn.model.addressing``): the Python
rule and the Lua renderer the netmaster's transactions use in Redis agree."""

from __future__ import annotations

import ipaddress
import json
import re

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.model.addressing import MAC_PREFIX, endpoint_mac
from contiv_sdn.store import Store, Txn, placeholder
from contiv_sdn.testing import RedisServer

ADDRESSES = ["0.0.0.1", "10.37.1.5", "20.1.1.254", "172.16.10.1", "192.168.255.254",
             "255.255.255.254"]


class EndpointMacTests(unittest.TestCase):
    def test_rule(self):
        self.assertEqual(endpoint_mac("10.37.1.5"), "02:02:0a:25:01:05")
        self.assertEqual(endpoint_mac("255.255.255.254"), "02:02:ff:ff:ff:fe")
        self.assertRegex(MAC_PREFIX, r"\A[0-9a-f]{2}:[0-9a-f]{2}\Z")
        for bad in ("10.37.1", "10.37.1.256", "10.37.1.5/24", "", "::1"):
            with self.assertRaises(ValueError, msg=bad):
                endpoint_mac(bad)

    def test_lua_renderer_is_made_from_the_declaration(self):
        from contiv_sdn.store import lua
        body = lua.APPLY[lua.APPLY.index("local function mac(n)"):]
        body = body[:body.index("\nend\n")]
        self.assertIn(f"'{MAC_PREFIX}:%02x:%02x:%02x:%02x'", body)
        # no other copy of the rule in the script
        self.assertEqual(len(re.findall(re.escape(MAC_PREFIX) + ":%02x", lua.APPLY)), 1)


class LuaAgreesWithPythonTests(unittest.TestCase):
    """A real redis-server runs APPLY; the MACs it writes are the Python rule's."""

    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def test_apply_renders_the_same_macs(self):
        return defer.ensureDeferred(self._same_macs())

    async def _same_macs(self) -> None:
        store = await Store.connect(self.redis.url)
        try:
            t = Txn()
            record = {}
            for i, ip in enumerate(ADDRESSES):
                # one bit (1) above base = the address: Redis renders base + 1
                t.alloc(f"a{i}", f"test:addr{i}", 1, 1, fmt="ip",
                        base=int(ipaddress.IPv4Address(ip)) - 1)
                record[ip] = [placeholder(f"a{i}", "ip"), placeholder(f"a{i}", "mac")]
            t.put("endpoint", "macs", json.dumps(record), subs=True)
            await store.apply(t)
            got = await store.get("endpoint", "macs")
        finally:
            await store.close()
        self.assertEqual(got, {ip: [ip, endpoint_mac(ip)] for ip in ADDRESSES})
