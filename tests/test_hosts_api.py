"""Host registration through the netmaster (issue 7, point 2): hosts read Redis but
write it only through ``POST /plugin/registerHost``.

A real netmaster process on a real redis-server; the agent's ``HostRegistration``
and ``NetmasterClient`` in-process; a read-only Redis replica (``replica-read-only``,
Redis's default) as the one a host is given, so any write a host process tried
would be refused by Redis itself and counted in ``INFO errorstats``.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Dict, List, Tuple

from twisted.internet import defer, task, threads
from twisted.trial import unittest

from contiv_sdn.store import Store, Txn
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.wait import wait_for, wait_until
from tests.test_fnd_api import NetmasterCase
from tests.test_fnd_helpers import async_test

HOST = "hst-node1"


def body(**over: Any) -> Dict[str, Any]:
    """A valid ``RegisterHostRequest``, as the agent sends it, with ``over`` applied."""
    b = {"name": HOST, "vtepIP": "192.0.2.41", "dpid": 0xABCDEF012345, "bridge": "br-int",
         "tunnelPort": "vxlan0", "uplinkPort": "eth1", "mtu": 1500, "refresh": 30.0}
    b.update(over)
    return b


def redis_cli(sock: str, *args: str) -> str:
    """One command to a test's own redis-server (blocking: call from a thread or setUp)."""
    out = subprocess.run(["redis-cli", "-s", sock, *args], capture_output=True, text=True,
                         timeout=10, check=True)
    return out.stdout


def readonly_errors(sock: str) -> int:
    """How many commands this Redis refused as writes to a read-only replica."""
    for line in redis_cli(sock, "INFO", "errorstats").splitlines():
        if line.startswith("errorstat_READONLY:"):
            return int(line.split("count=")[1].split(",")[0])
    return 0


def read_only_replica(test: unittest.TestCase, primary: RedisServer) -> RedisServer:
    """A replica of ``primary`` (which gets a loopback TCP port for it): Redis refuses
    every write sent to it (``READONLY``) and counts the refusal, while reads, scripts
    that only read, ``TIME`` and the change feed (PUBLISH is replicated) work as on the
    primary.  The standing-in for a read-only Redis user: ``RedisURL`` carries no ACL
    user name yet (see the report of issue 7)."""
    require_binary("redis-cli")
    port = free_tcp_port()
    redis_cli(primary.socket, "CONFIG", "SET", "bind", "127.0.0.1")
    redis_cli(primary.socket, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
    redis_cli(primary.socket, "CONFIG", "SET", "port", str(port))
    replica = RedisServer(appendonly=False).start()
    test.addCleanup(replica.stop)
    redis_cli(replica.socket, "REPLICAOF", "127.0.0.1", str(port))
    wait_until(lambda: "master_link_status:up" in redis_cli(replica.socket, "INFO", "replication"),
               timeout=30, what="the replica to sync with its primary")
    assert readonly_errors(replica.socket) == 0
    return replica


class RegisterHostRouteTests(NetmasterCase):
    """The route against a real netmaster: decoding, validation, one transaction."""

    async def store(self) -> Store:
        store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        return store

    @async_test
    async def test_register_then_refresh_is_one_write_each(self):
        store = await self.store()
        rev0 = await store.revision()
        before = await store.server_time()
        first = await self.plugin("registerHost", body())
        stored = await store.get("host", HOST)
        # the fields the agent wrote itself before, plus the netmaster's stamp
        self.assertEqual(stored, dict(body(), updated=stored["updated"]))
        self.assertEqual(first, stored)
        self.assertLessEqual(before - 0.001, stored["updated"])  # Redis's clock, not ours
        self.assertEqual(await store.revision(), rev0 + 1)  # one transaction

        again = await self.plugin("registerHost", body())
        self.assertEqual({k: v for k, v in again.items() if k != "updated"},
                         {k: v for k, v in first.items() if k != "updated"})
        self.assertGreaterEqual(again["updated"], first["updated"])
        self.assertEqual(await store.get("host", HOST), again)
        self.assertEqual(await store.revision(), rev0 + 2)
        self.assertEqual(list(await store.list("host")), [HOST])
        info = await self.c.ok("GET", "/info")
        self.assertEqual(info["netplugin-nodes"], ["192.0.2.41"])

        # no uplink: stored as null, as the agent wrote it; an empty tunnelPort is vxlan0
        nouplink = await self.plugin("registerHost", body(uplinkPort="", tunnelPort=""))
        self.assertEqual((nouplink["uplinkPort"], nouplink["tunnelPort"]), (None, "vxlan0"))
        rec = await store.get("host", HOST)
        self.assertEqual((rec["uplinkPort"], rec["tunnelPort"]), (None, "vxlan0"))

    @async_test
    async def test_a_refresh_notifies_its_own_key_once_and_nothing_else(self):
        """What the controller sees of a refresh is what it saw of the agent's own
        write: one change of ``host/<name>``."""
        store = await self.store()
        await self.plugin("registerHost", body())
        seen: List[Tuple[str, str, str]] = []
        subscribed: defer.Deferred = defer.Deferred()
        store.subscribe(lambda kind, key, op, rev: seen.append((kind, key, op)),
                        lambda: None if subscribed.called else subscribed.callback(None))
        await subscribed
        await self.plugin("registerHost", body())
        await store.put_state("marker", "m", {})  # everything before it has arrived with it
        await wait_for(what="the marker", predicate=lambda: ("marker", "m", "set") in seen)
        self.assertEqual(seen, [("host", HOST, "set"), ("marker", "m", "set")])

    @async_test
    async def test_hostile_shapes_are_refused_before_any_write(self):
        store = await self.store()
        rev0 = await store.revision()
        cases = [
            (b"", "EOF"),
            (b"[]", "json: cannot unmarshal array into Go value of type RegisterHostRequest"),
            (b'{"name": 5}', "json: cannot unmarshal number into Go struct field "
                             "RegisterHostRequest.name of type string"),
            (b'{"name": {"a": 1}}', "json: cannot unmarshal object into Go struct field "
                                    "RegisterHostRequest.name of type string"),
            (b'{"dpid": NaN}', "invalid character 'N' looking for beginning of value"),
            (b'{"refresh": Infinity}', "invalid character 'I' looking for beginning of value"),
            (b'{"dpid": "12"}', "json: cannot unmarshal string into Go struct field "
                                "RegisterHostRequest.dpid of type uint64"),
            (b'{"dpid": -1}', "json: cannot unmarshal number -1 into Go struct field "
                              "RegisterHostRequest.dpid of type uint64"),
            (b'{"dpid": 1.5}', "json: cannot unmarshal number 1.5 into Go struct field "
                               "RegisterHostRequest.dpid of type uint64"),
            (b'{"dpid": 18446744073709551616}', "json: cannot unmarshal number "
                                                "18446744073709551616 into Go struct field "
                                                "RegisterHostRequest.dpid of type uint64"),
            (b'{"mtu": 1e3}', "json: cannot unmarshal number 1e3 into Go struct field "
                              "RegisterHostRequest.mtu of type int"),
            (b"[" * 20000, "exceeded max depth"),
        ]
        for raw, text in cases:
            got = await self.c.err("POST", "/plugin/registerHost", raw=raw)
            self.assertIn(text, got, raw[:40])
        semantic = [
            (body(name=""), 'host name "" is invalid'),
            (body(name="a b"), 'host name "a b" is invalid'),
            (body(name="h\n1"), 'host name "h\\n1" is invalid'),
            (body(name="x" * 300), "host name \"" + "x" * 64 + "...\" is invalid"),
            (body(vtepIP=""), 'vtepIP "" is not an IPv4 address'),
            (body(vtepIP="300.1.1.1"), 'vtepIP "300.1.1.1" is not an IPv4 address'),
            (body(vtepIP="fe80::1"), 'vtepIP "fe80::1" is not an IPv4 address'),
            (body(vtepIP="010.0.0.1"), 'vtepIP "010.0.0.1" is not an IPv4 address'),
            (body(vtepIP="0.0.0.0"), "vtepIP 0.0.0.0 is not a unicast address"),
            (body(vtepIP="224.0.0.5"), "vtepIP 224.0.0.5 is not a unicast address"),
            (body(vtepIP="255.255.255.255"), "is not a unicast address"),
            (body(dpid=0), "dpid 0 is not a datapath id"),
            (body(bridge=""), 'bridge "" is not an interface name'),
            (body(bridge="b" * 16), "is not an interface name"),
            (body(bridge="a/b"), 'bridge "a/b" is not an interface name'),
            (body(uplinkPort="eth 1"), 'uplinkPort "eth 1" is not an interface name'),
            (body(tunnelPort=".."), 'tunnelPort ".." is not an interface name'),
            (body(mtu=100), "mtu 100 is out of range"),
            (body(mtu=70000), "mtu 70000 is out of range"),
            (body(refresh=0), "refresh 0 is out of range"),
            (body(refresh=-1), "refresh -1 is out of range"),
            (body(refresh=1e9), "refresh 1e+09 is out of range"),
            ({}, 'host name "" is invalid'),
        ]
        for req, text in semantic:
            got = await self.c.err("POST", "/plugin/registerHost", req)
            self.assertIn(text, got, req)
            self.assertTrue(got.endswith("\n") and got.count("\n") == 1, got)
        # a body that is not declared JSON is no route at all (as for every /plugin call)
        code, _, _ = await self.c.request("POST", "/plugin/registerHost", body(),
                                          content_type="text/plain")
        self.assertEqual(code, 404)
        self.assertEqual(await store.list("host"), {})
        self.assertEqual(await store.revision(), rev0)
        self.assertNotIn("Traceback", self.nm.log_text())

    @async_test
    async def test_a_live_hosts_dpid_or_vtep_is_not_taken(self):
        store = await self.store()
        await self.plugin("registerHost", body(name="h1", dpid=10, vtepIP="192.0.2.1"))
        self.assertIn("dpid 0xa is registered by live host h1",
                      await self.plugin("registerHost", body(name="h2", dpid=10,
                                                             vtepIP="192.0.2.2"), ok=False))
        self.assertIn("vtepIP 192.0.2.1 is registered by live host h1",
                      await self.plugin("registerHost", body(name="h2", dpid=11,
                                                             vtepIP="192.0.2.1"), ok=False))
        self.assertEqual(set(await store.list("host")), {"h1"})
        await self.plugin("registerHost", body(name="h2", dpid=11, vtepIP="192.0.2.2"))
        # h1 may refresh and change what is its own
        await self.plugin("registerHost", body(name="h1", dpid=10, vtepIP="192.0.2.1", mtu=9000))
        # a stale claimant (its host is gone) does not block; nor does a planted record
        # that is not JSON, under another name or under the registering host's own
        now = await store.server_time()
        await store.put_state("host", "h3", {"name": "h3", "vtepIP": "192.0.2.3", "dpid": 12,
                                             "updated": now - 1000, "refresh": 1})
        txn = Txn()
        txn.put("host", "junk", "{not json")
        txn.put("host", "h5", "[1, 2")
        await store.apply(txn)
        await self.plugin("registerHost", body(name="h4", dpid=12, vtepIP="192.0.2.3"))
        await self.plugin("registerHost", body(name="h5", dpid=13, vtepIP="192.0.2.5"))
        self.assertEqual((await store.get("host", "h5"))["dpid"], 13)
        self.assertEqual((await store.get("host", "h1"))["mtu"], 9000)
        self.assertNotIn("Traceback", self.nm.log_text())


class AgentRegistrationTests(unittest.TestCase):
    """The agent's side: ``HostRegistration`` through a real ``NetmasterClient``."""

    timeout = 120

    def setUp(self):
        require_binary("redis-server")
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def registration(self, url: str, **kw: Any):
        from contiv_sdn.agent.netmaster import NetmasterClient
        from contiv_sdn.agent.registration import HostRegistration, host_record
        client = NetmasterClient(url, timeout=5)
        self.addCleanup(client.close)
        self.attempts = 0

        def register(record):
            self.attempts += 1
            return client.register_host(record)

        reg = HostRegistration(register,
                               lambda: host_record(HOST, "192.0.2.41", 0xABC, "br-int", "eth1",
                                                   1500), **kw)
        reg.startService()
        self.addCleanup(reg.stopService)
        return reg

    @async_test
    async def test_registers_once_the_netmaster_is_up_and_refreshes_through_its_restart(self):
        port = free_tcp_port()
        nm = NetmasterProcess(redis_url=self.redis.url, port=port)
        self.addCleanup(nm.stop)
        reg = self.registration(nm.url, interval=0.3, retry=0.05, max_retry=0.2)
        await wait_for(lambda: self.attempts >= 3, what="three registration attempts")
        self.assertFalse(reg.registered.called)  # nobody to register with yet: retrying
        await threads.deferToThread(nm.start)
        stored = await reg.registered
        store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        self.assertEqual(await store.get("host", HOST), dict(
            stored, uplinkPort="eth1", dpid=0xABC, vtepIP="192.0.2.41", refresh=0.3))

        async def refreshed_after(stamp: float) -> bool:
            rec = await store.get("host", HOST)
            return rec is not None and rec["updated"] > stamp

        await wait_for(what="a refresh", predicate=lambda: defer.ensureDeferred(
            refreshed_after(stored["updated"])))
        # the netmaster goes away and comes back: the agent keeps trying, then refreshes
        await threads.deferToThread(nm.stop, remove=False)
        down_at = await store.server_time()
        await wait_for(what="a failed refresh", predicate=lambda: reg._failing is not None)
        await threads.deferToThread(nm.start)
        await wait_for(what="a refresh after the restart", predicate=lambda: defer.ensureDeferred(
            refreshed_after(down_at)))
        await wait_for(what="the agent to see it", predicate=lambda: reg._failing is None)

    @async_test
    async def test_a_refusal_is_retried_and_logged_once(self):
        """A record the netmaster refuses (here: another live host holds the dpid) is
        not stored; the agent keeps asking and registers once the claim is gone."""
        from twisted.logger import globalLogPublisher
        nm = NetmasterProcess(redis_url=self.redis.url).start()
        self.addCleanup(nm.stop)
        store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        now = await store.server_time()
        await store.put_state("host", "other", {"name": "other", "vtepIP": "192.0.2.99",
                                                "dpid": 0xABC, "updated": now, "refresh": 1})
        warnings: List[str] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "contiv_sdn.agent.registration" and \
                    event.get("log_level").name == "warn":
                warnings.append(event.get("what", ""))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        reg = self.registration(nm.url, interval=0.3, retry=0.05, max_retry=0.1)
        stored = await reg.registered  # "other" goes stale after 3 s
        self.assertEqual(stored["dpid"], 0xABC)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("dpid 0xabc is registered by live host other", warnings[0])

    def test_retries_back_off_and_a_success_resets_them(self):
        from contiv_sdn.agent.netmaster import NetmasterUnavailable
        from contiv_sdn.agent.registration import HostRegistration
        clock = task.Clock()
        calls: List[float] = []
        up = [False]

        async def register(req: Dict[str, Any]) -> Dict[str, Any]:
            calls.append(clock.seconds())
            if not up[0]:
                raise NetmasterUnavailable("netmaster at http://nm is not reachable")
            return dict(req, updated=clock.seconds())

        reg = HostRegistration(register, lambda: {"name": "n", "vtepIP": "192.0.2.1",
                                                  "dpid": 1}, interval=30.0, retry=0.5,
                               max_retry=8.0, reactor=clock)
        reg.startService()
        self.addCleanup(reg.stopService)
        clock.advance(0)  # the first try is at once
        while clock.seconds() < 30:
            clock.advance(0.25)
        # 0.5 s, doubling, at most 8 s between tries
        self.assertEqual(calls, [0, 0.5, 1.5, 3.5, 7.5, 15.5, 23.5])
        self.assertFalse(reg.registered.called)
        up[0] = True
        while clock.seconds() < 31.5:
            clock.advance(0.25)
        self.assertEqual(calls[-1], 31.5)
        self.assertEqual(reg.last["name"], "n")
        # registered: the next call is the refresh, ``interval`` later (not a retry)
        while clock.seconds() < 61.5:
            clock.advance(0.25)
        self.assertEqual(calls[-2:], [31.5, 61.5])
        # a failure after that starts the back-off from its beginning again
        up[0] = False
        while clock.seconds() < 93:
            clock.advance(0.25)
        self.assertEqual(calls[-4:], [61.5, 91.5, 92.0, 93.0])


class ReadOnlyRedisAgentTests(unittest.TestCase):
    """The whole agent (bridge, endpoints, Docker driver) given a read-only Redis:
    it registers through the netmaster, plumbs an endpoint and removes it, and Redis
    refused nothing from it, because it sent nothing to refuse."""

    timeout = 120

    @async_test
    async def test_agent_registers_and_serves_with_a_read_only_redis(self):
        from contiv_sdn.agent.registration import host_dpid
        from tests.test_agt_agent import AgentFixture, PLEN
        from tests.test_agt_plumbing import Netns

        fx = AgentFixture(self)  # skips (or fails in CI) without root and OVS
        replica = read_only_replica(self, fx.redis)
        options = fx.options

        def read_only_options() -> Dict[str, Any]:
            return dict(options(), redis=replica.url,
                        **{"docker-plugin": os.path.join(fx.dir, "plugins", "netplugin.sock"),
                           "docker": "unix://" + os.path.join(fx.dir, "no-dockerd.sock")})
        fx.options = read_only_options
        service = await fx.start()  # ready: bridge made and host registered
        store = await Store.connect(fx.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        rec = await store.get("host", fx.host)
        self.assertEqual(rec, dict(service.registration.last, uplinkPort=None))
        self.assertEqual((rec["dpid"], rec["vtepIP"]), (host_dpid(fx.host), "192.0.2.201"))

        ctr = Netns(self, "c")
        ep = await fx.client.create_endpoint("e" * 64, ctr.path, "agtnet", name="web")
        self.assertEqual(ctr.addrs("eth0"), [(ep["ipAddress"], PLEN)])
        await fx.client.delete_endpoint("e" * 64)
        await wait_for(what="the Docker driver's subscription on the replica", predicate=lambda:
                       threads.deferToThread(lambda: " sub=1 " in redis_cli(
                           replica.socket, "CLIENT", "LIST")))
        await fx.stop()
        self.assertEqual(await threads.deferToThread(readonly_errors, replica.socket), 0)
