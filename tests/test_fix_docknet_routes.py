"""The swarm docknet calls are reachable through the real netmaster (issue 17, fixes by H13).

:class:`contiv_sdn.api.plugin.PluginRoutes` served ``createDocknet``/``deleteDocknet``
but the router, the OpenAPI document and the node role did not list them, so a swarm
manager's plugin got 404 and the ``--mode swarm-mode`` refusal to delete a mapped
network never fired.  Proved here on a real HTTPS ``--auth`` netmaster in swarm mode,
with the Docker driver's own client (:class:`drivers.docker.netmaster.PluginNetmaster`)
logged in as a ``node`` user — the credential a swarm manager's netplugin has: it lists
networks and groups (``resolve_tag``), records and forgets a mapping, ``inspect`` shows
the ``docknetUUID``, deleting the mapped network is refused with Contiv's text, and the
OpenAPI document describes both calls.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.agent.netmaster import NetmasterSession
from drivers.docker.names import Placement
from drivers.docker.netmaster import PluginNetmaster
from tests.test_sec_agent import SecureSetup

UUID = "k3t0v9w1x2y3z4a5b6c7d8e9f"   # swarm network ids are 25 characters


class DocknetRouteTests(SecureSetup, unittest.TestCase):
    timeout = 120
    extra_args = ("--mode", "swarm-mode")

    def setUp(self):
        self.start_secure()

    def plugin_client(self, user: str) -> PluginNetmaster:
        c = PluginNetmaster(self.nm.url, timeout=15, session=NetmasterSession(
            user=user, password_file=self.add_node(user), ca=self.certs["ca"]))
        self.addCleanup(c.close)
        return c

    def test_a_node_maps_a_swarm_network_and_the_mapping_protects_it(self):
        async def go() -> None:
            c = self.plugin_client("swarm-mgr")
            # resolve_tag lists groups, then networks: both reads a node may make
            self.assertEqual(await c.resolve_tag("secnet.default"),
                             Placement("default", "secnet", ""))
            await c.create_docknet(Placement("default", "secnet", ""), UUID)
            oper = self.call_ok("GET", "/api/v1/inspect/networks/default:secnet/")["Oper"]
            self.assertEqual(oper.get("docknetUUID"), UUID)
            status, text, _ = self.admin.call("DELETE", "/api/v1/networks/default:secnet/")
            self.assertNotEqual(status, 200, text)
            self.assertIn(f"docker network {UUID}".encode(), text)
            await c.delete_docknet(UUID)
            oper = self.call_ok("GET", "/api/v1/inspect/networks/default:secnet/")["Oper"]
            self.assertFalse(oper.get("docknetUUID"))
            # a group's mapping shows on the group and protects it
            self.call_ok("POST", "/api/v1/endpointGroups/default:web/", {
                "tenantName": "default", "networkName": "secnet", "groupName": "web",
                "cfgdTag": "webtag"})
            web = await c.resolve_tag("webtag")
            self.assertEqual(web, Placement("default", "secnet", "web"))
            await c.create_docknet(web, UUID)
            oper = self.call_ok("GET", "/api/v1/inspect/endpointGroups/default:web/")["Oper"]
            self.assertEqual(oper.get("docknetUUID"), UUID)
            status, text, _ = self.admin.call("DELETE", "/api/v1/endpointGroups/default:web/")
            self.assertNotEqual(status, 200, text)
            self.assertIn(f"docker network {UUID}".encode(), text)
        return defer.ensureDeferred(go())

    def test_undecodable_docknet_request_is_refused_with_go_text(self):
        status, text, _ = self.admin.call("POST", "/plugin/createDocknet",
                                          {"DocknetUUID": 5})
        self.assertEqual(status, 500, text)
        self.assertIn(b"cannot unmarshal number into Go struct field", text)

    def test_openapi_documents_the_docknet_calls(self):
        doc = self.call_ok("GET", "/openapi.json")
        for name in ("createDocknet", "deleteDocknet"):
            op = doc["paths"][f"/plugin/{name}"]["post"]
            self.assertEqual(op["operationId"], name)
            self.assertIn("swarm", op["summary"])
        self.assertIn("Deleted",
                      doc["components"]["schemas"]["DeleteDocknetResponse"]["properties"])
