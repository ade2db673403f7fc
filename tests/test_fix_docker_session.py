"""The Docker driver calls the netmaster with the agent's node credential (issue 13, H13).

:class:`drivers.docker.service.DockerPluginService` built its
:class:`~drivers.docker.netmaster.PluginNetmaster` without the agent's
:class:`~contiv_sdn.agent.netmaster.NetmasterSession`, so against an HTTPS ``--auth``
netmaster every driver call failed (no trust for the certificate, no token).  Proved
here against a real HTTPS ``--auth`` netmaster: the driver's client shares the agent's
session (one login for the process) and allocates, reads and releases as the agent's
node user; an agent without a client gets a session from its options.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.agent.netmaster import NetmasterClient, NetmasterSession
from drivers.docker.names import Placement
from drivers.docker.service import DockerPluginService, agent_session
from tests.test_sec_agent import SUBNET, SecureSetup


class DriverSessionTests(SecureSetup, unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.start_secure()

    def plugin_service(self, agent: object) -> DockerPluginService:
        sock = os.path.join(self.dir, "plugins", "netplugin.sock")
        svc = DockerPluginService(agent, sock, "unix://" + os.path.join(self.dir, "docker.sock"))
        self.addCleanup(svc.netmaster.close)
        return svc

    def test_driver_calls_carry_the_agents_node_credential(self):
        async def go() -> None:
            options = {"netmaster": self.nm.url, "netmaster-user": "drv-node",
                       "netmaster-password-file": self.add_node("drv-node"),
                       "netmaster-ca": self.certs["ca"], "host": "drv-node"}
            agent_client = NetmasterClient(self.nm.url,
                                           session=NetmasterSession.from_options(options))
            self.addCleanup(agent_client.close)
            agent = SimpleNamespace(config=options, netmaster=agent_client,
                                    endpoints=SimpleNamespace(ready=True), host="drv-node")
            svc = self.plugin_service(agent)
            self.assertIs(svc.netmaster.session, agent_client.session)
            p = Placement("default", "secnet", "")
            addr = await svc.netmaster.alloc_address(p, SUBNET)
            self.assertTrue(addr.endswith("/" + SUBNET.split("/")[1]), addr)
            self.assertEqual((await svc.netmaster.network("default", "secnet"))["subnet"],
                             SUBNET)
            await svc.netmaster.release_address(p, addr.split("/")[0])
            # one login, shared: the agent's client has the token the driver used
            self.assertTrue(agent_client.session.token)
        return defer.ensureDeferred(go())

    def test_an_agent_without_a_client_gets_a_session_from_its_options(self):
        options = {"netmaster": self.nm.url, "netmaster-user": "drv-x",
                   "netmaster-password-file": self.password_file("drv-x", "pw-123456"),
                   "netmaster-ca": self.certs["ca"]}
        session = agent_session(SimpleNamespace(config=options))
        self.assertEqual((session.user, session.ca), ("drv-x", self.certs["ca"]))
        self.assertTrue(session.enabled)
        self.assertIsNone(agent_session(SimpleNamespace()))
