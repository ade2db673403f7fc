"""Several netmasters on one switch: OpenFlow roles decided by the Redis switch lease.

Real parts: a private redis-server, a private OVS whose bridge lists every
controller, controllers in this process (exact timestamps for the fencing
check) and netmaster processes (for SIGKILL).  The simulated switch is held to
what OVS does with roles (the same assertions run against both).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import Any, Dict, List

from os_ken.ofproto import ofproto_v1_3 as ofp
from twisted.internet import defer, protocol, reactor, threads
from twisted.trial.unittest import TestCase

from contiv_sdn.controller.lease import GENERATION_KEY, LEASE_KEY, Lease
from contiv_sdn.controller.service import Controller
from contiv_sdn.lab.ovs import OvsInstance
from contiv_sdn.openflow.protocol import NotMaster, OpenFlowError, OpenFlowFactory
from contiv_sdn.openflow.registry import SwitchRegistry
from contiv_sdn.openflow import codec
from contiv_sdn.pipeline.flow import Flow, make_match
from contiv_sdn.store import Store
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary, require_root
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.simswitch import SimHost
from contiv_sdn.testing.wait import sleep, wait_for

DPID = 0x00C0FFEE00000A01
#: the controller's log line for a sync that changed flows (per switch, or one per run
#: that changed many: "rev N: K switches: +a ~m -d flows")
FLOW_CHANGES = re.compile(r"rev \d+: (?:\d+ switches: )?\+\d+ ~\d+ -\d+ flows")
MAC = "02:02:0a:01:01:{:02x}"


async def seed(store: Store, port: str, host: str = "h1", dpid: int = DPID) -> None:
    """One network, one host (``dpid``) and one endpoint on it: enough for flows."""
    await store.put_state("obj:global", "global", {"name": "global", "fwdMode": "bridge",
                                                   "arpMode": "proxy"})
    await store.put_state("tenant", "default", {"vrfId": 1})
    await store.put_state("obj:network", "default:net1", {"encap": "vxlan", "subnet": "20.1.1.0/24",
                                                          "tenantName": "default",
                                                          "networkName": "net1"})
    await store.put_state("network", "default:net1", {"netId": 3, "encap": "vxlan", "vni": 1001,
                                                      "vlan": 0, "localVlan": 1,
                                                      "subnet": "20.1.1.0/24"})
    await store.put_state("host", host, {"name": host, "vtepIP": "192.168.77.1", "dpid": dpid,
                                         "tunnelPort": "vx1"})
    await store.put_state("endpoint", "ep1", {"id": "ep1", "network": "default:net1", "group": "",
                                              "ipAddress": "20.1.1.1", "macAddress": MAC.format(1),
                                              "homingHost": host, "intfName": port})


class PausableProxy:
    """A unix-socket proxy in front of Redis that can stop forwarding (a partition:
    the netmaster's connections stay open and hear nothing)."""

    def __init__(self, target: str, path: str):
        self.target, self.path = target, path
        self.paused = False
        self.held: List[Any] = []
        self.port: Any = None
        proxy = self

        class Client(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                proxy._pass(self.peer, data)

            def connectionLost(self, reason: Any = None) -> None:
                if self.peer.transport is not None:
                    self.peer.transport.loseConnection()

        class Server(protocol.Protocol):
            def connectionMade(self) -> None:
                self.peer: Any = None
                self.early: List[bytes] = []
                self.transport.pauseProducing()
                d = protocol.ClientCreator(reactor, Client).connectUNIX(proxy.target)

                def up(c: Any) -> None:
                    c.peer, self.peer = self, c
                    self.transport.resumeProducing()

                d.addCallbacks(up, lambda f: self.transport.loseConnection())

            def dataReceived(self, data: bytes) -> None:
                proxy._pass(self.peer, data)

            def connectionLost(self, reason: Any = None) -> None:
                if self.peer is not None and self.peer.transport is not None:
                    self.peer.transport.loseConnection()

        f = protocol.Factory()
        f.protocol = Server
        self.factory = f

    def start(self) -> "PausableProxy":
        self.port = reactor.listenUNIX(self.path, self.factory)
        return self

    def _pass(self, to: Any, data: bytes) -> None:
        if self.paused:
            self.held.append((to, data))
        elif to is not None and to.transport is not None:
            to.transport.write(data)

    def resume(self) -> None:
        self.paused = False
        held, self.held = self.held, []
        for to, data in held:
            self._pass(to, data)

    def stop(self) -> Any:
        return self.port.stopListening() if self.port is not None else None


def roles(ovs: OvsInstance, bridge: str) -> Dict[str, str]:
    """target -> role, as OVS shows them (``ovs-vsctl list controller``)."""
    out: Dict[str, str] = {}
    text = ovs.vsctl("--format=csv", "--data=bare", "--no-headings", "--columns=target,role",
                     "list", "controller")
    for line in text.splitlines():
        target, _, role = line.partition(",")
        out[target.strip()] = role.strip()
    return out


def numbered_flows(lo: int, hi: int) -> List[Flow]:
    """Flows of ours on in_ports 1000+lo .. 1000+hi-1."""
    from contiv_sdn.pipeline.flow import COOKIE_MARK

    return [Flow(table=0, priority=100, match=make_match(in_port=1000 + i),
                 actions=(("output", 2),), cookie=COOKIE_MARK | i) for i in range(lo, hi)]


class SlaveWritesTests(TestCase):
    """What a SLAVE connection may do, on OVS and on the simulated switch alike."""

    timeout = 60

    async def _ovs_switch(self):
        require_root()
        require_binary("ovs-vswitchd")
        from contiv_sdn.openflow.testing import SwitchLab
        lab = SwitchLab("har")
        await lab.start()
        self.addCleanup(lambda: defer.ensureDeferred(lab.stop()))
        return await lab.add_switch()

    async def _sim_switch(self):
        registry = SwitchRegistry()
        up: defer.Deferred = defer.Deferred()
        registry.on_switch_up = lambda sw: up.called or up.callback(sw)
        port = reactor.listenTCP(0, OpenFlowFactory(registry), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        host = SimHost("sim1", "192.168.77.1", reactor)
        host.connect("127.0.0.1", port.getHost().port)
        self.addCleanup(host.stop)
        sw = await up
        sw.sim = host
        return sw

    async def _check(self, sw) -> None:
        flow = Flow(table=0, priority=7, match=make_match(in_port=3))
        # SLAVE with a generation: flow_mods are refused by the switch itself
        role, gen = await sw.request_role(ofp.OFPCR_ROLE_SLAVE, 5)
        self.assertEqual((role, gen), (ofp.OFPCR_ROLE_SLAVE, 5))
        xid = sw.next_xid()
        with self.assertRaises(OpenFlowError) as err:
            await sw.send_checked(codec.encode_flow_mod(flow, ofp.OFPFC_ADD, xid))
        self.assertEqual((err.exception.type, err.exception.code),
                         (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE))
        # and a fenced connection does not even send it
        sw.fenced = True
        with self.assertRaises(NotMaster):
            sw.bundle()
        # an older generation cannot make us MASTER (the fencing token)
        with self.assertRaises(OpenFlowError) as err:
            await sw.request_role(ofp.OFPCR_ROLE_MASTER, 4)
        self.assertEqual((err.exception.type, err.exception.code),
                         (ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE))
        self.assertFalse(sw.writable)
        # a newer one can; then writes go through
        role, gen = await sw.request_role(ofp.OFPCR_ROLE_MASTER, 6)
        self.assertEqual((role, gen), (ofp.OFPCR_ROLE_MASTER, 6))
        self.assertTrue(sw.writable)
        bundle = sw.bundle()
        bundle.add_flow_mod(flow, ofp.OFPFC_ADD)
        self.assertEqual(await bundle.commit(), 1)
        # NOCHANGE reports the role and the newest generation
        self.assertEqual(await sw.request_role(ofp.OFPCR_ROLE_NOCHANGE, 0),
                         (ofp.OFPCR_ROLE_MASTER, 6))

    async def test_ovs_refuses_a_slave_and_a_stale_master(self):
        await self._check(await self._ovs_switch())

    async def test_simulated_switch_does_the_same(self):
        sw = await self._sim_switch()
        await self._check(sw)
        self.assertEqual(sw.sim.slave_refusals, 1)

    async def _master_sim_switch(self) -> Any:
        """A simulated switch we are MASTER of (generation 5), writes fenced by role."""
        sw = await self._sim_switch()
        sw.fenced = True
        await sw.request_role(ofp.OFPCR_ROLE_MASTER, 5)
        return sw

    async def test_demoted_and_back_before_the_commit_never_commits_the_discarded_bundle(self):
        """A lapse while a bundle waits for its barrier, and MASTER again (same
        generation) while its discard is answered: the bundle is gone from the switch,
        so it must not be committed (at 1000x20k 262 commits were answered "no such
        bundle" and each dropped a belief); the pass ends as NotMaster, the belief
        stays, and the held work goes out without a read."""
        from contiv_sdn.openflow.sync import FlowSync

        sw = await self._master_sim_switch()

        sync = FlowSync(sw)
        first = numbered_flows(0, 5)
        await sync.converge(first)
        reads = sw.sim.reads
        real_barrier = sw.barrier
        lapsed = []

        def barrier_then_lapse():
            d = real_barrier()
            if not lapsed:  # the bundle's barrier is out: the lease lapses, comes back
                lapsed.append(sw.request_role(ofp.OFPCR_ROLE_SLAVE, 5))
                lapsed.append(sw.request_role(ofp.OFPCR_ROLE_MASTER, 5))
            return d
        sw.barrier = barrier_then_lapse
        desired = first + numbered_flows(5, 10)
        with self.assertRaises(NotMaster):
            await sync.converge(desired)
        self.assertTrue(lapsed)
        await defer.gatherResults(lapsed)
        sw.barrier = real_barrier
        self.assertTrue(sw.writable, "MASTER again")
        self.assertEqual(sw.sim.flows(), set(first), "a discarded bundle changed the switch")
        self.assertIsNotNone(sync.installed, "the belief was dropped")
        self.assertTrue(sync.held_back)
        result = await sync.apply({}, lambda: frozenset(desired))
        self.assertEqual((result.added, result.deleted), (5, 0))
        self.assertEqual(sw.sim.flows(), set(desired))
        self.assertEqual(sw.sim.reads, reads, "the switch was read back")

    async def test_demoted_in_the_middle_of_a_bundle_stops_sending_and_keeps_the_belief(self):
        """A lapse while a bundle is being written: the rest is not sent (the switch,
        told SLAVE, would refuse each message: one error each, a log storm at scale),
        the bundle is discarded, what we believe of the switch stays true, and once
        MASTER again with the same generation the whole change goes out without a read."""
        from contiv_sdn.openflow.sync import FlowSync

        sw = await self._master_sim_switch()

        class DemotingClock:
            """The reactor, except that the first turn FlowSync gives it (after its first
            batch went out) is when the lease lapses."""
            demoted = False

            def seconds(self) -> float:
                return reactor.seconds()

            def callLater(self, delay: float, f: Any, *a: Any, **kw: Any) -> Any:
                if not self.demoted:
                    self.demoted = True
                    sw.request_role(ofp.OFPCR_ROLE_SLAVE, 5)
                return reactor.callLater(delay, f, *a, **kw)

        clock = DemotingClock()
        sync = FlowSync(sw, batch=10, clock=clock)
        first = numbered_flows(0, 5)
        await sync.converge(first)  # one batch: no turn given, no demotion yet
        self.assertFalse(clock.demoted)
        self.assertEqual(sw.sim.flows(), set(first))
        reads = sw.sim.reads
        desired = first + numbered_flows(5, 55)
        with self.assertRaises(NotMaster):
            await sync.converge(desired)
        self.assertTrue(clock.demoted)
        # 40 of the 50 messages were not sent yet: none of them may reach the switch
        # (only the bundle's discard may be refused: a SLAVE may not send bundle control)
        self.assertLessEqual(sw.sim.slave_refusals, 1, "batches were sent after the demotion")
        self.assertEqual(sw.sim.flows(), set(first), "a discarded bundle changed the switch")
        self.assertTrue(sync.held_back)
        self.assertEqual(await sw.request_role(ofp.OFPCR_ROLE_MASTER, 5), (ofp.OFPCR_ROLE_MASTER, 5))
        result = await sync.apply({}, lambda: frozenset(desired))
        self.assertEqual((result.added, result.deleted), (50, 0))
        self.assertEqual(sw.sim.flows(), set(desired))
        self.assertEqual(sw.sim.reads, reads, "the switch was read back")
        self.assertFalse(sync.held_back)


class _Base(TestCase):
    timeout = 120

    async def _setUp(self) -> None:
        require_root()
        require_binary("ovs-vswitchd", "redis-server")
        self.prefix = f"ha{os.getpid() % 100000}"
        self.bridge = f"{self.prefix}b"
        self.port_name = f"{self.prefix}p1"
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.ovs = OvsInstance(tempfile.mkdtemp(prefix="ha-roles-ovs-"))
        await threads.deferToThread(self.ovs.start)
        self.addCleanup(lambda: self.ovs.stop(remove=True))
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        await seed(self.store, self.port_name)

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def add_bridge(self, controllers: List[str]) -> None:
        def make() -> None:
            self.ovs.add_bridge(self.bridge, dpid=DPID, controllers=controllers)
            self.ovs.vsctl("add-port", self.bridge, "vx1", "--", "set", "interface", "vx1",
                           "type=vxlan", "options:remote_ip=flow", "options:key=flow",
                           f"options:dst_port={free_tcp_port()}")
            self.ovs.vsctl("add-port", self.bridge, self.port_name, "--", "set", "interface",
                           self.port_name, "type=internal")
        self.addCleanup(threads.deferToThread, self.ovs.vsctl, "--if-exists", "del-br", self.bridge)
        await threads.deferToThread(make)

    def flows(self) -> List[str]:
        """Our flows without their counters (what a re-add would change is the set)."""
        out = []
        for line in self.ovs.ofctl("dump-flows", self.bridge).splitlines():
            if "cookie=0xc0de" not in line:
                continue
            out.append(", ".join(p for p in line.split(", ") if not p.strip().startswith(
                ("duration=", "n_packets=", "n_bytes=", "idle_age=", "hard_age="))))
        return sorted(out)

    async def roles(self) -> Dict[str, str]:
        return await threads.deferToThread(roles, self.ovs, self.bridge)

    async def wait_roles(self, want: Dict[str, str], timeout: float = 20.0) -> None:
        last: Dict[str, Dict[str, str]] = {}

        async def check() -> bool:
            last["r"] = await self.roles()
            return last["r"] == want
        try:
            await wait_for(check, timeout=timeout, every=0.05, what=f"roles {want}")
        except AssertionError as e:
            raise AssertionError(f"{e}; roles now {last.get('r')}") from None


class InProcessRolesTests(_Base):
    """Controllers in this process: their lease histories share one clock."""

    async def controller(self, redis_url: str) -> Controller:
        store = await Store.connect(redis_url, timeout=5.0)
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        port = free_tcp_port()
        ctl = Controller(store, listen=f"tcp:{port}:interface=127.0.0.1", lease=Lease(store))
        ctl.target = f"tcp:127.0.0.1:{port}"
        ctl.startService()
        self.addCleanup(lambda: ctl.running and ctl.stopService())
        return ctl

    async def test_one_master_then_a_partitioned_master_demotes_before_takeover(self):
        proxy = PausableProxy(self.redis.socket, os.path.join(self.redis.dir, "proxy.sock")).start()
        self.addCleanup(proxy.stop)
        a = await self.controller(f"unix://{proxy.path}")
        await wait_for(lambda: a.lease.held, timeout=10, what="A holds the lease")
        b = await self.controller(self.redis.url)
        await self.add_bridge([a.target, b.target])
        await self.wait_roles({a.target: "master", b.target: "slave"})
        await wait_for(lambda: len(self.flows()) > 5, timeout=20, what="flows programmed")
        before = self.flows()
        b_sync_writes = lambda: sum(s.bundles_sent for s in b.registry.syncs().values())  # noqa
        self.assertEqual(b_sync_writes(), 0, "a SLAVE wrote")

        proxy.paused = True  # A can no longer renew
        paused_at = reactor.seconds()
        seen: List[Dict[str, str]] = []

        async def b_master() -> bool:
            r = await self.roles()
            seen.append(r)
            return r.get(b.target) == "master"
        await wait_for(b_master, timeout=20, every=0.05, what="B MASTER")
        lost = [t for t, held, _g in a.lease.history if not held and t >= paused_at]
        won = [t for t, held, _g in b.lease.history if held]
        self.assertTrue(lost and won, (a.lease.history, b.lease.history))
        # fencing: A gave the switches up before B could have the lease
        self.assertLess(lost[0], won[-1])
        self.assertFalse(any(list(r.values()).count("master") > 1 for r in seen), seen)
        self.assertGreater(b.lease.generation, a.lease.generation - 1)
        self.assertFalse(a.lease.valid())
        # B read the flows back and found them right: nothing sent
        await b.when_idle()
        self.assertEqual(self.flows(), before)
        self.assertEqual(b_sync_writes(), 0, "takeover sent flows that were already right")

        proxy.resume()  # A comes back: stays SLAVE (B holds the lease)
        await sleep(3 * Lease.TTL)
        self.assertEqual(await self.roles(), {a.target: "slave", b.target: "master"})
        self.assertFalse(a.lease.held)
        self.assertEqual(self.flows(), before)

    async def test_a_stopped_leader_hands_over_at_once_and_a_lost_generation_is_fenced(self):
        await self.store.set_raw(GENERATION_KEY, "41")  # A's generation will be 42
        a = await self.controller(self.redis.url)
        await wait_for(lambda: a.lease.held, timeout=10, what="A holds the lease")
        b = await self.controller(self.redis.url)
        await self.add_bridge([a.target, b.target])
        await self.wait_roles({a.target: "master", b.target: "slave"})
        gen = a.lease.generation
        self.assertEqual(gen, 42)
        # Redis loses the newest generation (a failover before replication)
        await self.store._call("DEL", lambda: self.store._conn.execute_command("DEL", GENERATION_KEY))
        await a.stopService()  # hands the lease back
        # gone, or already B's (B may acquire between A's release and this read)
        held = await self.store.get_raw_key(LEASE_KEY)
        self.assertFalse(held is not None and held.startswith(a.lease.holder + "|"), held)
        # B's first acquisition gets generation 1, which OVS refuses as stale; B moves the
        # counter past the switch's and takes the switch with a newer one
        await self.wait_roles({a.target: "slave", b.target: "master"}, timeout=20)
        self.assertGreater(b.lease.generation, gen)


class ProcessKillTests(_Base):
    """Netmaster processes, the leader SIGKILLed."""

    timeout = 180

    def netmaster(self) -> NetmasterProcess:
        port = free_tcp_port()
        nm = NetmasterProcess(redis_url=self.redis.url, ofp_listen=f"tcp:{port}:interface=127.0.0.1")
        nm.target = f"tcp:127.0.0.1:{port}"
        nm.start()
        self.addCleanup(nm.stop)
        return nm

    async def test_leader_killed_standby_takes_over_without_churn_and_restart_rejoins(self):
        a = await threads.deferToThread(self.netmaster)
        b = await threads.deferToThread(self.netmaster)
        await self.add_bridge([a.target, b.target])
        await wait_for(lambda: len(self.flows()) > 5, timeout=30, what="flows programmed")
        found: Dict[str, Dict[str, str]] = {}

        async def one_master() -> bool:  # OVS refreshes the role column every few seconds
            found["r"] = await self.roles()
            return sorted(found["r"].values()) == ["master", "slave"]
        await wait_for(one_master, timeout=20, every=0.1, what="one MASTER, one SLAVE")
        r = found["r"]
        leader, standby = (a, b) if r[a.target] == "master" else (b, a)
        before = self.flows()
        changes = len(FLOW_CHANGES.findall(standby.log_text()))

        await threads.deferToThread(leader.kill)
        killed = time.monotonic()

        async def taken() -> bool:  # the dead one's role is empty: not connected
            r = await self.roles()
            return r[standby.target] == "master" and r[leader.target] != "master"
        await wait_for(taken, timeout=20, every=0.05, what="the standby MASTER")
        took = time.monotonic() - killed
        # (an upper bound: OVS refreshes the role column every few seconds; bench/ha.py
        # measures the takeover itself)
        print(f"\ntakeover after SIGKILL seen in OVS within {took:.2f} s")
        await sleep(1.0)
        self.assertEqual(self.flows(), before)
        text = standby.log_text()
        self.assertIn("switch lease acquired", text)
        self.assertEqual(len(FLOW_CHANGES.findall(text)), changes, "the standby rewrote flows:\n" + text[-3000:])

        # the killed netmaster restarted: rejoins as SLAVE, nothing rewritten
        await threads.deferToThread(leader.start)
        await self.wait_roles({leader.target: "slave", standby.target: "master"})
        self.assertEqual(self.flows(), before)
        self.assertNotIn("switch lease acquired", leader.log_text().split("netmaster listening")[-1])


class RestFailoverTests(TestCase):
    """Any netmaster answers any request; clients given several URLs move on."""

    timeout = 120

    def setUp(self):
        require_binary("redis-server")
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.a = NetmasterProcess(redis_url=self.redis.url).start()
        self.addCleanup(self.a.stop)
        self.b = NetmasterProcess(redis_url=self.redis.url).start()
        self.addCleanup(self.b.stop)
        self.dead = f"http://127.0.0.1:{free_tcp_port()}"  # nothing listens there
        from twisted.web import resource, server

        class Busy(resource.Resource):
            isLeaf = True

            def render(self, request):
                request.setResponseCode(503)
                return b"the state store is unavailable"
        self.busy_port = reactor.listenTCP(0, server.Site(Busy()), interface="127.0.0.1")
        self.addCleanup(self.busy_port.stopListening)
        self.busy = f"http://127.0.0.1:{self.busy_port.getHost().port}"

    async def test_netctl_fails_over_and_every_netmaster_answers_the_same(self):
        from contiv_sdn.netctl.client import ContivClient, RequestError

        def run() -> tuple:
            c = ContivClient(f"{self.dead},{self.a.url}")
            c.post_object("networks", "default:n1", {"tenantName": "default", "networkName": "n1",
                                                     "encap": "vxlan", "subnet": "10.9.1.0/24",
                                                     "gateway": "10.9.1.254"})
            on_a = c.get_object("networks", "default:n1")
            # written through A, read through B (a 503 first): the state is in Redis
            on_b = ContivClient(f"{self.busy},{self.b.url}").get_object("networks", "default:n1")
            with self.assertRaises(RequestError) as err:
                ContivClient(f"{self.dead},{self.dead}/x").list("networks")
            return c.base_url, on_a, on_b, str(err.exception)
        used, on_a, on_b, message = await threads.deferToThread(run)
        self.assertEqual(used, self.a.url)
        self.assertEqual(on_a["subnet"], "10.9.1.0/24")
        self.assertEqual(on_a, on_b)
        self.assertIn("Unable to reach any netmaster", message)
        self.assertIn("--netmaster URL1,URL2", message)

    async def test_the_agents_client_fails_over_both_ways(self):
        from contiv_sdn.agent.netmaster import NetmasterClient, NetmasterUnavailable
        from contiv_sdn.netctl.client import ContivClient
        await threads.deferToThread(ContivClient(self.a.url).post_object, "networks", "default:n2",
                                    {"tenantName": "default", "networkName": "n2",
                                     "encap": "vxlan", "subnet": "10.9.2.0/24",
                                     "gateway": "10.9.2.254"})
        client = NetmasterClient(f"{self.dead},{self.busy},{self.b.url}", timeout=5)
        self.addCleanup(client.close)
        net = await client.network("default", "n2")
        self.assertEqual(net["subnet"], "10.9.2.0/24")
        self.assertEqual(client.url, self.b.url)  # remembered: tried first next time
        # the netmaster in use dies: the next call goes to the other one
        client2 = NetmasterClient(f"{self.b.url},{self.a.url}", timeout=5)
        self.addCleanup(client2.close)
        await threads.deferToThread(self.b.kill)
        net = await client2.network("default", "n2")
        self.assertEqual(client2.url, self.a.url)
        self.assertEqual(net["subnet"], "10.9.2.0/24")
        # none answers: the error names the last one tried
        lone = NetmasterClient(f"{self.dead},{self.b.url}", timeout=5)
        self.addCleanup(lone.close)
        with self.assertRaises(NetmasterUnavailable) as err:
            await lone.network("default", "n2")
        self.assertIn("is not reachable", str(err.exception))


class SentinelLeaseTests(TestCase):
    """The lease on a Redis Sentinel group: an acquisition counts only once a
    replica has its generation, so a failover never hands the same generation out
    twice (two MASTERs the switches could not tell apart)."""

    timeout = 120

    def setUp(self):
        require_binary("redis-server")
        from contiv_sdn.testing.redisgroup import RedisGroup
        self.group = RedisGroup().start()
        self.addCleanup(self.group.stop)
        self.leases: List[Lease] = []

    async def lease(self) -> Lease:
        store = await Store.connect(self.group.url, timeout=3.0)
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        lease = Lease(store)
        self.leases.append(lease)
        self.addCleanup(lambda: defer.ensureDeferred(lease.stop()))
        lease.start()
        return lease

    async def test_no_replica_no_acquisition(self):
        a = await self.lease()
        await wait_for(lambda: a.held, timeout=10, what="A holds the lease")
        await a.stop()
        for p in self.group.data_ports[1:]:
            await threads.deferToThread(self.group.kill, p)
        # the primary is alone: it runs the script (INCR, SET) but cannot have it
        # replicated, so nobody may count the lease as held
        b = await self.lease()
        await sleep(4 * Lease.TTL)
        self.assertFalse(b.held)
        self.assertEqual(b.acquired, 0)
        # a replica back: the very lease the primary already set is confirmed now
        await threads.deferToThread(self.group.restart_as_replica, self.group.data_ports[1])
        await wait_for(lambda: b.held, timeout=30, what="lease held once a replica is back")
        self.assertGreater(b.generation, a.generation)

    async def test_a_failover_never_repeats_a_generation(self):
        a = await self.lease()
        await wait_for(lambda: a.held, timeout=10, what="A holds the lease")
        gen = a.generation
        old = self.group.data_ports[0]
        await threads.deferToThread(self.group.kill, old)
        await threads.deferToThread(self.group.wait_failover, old)
        # A's lease expires in the new primary (or A renews it there); either way the
        # next acquisition, by anyone, is newer than every generation handed out
        await a.stop()
        b = await self.lease()
        await wait_for(lambda: b.held, timeout=30, what="B holds the lease after the failover")
        self.assertGreater(b.generation, gen)


class LeaseLapseTests(TestCase):
    """A lease that lapses with nobody else in between is not a takeover.

    A busy netmaster (a lone one too: it always runs the lease) can miss its renewal
    deadline and demote itself.  When it gets the lease back with the same or the next
    generation, no other netmaster can have written: the switches must keep their
    flows without being read back, and the changes compiled while it was SLAVE must
    still reach them.  With another holder in between, every switch is read back as
    on any takeover.  The lapse is made real: the lease's own Redis connection goes
    through a proxy that stops forwarding (the controller's other connection keeps
    delivering changes), against simulated switches that refuse a SLAVE's writes.
    """

    timeout = 120
    HOSTS = 3

    async def _setUp(self) -> None:
        require_binary("redis-server")
        from contiv_sdn.testing.simswitch import Cluster

        self.redis = RedisServer(appendonly=False).start()
        self.addCleanup(self.redis.stop)
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        self.proxy = PausableProxy(self.redis.socket, os.path.join(self.redis.dir, "lease.sock")).start()
        self.addCleanup(self.proxy.stop)
        lease_store = await Store.connect(f"unix://{self.proxy.path}", timeout=30.0)
        self.addCleanup(lambda: defer.ensureDeferred(lease_store.close()))
        ctl_store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(ctl_store.close()))
        port = free_tcp_port()
        self.ctl = Controller(ctl_store, listen=f"tcp:{port}:interface=127.0.0.1", lease=Lease(lease_store))
        self.ctl.AUDIT_INTERVAL = 3600.0  # no periodic reads in the middle of the counts
        await seed(self.store, "unused", host="seed-host", dpid=0x5EED)
        await self.store.del_state("endpoint", "ep1")
        await self.store.del_state("host", "seed-host")
        self.ctl.startService()
        self.addCleanup(lambda: self.ctl.running and self.ctl.stopService())
        self.cluster = Cluster("http://127.0.0.1:1", ("127.0.0.1", port), self.redis.url, max_backoff=0.5)
        await self.cluster.start()
        self.addCleanup(lambda: defer.ensureDeferred(self.cluster.close()))
        self.cluster.registration = "store"  # hosts registered as records: no REST here
        for i in range(self.HOSTS):
            await self.cluster.add_host(f"lapse{i}", self.cluster.vtep_of(i + 1))
        self.next_ep = 0
        for _ in range(3 * self.HOSTS):
            await self.add_endpoint()
        await self.cluster.wait_all_up(timeout=30)
        await self.converged()

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def add_endpoint(self) -> str:
        """An endpoint record on the next host and its port on that host's switch."""
        n = self.next_ep = self.next_ep + 1
        host = f"lapse{n % self.HOSTS}"
        ep, port = f"lapse-ep{n}", f"lapse-p{n}"
        self.cluster.hosts[host].add_port(port)
        await self.store.put_state("endpoint", ep, {
            "id": ep, "network": "default:net1", "group": "", "ipAddress": f"20.1.1.{10 + n}",
            "macAddress": MAC.format(10 + n), "homingHost": host, "intfName": port})
        return ep

    async def remove_endpoint(self, n: int) -> None:
        self.cluster.hosts[f"lapse{n % self.HOSTS}"].remove_port(f"lapse-p{n}")
        await self.store.del_state("endpoint", f"lapse-ep{n}")

    async def converged(self) -> None:
        expected = await self.cluster.oracle()
        self.assertTrue(all(len(t) > 5 for t in expected.values()), "the oracle is empty")
        await self.cluster.wait_matching(expected, timeout=30)

    def reads(self) -> Dict[str, int]:
        return {n: h.reads for n, h in self.cluster.hosts.items()}

    async def lapse(self) -> int:
        """Cut the lease off from Redis until the controller demoted itself; the
        generation it held."""
        self.assertTrue(self.ctl.lease.held)
        gen = self.ctl.lease.generation
        self.proxy.paused = True
        await wait_for(lambda: not self.ctl.lease.held, timeout=10, what="the lease lapsed")
        await wait_for(lambda: not any(s.writable for s in self.ctl.registry.switches()),
                       timeout=10, what="every switch demoted")
        return gen

    async def changes_while_slave(self) -> None:
        """A delete and two creates, compiled while the controller may not write."""
        compiles, mods = self.ctl.compiles, self.cluster.totals()["flow_mods"]
        await self.remove_endpoint(2)
        await self.add_endpoint()
        await self.add_endpoint()
        await wait_for(lambda: self.ctl.compiles > compiles, timeout=10, what="a compile while SLAVE")
        await self.ctl.when_idle()
        self.assertFalse(self.ctl.lease.held)
        self.assertEqual(self.cluster.totals()["flow_mods"], mods, "a SLAVE wrote")

    async def test_same_holder_back_keeps_beliefs_and_sends_what_changed_meanwhile(self):
        reads = self.reads()
        gen = await self.lapse()
        await self.changes_while_slave()
        self.assertTrue(any(getattr(s, "held_back", False) for s in self.ctl.registry.syncs().values()),
                        "nothing was held back while SLAVE")
        self.proxy.resume()
        await wait_for(lambda: self.ctl.lease.held, timeout=10, what="the lease back")
        self.assertTrue(self.ctl.lease.continued)
        self.assertIn(self.ctl.lease.generation, (gen, gen + 1))
        await self.converged()  # exactly the full compile's flows, changes included
        self.assertEqual(self.reads(), reads, "switches were read back after a lapse to nobody")

    async def test_another_holder_in_between_reads_every_switch_back(self):
        reads = self.reads()
        gen = await self.lapse()
        other_store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(other_store.close()))
        other = Lease(other_store)
        other.start()
        self.addCleanup(lambda: defer.ensureDeferred(other.stop()))
        await wait_for(lambda: other.held, timeout=10, what="another holder")
        self.assertGreater(other.generation, gen)
        await self.changes_while_slave()
        await other.stop()  # hands it back: ours again, but not a continuation
        self.proxy.resume()
        await wait_for(lambda: self.ctl.lease.held, timeout=10, what="the lease back")
        self.assertFalse(self.ctl.lease.continued)
        self.assertGreater(self.ctl.lease.generation, other.generation)
        await self.converged()
        after = self.reads()
        self.assertTrue(all(after[n] > reads[n] for n in reads), (reads, after))
