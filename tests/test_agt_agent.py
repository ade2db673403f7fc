"""The netplugin agent end to end: real Redis, real netmaster, real OVS, real namespaces.

The in-process tests run the agent's service on the test's reactor, with the
host ends of veths in the namespace of a private OVS (``host_netns``), and talk
to it over its UNIX socket like a driver does.  The last test runs
``twistd -n netplugin`` as a subprocess inside that namespace, like the lab.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from contiv_sdn.testing import RedisServer, require_binary, require_root
from tests.test_agt_ovsdb import start_ovs
from tests.test_agt_plumbing import Netns

SUBNET, GATEWAY, PLEN = "10.36.1.0/24", "10.36.1.254", 24

TCP_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(1)
s.settimeout(30)
c, _ = s.accept()
c.sendall(c.recv(100).upper())
c.close()
"""

TCP_CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 20
while True:
    try:
        c = socket.create_connection((sys.argv[1], 8080), timeout=3)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
c.settimeout(5)
c.sendall(b"hello")
print(c.recv(100).decode())
"""
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if isinstance(value, defer.Deferred):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.05)


def start_netmaster(test: unittest.TestCase, redis: RedisServer, port: int = 0,
                    network: bool = True) -> Any:
    """A real netmaster (kernel-chosen port unless given), with network ``default:agtnet``."""
    from contiv_sdn.testing.netmaster import NetmasterProcess
    nm = NetmasterProcess(redis_url=redis.url, port=port or None)
    test.addCleanup(nm.stop)
    nm.start()
    if network:
        create_network(nm.url)
    return nm


def create_network(url: str) -> None:
    http_json(url, "POST", "/api/v1/networks/default:agtnet/", {
        "key": "default:agtnet", "tenantName": "default", "networkName": "agtnet",
        "encap": "vxlan", "subnet": SUBNET, "gateway": GATEWAY})


def http_json(base: str, method: str, path: str, body: Any = None) -> Any:
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else None


class AgentFixture:
    """Redis + netmaster + private OVS in a host namespace + the agent service in-process."""

    def __init__(self, test: unittest.TestCase):
        require_root()
        require_binary("redis-server", "ip")
        self.test = test
        self.redis = RedisServer().start()
        test.addCleanup(self.redis.stop)
        self.ovs, self.netns = start_ovs(test, "h")
        self.host_netns = f"/var/run/netns/{self.netns}"
        self.nm = start_netmaster(test, self.redis)
        self.netmaster = self.nm.url
        self.dir = tempfile.mkdtemp(prefix="agt-agent-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.socket = os.path.join(self.dir, "run", "netplugin.sock")
        self.host = f"agt-host-{secrets.token_hex(2)}"
        self.service = None

    def options(self) -> Dict[str, Any]:
        return {"host": self.host, "vtep-ip": "192.0.2.201", "netmaster": self.netmaster,
                "controllers": ["tcp:127.0.0.1:1"], "redis": self.redis.url,
                "ovs-db": "unix:" + self.ovs.db_sock, "datapath-type": "netdev",
                "bridge": "br-int", "uplink": None, "underlay-mtu": 1500,
                "socket": self.socket, "state-dir": os.path.join(self.dir, "state"),
                "refresh": 30.0, "reconcile-interval": 0}

    async def start(self) -> Any:
        from contiv_sdn.agent.client import AgentClient
        from drivers.netplugin import make_service  # the agent, plus drivers its options ask for
        self.service = make_service(self.options(), host_netns=self.host_netns)
        self.service.startService()
        self.test.addCleanup(self.stop)
        await wait_for("agent ready", lambda: self.service.ready)
        self.client = AgentClient(self.socket)
        return self.service

    async def stop(self) -> None:
        if self.service is not None and self.service.running:
            await self.service.stopService()

    def host_links(self) -> set:
        out = subprocess.run(["ip", "-n", self.netns, "-j", "link", "show"], check=True,
                             capture_output=True, text=True).stdout
        return {l["ifname"] for l in json.loads(out)}

    def ports(self) -> list:
        return self.ovs.vsctl("list-ports", "br-int").split()


class EndpointTests(unittest.TestCase):
    timeout = 120

    async def _setup(self) -> None:
        self.fx = AgentFixture(self)
        await self.fx.start()

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    def create(self, ctr: Netns, ep_id: str, **kw: Any) -> defer.Deferred:
        return defer.ensureDeferred(self.fx.client.create_endpoint(
            ep_id, ctr.path, "agtnet", name=kw.pop("name", "web"), **kw))

    @defer.inlineCallbacks
    def test_create_list_delete(self):
        from contiv_sdn.agent.endpoints import port_name
        from contiv_sdn.agent.plumbing import tx_checksum_in
        ctr = Netns(self, "c")
        ep_id = secrets.token_hex(32)
        rec = yield self.create(ctr, ep_id, container_id="c0ffee")
        port = port_name(ep_id)
        self.assertEqual(port, "cv" + ep_id[:12])
        self.assertEqual(rec["id"], ep_id)
        self.assertEqual(rec["intfName"], port)
        self.assertEqual(rec["network"], "default:agtnet")
        self.assertEqual((rec["ifname"], rec["mtu"], rec["prefixLen"], rec["gateway"]),
                         ("eth0", 1450, PLEN, GATEWAY))
        self.assertEqual(rec["homingHost"], self.fx.host)
        ip, mac = rec["ipAddress"], rec["macAddress"]

        # the container side
        eth0 = ctr.links()["eth0"]
        self.assertEqual((eth0["address"], eth0["mtu"]), (mac, 1450))
        self.assertIn("UP", eth0["flags"])
        self.assertEqual(ctr.addrs("eth0"), [(ip, PLEN)])
        self.assertEqual([(r["gateway"], r["dev"]) for r in ctr.routes() if r["dst"] == "default"],
                         [(GATEWAY, "eth0")])
        self.assertFalse(tx_checksum_in(ctr.path, "eth0"))
        self.assertFalse(tx_checksum_in(self.fx.host_netns, port))

        # the OVS port, named by the endpoint, live in the switch
        self.assertIn(port, self.fx.ports())
        get = lambda col: self.fx.ovs.vsctl("get", "port", port, col).strip().strip('"')
        self.assertEqual(get("external_ids:endpoint-id"), ep_id)
        self.assertEqual(get("external_ids:contiv-network"), "default:agtnet")
        self.assertGreater(int(self.fx.ovs.vsctl("get", "interface", port, "ofport")), 0)

        listed = yield defer.ensureDeferred(self.fx.client.endpoints())
        self.assertEqual([(e["id"], e["ipAddress"]) for e in listed], [(ep_id, ip)])

        # create again with the same id and namespace: the same endpoint, nothing new
        again = yield self.create(ctr, ep_id, container_id="c0ffee")
        self.assertEqual((again["ipAddress"], again["intfName"]), (ip, port))

        answer = yield defer.ensureDeferred(self.fx.client.delete_endpoint(ep_id))
        self.assertEqual(answer, {"id": ep_id, "deleted": True})
        self.assertNotIn(port, self.fx.ports())
        self.assertNotIn(port, self.fx.host_links())
        self.assertNotIn("eth0", ctr.links())
        answer = yield defer.ensureDeferred(self.fx.client.delete_endpoint(ep_id))
        self.assertEqual(answer, {"id": ep_id, "deleted": False})

        # the address went back to the netmaster: another endpoint may ask for exactly it
        other = yield self.create(Netns(self, "c"), secrets.token_hex(32), ip=ip)
        self.assertEqual(other["ipAddress"], ip)

    @defer.inlineCallbacks
    def test_tcp_between_two_endpoints_through_the_userspace_datapath(self):
        """Concurrent creates, then real TCP across br-int (ping alone would hide offload bugs)."""
        a, b = Netns(self, "c"), Netns(self, "c")
        rec_a, rec_b = yield defer.gatherResults([
            self.create(a, secrets.token_hex(32), name="srv"),
            self.create(b, secrets.token_hex(32), name="cli")], consumeErrors=True)
        self.assertNotEqual(rec_a["ipAddress"], rec_b["ipAddress"])
        # no controller answers here (fail_mode=secure): a plain L2 flow stands in for it
        self.fx.ovs.ofctl("add-flow", "br-int", "priority=1,actions=NORMAL")
        server = subprocess.Popen(
            ["ip", "netns", "exec", a.name, sys.executable, "-c", TCP_SERVER],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        result = yield threads.deferToThread(
            subprocess.run, ["ip", "netns", "exec", b.name, sys.executable, "-c", TCP_CLIENT,
                             rec_a["ipAddress"]], capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "HELLO"),
                         result.stderr)

    @defer.inlineCallbacks
    def test_failure_midway_leaves_nothing(self):
        from contiv_sdn.agent.client import AgentAPIError
        ctr = Netns(self, "c")
        ctr.run("link", "add", "eth0", "type", "veth", "peer", "name", "other0")
        wanted = "10.36.1.77"
        ports, links = self.fx.ports(), self.fx.host_links()
        # allocation done, then the veth cannot be made: eth0 is taken in the container
        with self.assertRaises(AgentAPIError) as ctx:
            yield self.create(ctr, secrets.token_hex(32), ip=wanted)
        self.assertEqual(ctx.exception.status, 409)
        self.assertIn("eth0", ctx.exception.error)
        self.assertEqual(self.fx.ports(), ports)
        self.assertEqual(self.fx.host_links(), links)
        self.assertIn("other0", ctr.links())

        # a namespace that does not exist: refused before anything is allocated
        with self.assertRaises(AgentAPIError) as ctx:
            yield defer.ensureDeferred(self.fx.client.create_endpoint(
                secrets.token_hex(32), f"/var/run/netns/agt-none-{secrets.token_hex(3)}",
                "agtnet", ip=wanted))
        self.assertEqual(ctx.exception.status, 400)
        self.assertIn("does not exist", ctx.exception.error)
        self.assertEqual(self.fx.ports(), ports)

        # neither attempt kept the address
        rec = yield self.create(Netns(self, "c"), secrets.token_hex(32), ip=wanted)
        self.assertEqual(rec["ipAddress"], wanted)

    @defer.inlineCallbacks
    def test_netmaster_down_delete_finishes_later_and_create_leaves_nothing(self):
        from contiv_sdn.agent.client import AgentAPIError
        ctr = Netns(self, "c")
        ep_id = secrets.token_hex(32)
        rec = yield self.create(ctr, ep_id)
        self.fx.nm.stop()

        with self.assertRaises(AgentAPIError) as ctx:
            yield defer.ensureDeferred(self.fx.client.delete_endpoint(ep_id))
        self.assertEqual(ctx.exception.status, 503)
        self.assertIn("not reachable", ctx.exception.error)
        # the host side is already gone; the release is remembered
        self.assertNotIn(rec["intfName"], self.fx.ports())
        self.assertNotIn(rec["intfName"], self.fx.host_links())
        self.assertEqual([t["id"] for t in self.fx.service.endpoints.pending_deletes()], [ep_id])

        with self.assertRaises(AgentAPIError) as ctx:
            yield self.create(Netns(self, "c"), secrets.token_hex(32))
        self.assertEqual(ctx.exception.status, 503)
        self.assertEqual(self.fx.ports(), ["vxlan0"])

        # the netmaster comes back (same Redis, same URL): the reconcile releases the address
        start_netmaster(self, self.fx.redis, port=self.fx.nm.port, network=False)
        result = yield defer.ensureDeferred(self.fx.client.request("POST", "/v1/reconcile"))
        self.assertEqual(result, {"reaped": [], "released": [ep_id]})
        self.assertEqual(self.fx.service.endpoints.pending_deletes(), [])
        again = yield self.create(Netns(self, "c"), secrets.token_hex(32), ip=rec["ipAddress"])
        self.assertEqual(again["ipAddress"], rec["ipAddress"])
        answer = yield defer.ensureDeferred(self.fx.client.delete_endpoint(ep_id))
        self.assertEqual(answer["deleted"], False)

    @defer.inlineCallbacks
    def test_netmaster_errors_are_surfaced(self):
        from contiv_sdn.agent.client import AgentAPIError
        ctr = Netns(self, "c")
        with self.assertRaises(AgentAPIError) as ctx:
            yield defer.ensureDeferred(self.fx.client.create_endpoint(
                secrets.token_hex(32), ctr.path, "agt-no-such-net"))
        self.assertGreaterEqual(ctx.exception.status, 400)
        self.assertIn("netmaster", ctx.exception.error)
        self.assertIn("not found", ctx.exception.error.lower())
        with self.assertRaises(AgentAPIError) as ctx:
            yield defer.ensureDeferred(self.fx.client.request("POST", "/v1/endpoints",
                                                              {"id": "x"}))
        self.assertEqual(ctx.exception.status, 400)
        self.assertIn("netns", ctx.exception.error)
        self.assertEqual(self.fx.ports(), ["vxlan0"])

    @defer.inlineCallbacks
    def test_restart_keeps_live_endpoints_and_reaps_dead_ones(self):
        live, dead = Netns(self, "c"), Netns(self, "c")
        live_id, dead_id = secrets.token_hex(32), secrets.token_hex(32)
        live_rec = yield self.create(live, live_id)
        dead_rec = yield self.create(dead, dead_id, name="db")
        self.fx.ovs.ofctl("add-flow", "br-int", "table=0,priority=11,ip,actions=drop")

        yield defer.ensureDeferred(self.fx.stop())
        # while the agent is down, one container goes away (its veth goes with it)
        subprocess.run(["ip", "netns", "del", dead.name], check=True)
        yield defer.ensureDeferred(self.fx.start())
        yield wait_for("reconcile to reap the dead endpoint",
                       lambda: dead_rec["intfName"] not in self.fx.ports(), timeout=20)

        listed = yield defer.ensureDeferred(self.fx.client.endpoints())
        self.assertEqual([e["id"] for e in listed], [live_id])
        self.assertEqual(listed[0]["ipAddress"], live_rec["ipAddress"])
        self.assertIn(live_rec["intfName"], self.fx.ports())
        self.assertEqual(live.addrs("eth0"), [(live_rec["ipAddress"], PLEN)])
        self.assertIn("priority=11,ip actions=drop", self.fx.ovs.dump_flows("br-int"))
        # the dead endpoint's address was released
        again = yield self.create(Netns(self, "c"), secrets.token_hex(32),
                                  ip=dead_rec["ipAddress"])
        self.assertEqual(again["ipAddress"], dead_rec["ipAddress"])

    @defer.inlineCallbacks
    def test_host_registered_through_the_netmaster(self):
        from contiv_sdn.agent.registration import host_dpid
        from contiv_sdn.store import Store
        store = yield defer.ensureDeferred(Store.connect(self.fx.redis.url))
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        rec = yield defer.ensureDeferred(store.get("host", self.fx.host))
        self.assertEqual({k: rec[k] for k in ("name", "vtepIP", "dpid", "bridge", "tunnelPort",
                                              "uplinkPort", "mtu")},
                         {"name": self.fx.host, "vtepIP": "192.0.2.201",
                          "dpid": host_dpid(self.fx.host), "bridge": "br-int",
                          "tunnelPort": "vxlan0", "uplinkPort": None, "mtu": 1500})
        self.assertLessEqual(abs(rec["updated"] - time.time()), 60)
        dpid = self.fx.ovs.vsctl("get", "bridge", "br-int", "datapath_id").strip().strip('"')
        self.assertEqual(int(dpid, 16), rec["dpid"])
        status = yield defer.ensureDeferred(self.fx.client.status())
        self.assertEqual((status["host"], status["dpid"], status["ready"]),
                         (self.fx.host, rec["dpid"], True))


class NetmasterClientTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_kept_alive_connection_survives_a_netmaster_restart(self):
        from contiv_sdn.agent.netmaster import NetmasterClient
        require_binary("redis-server")
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        nm = start_netmaster(self, redis)
        client = NetmasterClient(nm.url)
        self.addCleanup(client.close)
        net = yield defer.ensureDeferred(client.network("default", "agtnet"))
        self.assertEqual((net["subnet"], net["gateway"]), (SUBNET, GATEWAY))
        kept = [c for conns in client._pool._connections.values() for c in conns]
        self.assertEqual(len(kept), 1)  # the connection stays open for the next call

        # a retried create (the reply was lost) gets the same endpoint, not a second address
        ep_id = secrets.token_hex(32)

        def create() -> defer.Deferred:
            return defer.ensureDeferred(client.create_endpoint(
                "default", "agtnet", "", ep_id, "web", "c0ffee", "agt-host", "", "cvagt"))
        first = yield create()
        again = yield create()
        self.assertEqual(again["ipAddress"], first["ipAddress"])

        nm.stop(remove=False)
        nm.start()
        net = yield defer.ensureDeferred(client.network("default", "agtnet"))
        self.assertEqual(net["subnet"], SUBNET)
        yield defer.ensureDeferred(client.delete_endpoint("default", "agtnet", "", ep_id,
                                                          first["ipAddress"]))
        nm.stop()
        with self.assertRaises(Exception) as ctx:
            yield defer.ensureDeferred(client.network("default", "agtnet"))
        from contiv_sdn.agent.netmaster import NetmasterUnavailable
        self.assertIsInstance(ctx.exception, NetmasterUnavailable)


class TwistdTests(unittest.TestCase):
    """``twistd -n netplugin`` as the lab runs it: inside the host's namespace."""

    timeout = 90

    @defer.inlineCallbacks
    def test_starts_and_serves_without_a_netmaster_and_stops_on_sigterm(self):
        """Restart safety: with its netmaster unreachable netplugin still builds br-int,
        answers its API and keeps trying to register (one warning, not one per try).
        Given only a read-only Redis (a replica: Redis itself refuses and counts any
        write), its Docker driver follows the replica's change feed and writes nothing.
        (Registering through a reachable netmaster: tests/test_hosts_api.py.)"""
        require_root()
        require_binary("redis-server", "nsenter")
        from contiv_sdn.agent.client import AgentClient
        from contiv_sdn.agent.registration import host_dpid
        from tests.test_hosts_api import read_only_replica, readonly_errors, redis_cli
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        replica = read_only_replica(self, redis)
        ovs, netns = start_ovs(self, "t")
        d = tempfile.mkdtemp(prefix="agt-twistd-")
        self.addCleanup(shutil.rmtree, d, True)
        sock = os.path.join(d, "run", "netplugin.sock")
        log_path = os.path.join(d, "netplugin.log")
        host = f"agt-twistd-{secrets.token_hex(2)}"
        argv = ["nsenter", f"--net=/var/run/netns/{netns}", os.path.join(VENV_BIN, "twistd"),
                "-n", "--pidfile=", f"--logfile={log_path}", "netplugin", "--host", host,
                "--vtep-ip", "192.0.2.202", "--redis", replica.url,
                "--ovs-db", "unix:" + ovs.db_sock, "--datapath-type", "netdev",
                "--controller", "tcp:127.0.0.1:1", "--controller", "tcp:127.0.0.2:1",
                "--netmaster", "http://127.0.0.1:1", "--socket", sock,
                "--docker-plugin", os.path.join(d, "plugins", "netplugin.sock"),
                "--docker", "unix://" + os.path.join(d, "no-dockerd.sock"),
                "--state-dir", os.path.join(d, "state")]
        proc = subprocess.Popen(argv, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def kill():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self.addCleanup(kill)

        client = AgentClient(sock, timeout=5)

        async def ready() -> bool:
            if proc.poll() is not None or not os.path.exists(sock):
                return False
            try:
                return (await client.status())["bridgeReady"] is True
            except Exception:
                return False

        try:
            yield defer.ensureDeferred(wait_for("twistd netplugin serving",
                                                lambda: defer.ensureDeferred(ready())))
        except AssertionError:
            with open(log_path) as f:
                self.fail(f"netplugin never made br-int (exit {proc.poll()}):\n{f.read()}")
        self.assertEqual(os.stat(sock).st_mode & 0o777, 0o600)
        status = yield defer.ensureDeferred(client.status())
        self.assertEqual(status["host"], host)
        self.assertEqual(status["dpid"], host_dpid(host))
        self.assertEqual((status["registered"], status["ready"]), (False, False))

        # the Docker driver reads the replica: its change-feed subscription is there
        yield defer.ensureDeferred(wait_for("netplugin's subscription on the replica", lambda:
                                            threads.deferToThread(
                                                lambda: " sub=1 " in redis_cli(
                                                    replica.socket, "CLIENT", "LIST"))))
        self.assertEqual((yield threads.deferToThread(readonly_errors, replica.socket)), 0)

        def warned() -> bool:
            with open(log_path) as f:
                return "host not registered: netmaster at http://127.0.0.1:1" in f.read()
        yield defer.ensureDeferred(wait_for("the registration warning", warned))
        status = yield defer.ensureDeferred(client.status())  # still serving
        self.assertEqual((status["bridgeReady"], status["registered"]), (True, False))
        self.assertEqual(sorted(ovs.vsctl("get-controller", "br-int").split()),
                         ["tcp:127.0.0.1:1", "tcp:127.0.0.2:1"])

        proc.send_signal(signal.SIGTERM)
        yield defer.ensureDeferred(wait_for("netplugin to exit", lambda: proc.poll() is not None))
        with open(log_path) as f:
            log = f.read()
        # twistd re-raises the signal it stopped on, so its exit status says "terminated by TERM"
        self.assertIn(proc.returncode, (0, -signal.SIGTERM), log)
        self.assertIn("netplugin stopped", log)
        self.assertNotIn("Traceback", log)
        self.assertEqual(log.count("host not registered: netmaster at http://127.0.0.1:1 is "
                                   "not reachable"), 1, log)
        self.assertFalse(os.path.exists(sock))
        self.assertEqual(readonly_errors(replica.socket), 0)  # not at stop either
