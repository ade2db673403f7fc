"""A create whose record cannot be read back answers 503, never an empty EndpointConfig.

Seen at 1000 simulated switches x 20k endpoints (bench/scale.py): with the netmaster's
reactor stalled for seconds, its Redis calls timed out and the connections were
reopened, and one createEndpoint answered ``{"EndpointConfig": null}`` — the agent's
client then refused it as "EndpointConfig is for endpoint ''".  The create path now
answers that case as the store being unavailable (503, "retry"), and the retry of the
same request finds the record.  Real redis-server; the read-back is made to miss once.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from contiv_sdn.store.txn import StoreUnavailable
from tests.test_fnd_helpers import async_test, master_on_redis, post_object

EP = "ab" * 32


class EndpointReadBackTests(TestCase):
    timeout = 60

    async def _setUp(self) -> None:
        self.store, self.master, self.routes = await master_on_redis(self)
        await post_object(self.master, "network", "default:rb-net", {
            "tenantName": "default", "networkName": "rb-net", "encap": "vxlan",
            "subnet": "10.9.9.0/24", "gateway": "10.9.9.254"})

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    def create(self) -> defer.Deferred:
        body = {"TenantName": "default", "NetworkName": "rb-net", "ServiceName": "",
                "EndpointID": EP, "ConfigEP": {"Container": EP, "Host": "node1",
                                               "IntfName": "cvab", "ServiceName": ""}}
        return defer.ensureDeferred(self.routes.plugin("createEndpoint",
                                                       json.dumps(body).encode()))

    @async_test
    async def test_a_record_not_read_back_is_a_retry_not_an_empty_config(self):
        real_get = self.store.get
        missed = []

        async def get_once_missing(kind, key):
            if kind == "endpoint" and not missed:
                missed.append(key)
                return None
            return await real_get(kind, key)

        self.store.get = get_once_missing
        try:
            await self.create()
        except StoreUnavailable as e:
            self.assertIn("retry", str(e))
        else:
            self.fail("a create that could not read its record back was answered")
        self.assertEqual(missed, [EP])
        # the retry of the same request finds the record the first one wrote
        answer = await self.create()
        config = answer["EndpointConfig"]
        self.assertEqual(config["id"], EP)
        self.assertTrue(config["ipAddress"].startswith("10.9.9."))
        self.assertEqual(len(await self.store.list("endpoint")), 1)
