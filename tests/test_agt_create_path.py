"""The agent's one endpoint-create path, with the Docker driver's difference as a parameter.

``EndpointManager.create(..., handoff=True)`` is what the Docker driver calls: these tests
drive it directly on a real agent (real OVS, netns, netmaster, Redis), without dockerd,
so the handoff, the MAC rule, the rollback report and the pending delete it leaves when
the netmaster cannot release are pinned where they are implemented.
"""

from __future__ import annotations

import secrets
import subprocess
from typing import Any, List

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.model.addressing import endpoint_mac
from tests.test_agt_agent import AgentFixture, start_netmaster
from tests.test_agt_plumbing import Netns, ip_json


class HandoffTests(unittest.TestCase):
    timeout = 120

    async def _setup(self) -> None:
        self.fx = AgentFixture(self)
        await self.fx.start()
        self.mgr = self.fx.service.endpoints

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    def request(self, ep_id: str, ip: str = "", **kw: Any) -> Any:
        from contiv_sdn.agent.endpoints import EndpointRequest, port_name
        return EndpointRequest(id=ep_id, netns=self.mgr.host_netns, network="agtnet",
                               ifname="ct" + port_name(ep_id)[2:], ip=ip, **kw)

    def leftover(self, name: str) -> None:
        """A link named like a container end, left in the host namespace."""
        subprocess.run(["ip", "-n", self.fx.netns, "link", "add", name, "type", "veth", "peer",
                        "name", "lf" + secrets.token_hex(4)], check=True)

    def host_link(self, name: str) -> dict:
        links = {l["ifname"]: l for l in ip_json("-n", self.fx.netns, "-d", "link", "show")}
        return links.get(name, {})

    def test_container_end_waits_in_the_host_namespace(self):
        return defer.ensureDeferred(self._handoff())

    async def _handoff(self) -> None:
        from contiv_sdn.agent.endpoints import BadRequest
        ep_id, ip = secrets.token_hex(32), "10.36.1.33"
        req = self.request(ep_id, ip, owner="docker")
        # a container end left behind under that name (Leave moved it back) goes first
        self.leftover(req.ifname)
        rec = await self.mgr.create(req, handoff=True)
        self.assertEqual((rec["ipAddress"], rec["macAddress"], rec["owner"], rec["ifname"]),
                         (ip, endpoint_mac(ip), "docker", req.ifname))
        cont = self.host_link(req.ifname)
        self.assertEqual((cont["linkinfo"]["info_kind"], cont["address"], cont["mtu"]),
                         ("veth", endpoint_mac(ip), 1450))
        addrs = ip_json("-n", self.fx.netns, "addr", "show", "dev", req.ifname)
        self.assertEqual([a for a in addrs[0]["addr_info"] if a["family"] == "inet"], [])
        self.assertIn(rec["intfName"], self.fx.ports())
        # the port is not waited for: its ofport may be known only later
        got = await self.mgr.get(ep_id)
        self.assertEqual({k: v for k, v in (got or {}).items() if k != "ofport"},
                         {k: v for k, v in rec.items() if k != "ofport"})

        # a MAC other than the derived one: refused before anything is allocated
        other = secrets.token_hex(32)
        with self.assertRaises(BadRequest) as ctx:
            await self.mgr.create(self.request(other, "10.36.1.34", mac="02:00:00:00:00:01"),
                                  handoff=True)
        self.assertIn(endpoint_mac("10.36.1.34"), str(ctx.exception))
        again = await self.mgr.create(self.request(other, "10.36.1.34"), handoff=True)
        self.assertEqual(again["ipAddress"], "10.36.1.34")

        # the delete takes the container end along, also when the endpoint is unknown
        self.assertTrue(await self.mgr.delete(ep_id, also_links=(req.ifname,)))
        self.assertEqual(self.host_link(req.ifname), {})
        self.leftover(req.ifname)
        self.assertFalse(await self.mgr.delete(ep_id, also_links=(req.ifname,)))
        self.assertEqual(self.host_link(req.ifname), {})

    def test_rollback_reports_the_release_or_leaves_a_pending_delete(self):
        return defer.ensureDeferred(self._rollback())

    async def _rollback(self) -> None:
        from contiv_sdn.agent.endpoints import EndpointError
        ip = "10.36.1.40"
        ports, links = self.fx.ports(), self.fx.host_links()
        allocated: defer.Deferred = defer.Deferred()
        stop_after_allocation = [False]
        real_create = self.mgr.netmaster.create_endpoint

        async def create_endpoint(*a: Any, **kw: Any) -> Any:
            config = await real_create(*a, **kw)
            if stop_after_allocation[0]:
                self.fx.nm.stop()
            allocated.callback(None)
            return config

        async def unreadable_network(tenant: str, network: str) -> Any:
            await allocated
            raise EndpointError(f"network {tenant}:{network}: shape not readable (test)")

        self.mgr.netmaster.create_endpoint = create_endpoint
        # the network's shape fails after the allocation: undone, and the release reported
        told: List[bool] = []
        with self.assertRaises(EndpointError):
            await self.mgr.create(self.request(secrets.token_hex(32), ip), handoff=True,
                                  network=unreadable_network, on_rollback=told.append)
        self.assertEqual(told, [True])
        self.assertEqual((self.fx.ports(), self.fx.host_links()), (ports, links))

        # the same with the netmaster gone before the release: a pending delete is left
        allocated = defer.Deferred()
        stop_after_allocation[0] = True
        ep_id = secrets.token_hex(32)
        with self.assertRaises(EndpointError):
            await self.mgr.create(self.request(ep_id, ip), handoff=True,
                                  network=unreadable_network, on_rollback=told.append)
        self.assertEqual(told, [True, False])
        self.assertEqual((self.fx.ports(), self.fx.host_links()), (ports, links))
        self.assertEqual([t["id"] for t in self.mgr.pending_deletes()], [ep_id])
        del self.mgr.netmaster.create_endpoint

        # the netmaster is back: the reconcile releases it, and the address is free again
        start_netmaster(self, self.fx.redis, port=self.fx.nm.port, network=False)
        self.assertEqual(await self.mgr.reconcile(), {"reaped": [], "released": [ep_id]})
        rec = await self.mgr.create(self.request(secrets.token_hex(32), ip), handoff=True)
        self.assertEqual(rec["ipAddress"], ip)

    def test_taken_address_leaves_nothing_in_the_container(self):
        return defer.ensureDeferred(self._taken())

    async def _taken(self) -> None:
        from contiv_sdn.agent.endpoints import EndpointRequest
        from contiv_sdn.agent.netmaster import NetmasterError
        ip = "10.36.1.50"
        first = Netns(self, "c")
        await self.mgr.create(EndpointRequest(id=secrets.token_hex(32), netns=first.path,
                                              network="agtnet", ip=ip))
        ports, links = self.fx.ports(), self.fx.host_links()
        second = Netns(self, "c")
        # the veth may be made while the netmaster refuses the address: it goes again
        with self.assertRaises(NetmasterError) as ctx:
            await self.mgr.create(EndpointRequest(id=secrets.token_hex(32), netns=second.path,
                                                  network="agtnet", ip=ip))
        self.assertIn(f"ip address {ip} is already in use", str(ctx.exception))
        self.assertEqual((self.fx.ports(), self.fx.host_links()), (ports, links))
        self.assertEqual(set(second.links()), {"lo"})
