"""The netmaster's record of which swarm docker network maps to which Contiv object (issue 17).

Contiv kept ``oper/docknet/<tenant>.<network>.<group>`` → ``{tenantName, networkName,
serviceName, docknetUUID}`` and, with ``--mode swarm-mode``, refused to delete a network or
group a docker network maps to ("cannot delete network N mapped to docker network U").
Here the swarm manager's plugin reports the mapping through the ``/plugin/createDocknet`` and
``deleteDocknet`` calls (:class:`contiv_sdn.api.plugin.PluginRoutes`), decoded by their
declared shapes; the semantics run on a real redis-server.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from contiv_sdn.api.http import HttpError
from contiv_sdn.master.config import MasterConfig
from contiv_sdn.master.errors import MasterError
from tests.test_fnd_helpers import async_test, master_on_redis, post_object

UUID = "k3t0v9w1x2y3z4a5b6c7d8e9f"   # swarm network ids are 25 characters
OTHER = "a1b2c3d4e5f6g7h8i9j0k1l2m"


class DocknetTests(TestCase):
    timeout = 60
    mode = "swarm-mode"

    async def _setUp(self) -> None:
        self.store, self.master, self.routes = await master_on_redis(
            self, MasterConfig(cluster_mode=self.mode))
        await self.put("network", "default:contiv-net", {
            "tenantName": "default", "networkName": "contiv-net", "encap": "vxlan",
            "subnet": "10.1.1.0/24", "gateway": "10.1.1.254"})
        await self.put("endpointGroup", "default:web", {
            "tenantName": "default", "networkName": "contiv-net", "groupName": "web"})

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def put(self, kind: str, key: str, body: dict) -> None:
        await post_object(self.master, kind, key, body)

    async def call(self, name: str, body: object) -> dict:
        return await self.routes.plugin(name, json.dumps(body).encode())

    async def docknets(self) -> dict:
        return await self.store.list("docknet")

    async def refused(self, coro) -> str:
        try:
            await coro
        except (MasterError, HttpError) as e:
            return str(e)
        self.fail("not refused")

    @async_test
    async def test_mapping_recorded_shown_and_deletion_refused(self):
        rec = await self.call("createDocknet", {"TenantName": "default",
                                                "NetworkName": "contiv-net",
                                                "DocknetUUID": UUID})
        self.assertEqual(rec, {"tenantName": "default", "networkName": "contiv-net",
                               "serviceName": "", "docknetUUID": UUID})
        await self.call("createDocknet", {"TenantName": "default", "NetworkName": "contiv-net",
                                          "ServiceName": "web", "DocknetUUID": OTHER})
        self.assertEqual(sorted(await self.docknets()),
                         ["default.contiv-net.", "default.contiv-net.web"])
        # inspect's oper names the docker network (netctl net/group inspect)
        _, oper = await self.master.inspect("network", "default:contiv-net")
        self.assertEqual(oper["docknetUUID"], UUID)
        _, oper = await self.master.inspect("endpointGroup", "default:web")
        self.assertEqual(oper["docknetUUID"], OTHER)
        # Contiv's refusals, and nothing deleted
        self.assertEqual(await self.refused(self.master.delete("endpointGroup", "default:web")),
                         f"cannot delete group web mapped to docker network {OTHER}")
        # the group goes once its docker network is gone; then the network's own mapping
        # still holds it
        gone = await self.call("deleteDocknet", {"DocknetUUID": OTHER})
        self.assertEqual(gone, {"Deleted": ["default.contiv-net.web"]})
        _, oper = await self.master.inspect("endpointGroup", "default:web")
        self.assertNotIn("docknetUUID", oper)
        await self.master.delete("endpointGroup", "default:web")
        self.assertEqual(await self.refused(self.master.delete("network", "default:contiv-net")),
                         f"cannot delete network contiv-net mapped to docker network {UUID}")
        self.assertIsNotNone(await self.store.get("obj:network", "default:contiv-net"))
        await self.call("deleteDocknet", {"DocknetUUID": UUID})
        self.assertEqual(await self.call("deleteDocknet", {"DocknetUUID": UUID}),
                         {"Deleted": []}, "a repeated FreeNetwork is not an error")
        await self.master.delete("network", "default:contiv-net")
        self.assertEqual(await self.docknets(), {})

    @async_test
    async def test_refusals_keep_nothing(self):
        same = {"TenantName": "default", "NetworkName": "contiv-net", "DocknetUUID": UUID}
        await self.call("createDocknet", same)
        self.assertEqual(await self.call("createDocknet", same),
                         dict(tenantName="default", networkName="contiv-net", serviceName="",
                              docknetUUID=UUID), "the same mapping again is a no-op")
        text = await self.refused(self.call("createDocknet", dict(same, DocknetUUID=OTHER)))
        self.assertEqual(text, f"network contiv-net is already mapped to docker network {UUID}; "
                               "use that docker network, or remove it first")
        self.assertIn("Network nosuch not found", await self.refused(self.call(
            "createDocknet", dict(same, NetworkName="nosuch"))))
        self.assertIn("endpoint group db of network contiv-net not found", await self.refused(
            self.call("createDocknet", dict(same, ServiceName="db"))))
        self.assertIn("invalid docker network id", await self.refused(
            self.call("createDocknet", dict(same, DocknetUUID=""))))
        # the shape: a number where Go has a string is refused with Go's words
        text = await self.refused(self.call("createDocknet", dict(same, DocknetUUID=7)))
        self.assertIn("CreateDocknetRequest.DocknetUUID", text)
        self.assertEqual(list(await self.docknets()), ["default.contiv-net."])


class DocknetDockerModeTests(DocknetTests):
    """Outside swarm mode a mapping is kept (and shown) but refuses nothing, as Contiv;
    the object's deletion takes its mapping with it."""

    mode = "docker"

    @async_test
    async def test_mapping_recorded_shown_and_deletion_refused(self):
        await self.call("createDocknet", {"TenantName": "default", "NetworkName": "contiv-net",
                                          "ServiceName": "web", "DocknetUUID": OTHER})
        _, oper = await self.master.inspect("endpointGroup", "default:web")
        self.assertEqual(oper["docknetUUID"], OTHER)
        await self.master.delete("endpointGroup", "default:web")
        self.assertEqual(await self.docknets(), {})
