"""A netmaster with its embedded Redis, stopped (or killed) and started again:
objects, EPG ids and allocations are still there, and new ids are fresh."""

from __future__ import annotations

from twisted.trial import unittest

from contiv_sdn.testing import require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from tests.test_fnd_helpers import Client, async_test


class RestartTests(unittest.TestCase):
    def setUp(self):
        require_binary("redis-server")
        self.nm = NetmasterProcess().start()
        self.addCleanup(self.nm.stop)
        self.c = Client(self.nm.url)

    async def restart(self, crash: bool = False):
        await self.c.close()
        if crash:
            self.nm.kill()
        else:
            self.nm.stop(remove=False)
        self.nm.start()
        self.c = Client(self.nm.url)

    async def endpoint(self, ep_id, group=""):
        return (await self.c.ok("POST", "/plugin/createEndpoint", {
            "TenantName": "t1", "NetworkName": "n", "ServiceName": group, "EndpointID": ep_id,
            "ConfigEP": {"Host": "fnd-h"}}))["EndpointConfig"]

    async def snapshot(self):
        out = {}
        for coll in ("tenants", "networks", "endpointGroups", "policys", "globals"):
            out[coll] = await self.c.ok("GET", f"/api/v1/{coll}/")
        out["net"] = await self.c.ok("GET", "/api/v1/inspect/networks/t1:n/")
        out["g1"] = await self.c.ok("GET", "/api/v1/inspect/endpointGroups/t1:g1/")
        out["tenant"] = await self.c.ok("GET", "/api/v1/inspect/tenants/t1/")
        return out

    @async_test
    async def test_stop_start_and_crash_keep_everything(self):
        try:
            await self._scenario()
        finally:
            await self.c.close()

    async def _scenario(self):
        c = self.c
        await c.ok("POST", "/api/v1/tenants/t1/", {"tenantName": "t1"})
        await c.ok("POST", "/api/v1/networks/t1:n/", {
            "tenantName": "t1", "networkName": "n", "encap": "vxlan", "pktTag": 5000,
            "subnet": "10.80.0.0/24", "gateway": "10.80.0.254"})
        await c.ok("POST", "/api/v1/policys/t1:p/", {"tenantName": "t1", "policyName": "p"})
        await c.ok("POST", "/api/v1/endpointGroups/t1:g1/", {
            "tenantName": "t1", "groupName": "g1", "networkName": "n",
            "ipPool": "10.80.0.100-10.80.0.110", "policies": ["p"]})
        await c.ok("POST", "/api/v1/endpointGroups/t1:g2/", {
            "tenantName": "t1", "groupName": "g2", "networkName": "n"})
        e1 = await self.endpoint("fnd-r1", "g1")
        e2 = await self.endpoint("fnd-r2", "g2")
        await c.ok("POST", "/plugin/allocAddress", {"NetworkID": "n.t1"})
        before = await self.snapshot()
        self.assertEqual((e1["ipAddress"], e2["ipAddress"]), ("10.80.0.100", "10.80.0.1"))
        self.assertEqual(before["net"]["Oper"]["allocatedIPAddresses"],
                         "10.80.0.1-10.80.0.2, 10.80.0.100-10.80.0.110, 10.80.0.254")

        await self.restart()
        self.assertEqual(await self.snapshot(), before)
        again = await self.endpoint("fnd-r1", "g1")
        self.assertEqual(again, e1)
        await self.c.ok("POST", "/api/v1/endpointGroups/t1:g3/", {
            "tenantName": "t1", "groupName": "g3", "networkName": "n"})
        e3 = await self.endpoint("fnd-r3", "g3")
        self.assertNotIn(e3["epgId"], (e1["epgId"], e2["epgId"]))
        self.assertEqual(e3["ipAddress"], "10.80.0.3")

        before = await self.snapshot()
        await self.restart(crash=True)  # SIGKILL: the orphaned redis-server is adopted
        after = await self.snapshot()
        self.assertEqual(after, before)
        self.assertEqual(after["net"]["Oper"]["allocatedIPAddresses"],
                         "10.80.0.1-10.80.0.3, 10.80.0.100-10.80.0.110, 10.80.0.254")
        await self.c.ok("POST", "/api/v1/endpointGroups/t1:g4/", {
            "tenantName": "t1", "groupName": "g4", "networkName": "n"})
        e4 = await self.endpoint("fnd-r4", "g4")
        self.assertNotIn(e4["epgId"], (e1["epgId"], e2["epgId"], e3["epgId"]))
        self.assertEqual((await self.c.ok("GET", "/api/v1/inspect/networks/t1:n/"))["Oper"]
                         ["externalPktTag"], 5000)
