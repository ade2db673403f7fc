"""Agents authenticate to the netmaster, and a host manages only itself (issue 13, items 2, 5).

On real processes: an HTTPS netmaster with ``--auth`` (the test CA of
:mod:`tests.test_sec_api`), node users made by an admin, and the agent's own
netmaster client (:class:`contiv_sdn.agent.netmaster.NetmasterClient` with a
:class:`~contiv_sdn.agent.netmaster.NetmasterSession`) on the test's reactor —
the code netplugin runs.  Proved here: a node logs in with Contiv's protocol
over verified TLS and registers and attaches; a node's credential cannot
register another host or create, update or delete another host's endpoint
(403, nothing changed); an expired or revoked token costs one re-login; a
wrong password is a clear error, at start (the options refuse it) and at run
time (once, then a back-off: no hot loop of logins); ops and admin keep their
rights.  With root and OVS, a whole netplugin attaches over TLS with its node
credential, and the agent's one create/delete path refuses another host's
endpoints even against a netmaster without ``--auth``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from typing import Any, Dict

from twisted.internet import defer
from twisted.python import usage
from twisted.trial import unittest

from contiv_sdn.agent.netmaster import (NetmasterClient, NetmasterError, NetmasterLoginFailed,
                                        NetmasterSession, check_credentials)
from contiv_sdn.agent.registration import host_dpid, host_record
from contiv_sdn.testing import require_binary
from tests.test_agt_agent import GATEWAY, SUBNET, sleep, wait_for
from tests.test_sec_api import ADMIN_PASSWORD, Client, SecureNetmaster, make_certs

NODE_PASSWORD = "node-pass-123"
NETWORK = {"key": "default:secnet", "tenantName": "default", "networkName": "secnet",
           "encap": "vxlan", "subnet": SUBNET, "gateway": GATEWAY}


def record(name: str, vtep: str) -> Dict[str, Any]:
    return dict(host_record(name, vtep, host_dpid(name), "br-int", None, 1500), refresh=30.0)


class SecureSetup:
    """An HTTPS --auth netmaster, the network ``default:secnet``, node users."""

    extra_args: tuple = ()

    def start_secure(self, **kw: Any) -> None:
        require_binary("redis-server", "redis-cli")
        self.dir = tempfile.mkdtemp(prefix="contiv-secagt-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.certs = make_certs(self.dir)
        self.nm = SecureNetmaster(self.certs, extra_args=self.extra_args, **kw)
        self.addCleanup(self.nm.stop)
        self.nm.start()
        self.admin = Client(self.nm.port, ca=self.certs["ca"])
        status, body = self.admin.login("admin", ADMIN_PASSWORD)
        assert status == 200, body
        self.call_ok("POST", "/api/v1/networks/default:secnet/", NETWORK)

    def call_ok(self, method: str, path: str, body: Any = None) -> Any:
        status, text, _ = self.admin.call(method, path, body)
        if status != 200:
            raise AssertionError(f"{method} {path}: {status} {text!r}")
        return json.loads(text) if text.strip() else None

    def add_node(self, name: str, password: str = NODE_PASSWORD) -> str:
        """The node user ``name`` (as `netctl user add NAME --role node` does); its
        password file."""
        self.call_ok("POST", "/api/v1/auth_proxy/local_users/",
                      {"username": name, "password": password, "role": "node"})
        return self.password_file(name, password)

    def password_file(self, name: str, password: str) -> str:
        path = os.path.join(self.dir, f"{name}.password")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return path

    def client(self, user: str, password_file: str) -> NetmasterClient:
        c = NetmasterClient(self.nm.url, timeout=15, session=NetmasterSession(
            user=user, password_file=password_file, ca=self.certs["ca"]))
        self.addCleanup(c.close)
        return c

    def endpoint(self, ep_id: str) -> Any:
        status, text, _ = self.admin.call("GET", f"/api/v1/inspect/endpoints/{ep_id}/")
        return json.loads(text) if status == 200 else None


async def create(c: NetmasterClient, ep_id: str, host: str, vtep: str = "") -> Dict[str, Any]:
    return await c.create_endpoint("default", "secnet", "", ep_id, "web", ep_id[:12], host,
                                   "", "cv" + ep_id[:12], vtep_ip=vtep)


class NodeCredentialTests(SecureSetup, unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.start_secure()

    async def assert_refused(self, d: Any, status: int, *texts: str) -> NetmasterError:
        try:
            await d
        except NetmasterError as e:
            self.assertEqual(e.status, status, str(e))
            for t in texts:
                self.assertIn(t, str(e))
            return e
        raise AssertionError(f"not refused (expected {status})")

    def test_node_logs_in_over_tls_registers_and_attaches(self):
        """Contiv's login over verified TLS, X-Auth-Token on every call: register the
        host, read the network, create, update and delete an endpoint on it."""
        async def go() -> None:
            c = self.client("sec-node1", self.add_node("sec-node1"))
            stored = await c.register_host(record("sec-node1", "192.0.2.11"))
            self.assertEqual((stored["name"], stored["vtepIP"]), ("sec-node1", "192.0.2.11"))
            self.assertTrue(c.session.token)
            net = await c.network("default", "secnet")
            self.assertEqual(net["subnet"], SUBNET)
            ep_id = secrets.token_hex(32)
            cfg = await create(c, ep_id, "sec-node1")
            self.assertEqual((cfg["homingHost"], cfg["vtepIP"]), ("sec-node1", "192.0.2.11"))
            await c.request("POST", "/plugin/updateEndpoint", "update", {
                "EndpointID": ep_id, "Event": "start", "EPCommonName": "web1",
                "IPAddress": cfg["ipAddress"]})
            await c.delete_endpoint("default", "secnet", "", ep_id)
            self.assertIsNone(self.endpoint(ep_id))
        return defer.ensureDeferred(go())

    def test_unauthenticated_plugin_call_is_401(self):
        anon = Client(self.nm.port, ca=self.certs["ca"])
        for path, body in (("/plugin/registerHost", record("sec-anon", "192.0.2.99")),
                           ("/plugin/createEndpoint", {"TenantName": "default"})):
            status, text, _ = anon.call("POST", path, body, token=None)
            self.assertEqual(status, 401, text)
            self.assertIn(b"X-Auth-Token", text)

    def test_a_node_cannot_act_for_another_host(self):
        """node1's credential: registering node2, creating on node2, creating with
        node2's vtep, taking over, updating or deleting node2's endpoint — all 403,
        saying what a node may do, and node2's endpoint is untouched."""
        async def go() -> None:
            n1 = self.client("sec-n1", self.add_node("sec-n1"))
            n2 = self.client("sec-n2", self.add_node("sec-n2"))
            await n1.register_host(record("sec-n1", "192.0.2.21"))
            await n2.register_host(record("sec-n2", "192.0.2.22"))
            theirs = secrets.token_hex(32)
            await create(n2, theirs, "sec-n2")
            before = self.endpoint(theirs)
            self.assertIsNotNone(before)
            may = "may only register host sec-n1"
            await self.assert_refused(n1.register_host(record("sec-n2", "192.0.2.22")), 403,
                                      "may not register host \"sec-n2\"", may)
            await self.assert_refused(create(n1, secrets.token_hex(32), "sec-n2"), 403,
                                      "create an endpoint on host \"sec-n2\"", may)
            await self.assert_refused(create(n1, theirs, "sec-n1"), 403,
                                      "of host \"sec-n2\"", may)
            await self.assert_refused(create(n1, secrets.token_hex(32), "sec-n1",
                                             vtep="192.0.2.22"), 403, "registered 192.0.2.21")
            await self.assert_refused(n1.delete_endpoint("default", "secnet", "", theirs), 403,
                                      f"delete endpoint \"{theirs}\" of host \"sec-n2\"", may)
            await self.assert_refused(n1.request("POST", "/plugin/updateEndpoint", "update", {
                "EndpointID": theirs, "Event": "start", "EPCommonName": "stolen",
                "Labels": {"x": "y"}}), 403, "update endpoint")
            # node2's endpoint is as it was
            self.assertEqual(self.endpoint(theirs), before)
            # beyond the plugin calls and its reads, a node may nothing
            for method, path, body in (("POST", "/api/v1/tenants/sec-t/", {"tenantName": "sec-t"}),
                                       ("GET", "/api/v1/tenants/", None),
                                       ("GET", "/api/v1/auth_proxy/local_users/", None),
                                       ("DELETE", f"/debug/epcleanup/tenant/default/ep/{theirs}",
                                        None)):
                await self.assert_refused(n1.request(method, path, "x", body), 403,
                                          "role node", "a node may only register host sec-n1")
            self.assertIsNotNone(self.endpoint(theirs))
            # its own host it may still manage
            mine = secrets.token_hex(32)
            await create(n1, mine, "sec-n1")
            await n1.delete_endpoint("default", "secnet", "", mine)
        return defer.ensureDeferred(go())

    def test_revoked_token_costs_one_relogin(self):
        """A password change revokes the node's token: the next call is answered 401,
        the client logs in again with the password file as it is now, and repeats."""
        async def go() -> None:
            path = self.add_node("sec-rot")
            c = self.client("sec-rot", path)
            await c.register_host(record("sec-rot", "192.0.2.31"))
            first = c.session.token
            self.call_ok("PATCH", "/api/v1/auth_proxy/local_users/sec-rot/",
                         {"password": "rotated-pass-456"})
            self.password_file("sec-rot", "rotated-pass-456")
            stored = await c.register_host(record("sec-rot", "192.0.2.31"))
            self.assertEqual(stored["name"], "sec-rot")
            self.assertNotEqual(c.session.token, first)
        return defer.ensureDeferred(go())

    def test_wrong_password_is_a_clear_error_with_back_off(self):
        async def go() -> None:
            self.add_node("sec-bad")
            wrong = self.password_file("sec-bad-wrong", "not-the-password")
            c = self.client("sec-bad", wrong)
            for _ in range(3):
                e = await self.assert_refused(c.register_host(record("sec-bad", "192.0.2.41")),
                                              401, "bad username or password", wrong,
                                              "netctl user add sec-bad --role node")
                self.assertIsInstance(e, NetmasterLoginFailed)
            # three failed calls, one login: the others waited out the back-off
            self.assertEqual(self.nm.log_text().count("login refused for user sec-bad"), 1)
            # at start: the options check refuses to run, naming the file and the fix
            with self.assertRaises(ValueError) as cm:
                check_credentials(self.nm.url, "sec-bad", wrong, self.certs["ca"])
            self.assertIn(wrong, str(cm.exception))
            self.assertIn("netctl user add sec-bad --role node", str(cm.exception))
            from contiv_sdn.agent.options import Options
            with self.assertRaises(usage.UsageError) as cm2:
                Options().parseOptions(["--host", "sec-bad", "--vtep-ip", "192.0.2.41",
                                        "--netmaster", self.nm.url, "--netmaster-ca",
                                        self.certs["ca"], "--netmaster-password-file", wrong])
            self.assertIn(wrong, str(cm2.exception))
            # the right one passes, and so does an unreachable netmaster (retried later)
            good = self.password_file("sec-bad", NODE_PASSWORD)
            check_credentials(self.nm.url, "sec-bad", good, self.certs["ca"])
            check_credentials("https://127.0.0.1:1", "sec-bad", good, self.certs["ca"])
            # a missing file, and an https netmaster without its CA
            with self.assertRaises(ValueError) as cm:
                check_credentials(self.nm.url, "sec-bad", good + ".missing", None)
            self.assertIn("cannot read the netmaster password file", str(cm.exception))
            with self.assertRaises(ValueError) as cm:
                check_credentials(self.nm.url, "sec-bad", good, None)
            self.assertIn("--netmaster-ca", str(cm.exception))
        return defer.ensureDeferred(go())

    def test_ops_and_admin_rights_still_hold(self):
        """ops may not make plugin calls; admin may register any host."""
        async def go() -> None:
            self.call_ok("POST", "/api/v1/auth_proxy/local_users/",
                         {"username": "sec-ops", "password": "ops-pass-123", "role": "ops"})
            ops = self.client("sec-ops", self.password_file("sec-ops", "ops-pass-123"))
            await self.assert_refused(ops.register_host(record("sec-x", "192.0.2.51")), 403,
                                      "role ops", "ask an admin")
            net = await ops.network("default", "secnet")  # reads stay open to ops
            self.assertEqual(net["networkName"], "secnet")
            adm = self.client("admin", self.password_file("admin", ADMIN_PASSWORD))
            stored = await adm.register_host(record("sec-any", "192.0.2.52"))
            self.assertEqual(stored["name"], "sec-any")
        return defer.ensureDeferred(go())


class TokenExpiryTests(SecureSetup, unittest.TestCase):
    """1-second tokens: the agent's client logs in again when its token expired."""

    timeout = 120
    extra_args = ("--token-ttl", "1")

    def setUp(self):
        self.start_secure()

    def test_expired_token_relogin(self):
        async def go() -> None:
            c = self.client("sec-exp", self.add_node("sec-exp"))
            await c.register_host(record("sec-exp", "192.0.2.61"))
            first = c.session.token
            probe = Client(self.nm.port, ca=self.certs["ca"])
            await wait_for("the node's token to expire",
                           lambda: probe.call("GET", "/version", token=first)[0] == 401)
            stored = await c.register_host(record("sec-exp", "192.0.2.61"))
            self.assertEqual(stored["name"], "sec-exp")
            self.assertNotEqual(c.session.token, first)
        return defer.ensureDeferred(go())


class SecureAgentTests(SecureSetup, unittest.TestCase):
    """A whole netplugin (real OVS, netns) whose netmaster serves HTTPS with --auth."""

    timeout = 180

    async def _setup(self) -> None:
        from contiv_sdn.testing import RedisServer, require_root
        from tests.test_agt_agent import AgentFixture
        require_root()
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        self.start_secure(redis_url=redis.url)
        fx = AgentFixture.__new__(AgentFixture)  # its parts, with this netmaster
        fx.test, fx.redis, fx.nm, fx.netmaster = self, redis, self.nm, self.nm.url
        from tests.test_agt_ovsdb import start_ovs
        fx.ovs, fx.netns = start_ovs(self, "s")
        fx.host_netns = f"/var/run/netns/{fx.netns}"
        fx.dir = tempfile.mkdtemp(prefix="sec-agent-")
        self.addCleanup(shutil.rmtree, fx.dir, True)
        fx.socket = os.path.join(fx.dir, "run", "netplugin.sock")
        fx.host = f"sec-host-{secrets.token_hex(2)}"
        fx.service = None
        self.fx = fx
        self.node_password = self.add_node(fx.host)
        base = fx.options

        def options() -> Dict[str, Any]:
            return dict(base(), **{"netmaster-user": fx.host,
                                   "netmaster-password-file": self.node_password,
                                   "netmaster-ca": self.certs["ca"]})
        fx.options = options
        await fx.start()

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    def test_agent_attaches_over_tls_with_its_node_credential(self):
        async def go() -> None:
            from tests.test_agt_plumbing import Netns
            ctr = Netns(self, "c")
            ep_id = secrets.token_hex(32)
            rec = await self.fx.client.create_endpoint(ep_id, ctr.path, "secnet", name="web")
            self.assertEqual(rec["homingHost"], self.fx.host)
            self.assertEqual(ctr.addrs("eth0"), [(rec["ipAddress"], 24)])
            self.assertEqual(self.endpoint(ep_id)["Oper"]["homingHost"], self.fx.host)
            await self.fx.client.delete_endpoint(ep_id)
            self.assertIsNone(self.endpoint(ep_id))
        return defer.ensureDeferred(go())


class ForeignEndpointTests(unittest.TestCase):
    """The agent's one create/delete path refuses another host's endpoint, even when
    the netmaster (no --auth here) would not."""

    timeout = 120

    async def _setup(self) -> None:
        from tests.test_agt_agent import AgentFixture
        self.fx = AgentFixture(self)
        await self.fx.start()
        self.mgr = self.fx.service.endpoints
        self.other = NetmasterClient(self.fx.netmaster)
        self.addCleanup(self.other.close)

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    def test_create_with_another_hosts_endpoint_id_is_refused(self):
        async def go() -> None:
            from contiv_sdn.agent.endpoints import EndpointRequest, ForeignEndpoint
            from tests.test_agt_plumbing import Netns
            theirs = secrets.token_hex(32)
            cfg = await self.other.create_endpoint("default", "agtnet", "", theirs, "web",
                                                   theirs, "sec-other", "", "cvx")
            ctr = Netns(self, "c")
            with self.assertRaises(ForeignEndpoint) as cm:
                await self.mgr.create(EndpointRequest(id=theirs, netns=ctr.path,
                                                      network="agtnet"))
            self.assertIn("belongs to host sec-other", str(cm.exception))
            self.assertEqual(cm.exception.status, 403)
            # nothing plumbed here, nothing released there
            self.assertNotIn("cv" + theirs[:12], self.fx.ports())
            self.assertNotIn("cv" + theirs[:12], self.fx.host_links())
            again = await self.other.create_endpoint("default", "agtnet", "", theirs, "web",
                                                     theirs, "sec-other", "", "cvx")
            self.assertEqual(again["ipAddress"], cfg["ipAddress"])
            # through the local API (CNI's and the driver's way in) it is a 403 too
            try:
                await self.fx.client.create_endpoint(theirs, ctr.path, "agtnet")
            except Exception as e:
                self.assertIn("belongs to host sec-other", str(e))
            else:
                raise AssertionError("the local API created another host's endpoint")
        return defer.ensureDeferred(go())

    def test_delete_and_update_of_a_record_naming_another_host_are_refused(self):
        async def go() -> None:
            from contiv_sdn.agent.endpoints import (K_RECORD, EndpointRequest,
                                                    ForeignEndpoint)
            from tests.test_agt_plumbing import Netns
            ctr = Netns(self, "c")
            ep_id = secrets.token_hex(32)
            rec = await self.mgr.create(EndpointRequest(id=ep_id, netns=ctr.path,
                                                        network="agtnet"))
            # the local record now says another host (as one left by a renamed host)
            forged = dict(rec, homingHost="sec-other")
            forged.pop("ofport", None)
            await self.mgr.ovsdb.ensure_port(self.mgr.bridge, rec["intfName"],
                                             external_ids={K_RECORD: json.dumps(forged)},
                                             wait_applied=False)
            with self.assertRaises(ForeignEndpoint) as cm:
                await self.mgr.delete(ep_id)
            self.assertIn("may not delete it", str(cm.exception))
            with self.assertRaises(ForeignEndpoint):
                await self.mgr.update_record(dict(forged, containerName="x"))
            # the port and the netmaster's allocation are still there
            self.assertIn(rec["intfName"], self.fx.ports())
            again = await self.other.create_endpoint("default", "agtnet", "", ep_id, "web",
                                                     ep_id, self.fx.host, "", "cvx")
            self.assertEqual(again["ipAddress"], rec["ipAddress"])
            # put back as it was, it is deleted as usual
            await self.mgr.update_record(dict(forged, homingHost=self.fx.host))
            self.assertTrue(await self.mgr.delete(ep_id))
        return defer.ensureDeferred(go())
