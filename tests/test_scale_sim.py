"""The controller at a CI-sized scale, against simulated switches (issue 8).

Correctness, not timings: many switches (each a real OpenFlow 1.3 connection
from :mod:`contiv_sdn.testing.simswitch`), hosts registered and endpoints
created the way netplugin does it, then churn (creates, deletes, port flaps,
link flaps); every switch must end up holding exactly the flows of a full
compile of the stored state (the oracle), and a netmaster restart, with nothing
changed meanwhile, must send no flow_mod at all (switches keep their tables and
reconnect).  Through public surfaces only, so it holds for any controller design.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.simswitch import Cluster, NetmasterRunner, endpoint_id, in_port_tlv

SWITCHES = int(os.environ.get("SCALE_SIM_SWITCHES", "50"))
ENDPOINTS = int(os.environ.get("SCALE_SIM_ENDPOINTS", "1000"))
NETWORKS = (("sim-a", "10.128.0.0/16"), ("sim-b", "10.129.0.0/16"))


async def gather(deferreds):
    results = await defer.DeferredList(list(deferreds), consumeErrors=True)
    for ok, value in results:
        if not ok:
            value.raiseException()
    return [v for _, v in results]


async def bounded(jobs, width=16):
    """Run coroutine factories ``width`` at a time (as many agents would)."""
    sem = defer.DeferredSemaphore(width)
    return await gather(sem.run(lambda j=j: defer.ensureDeferred(j())) for j in jobs)


class ScaleSimTests(TestCase):
    timeout = 600

    async def _setUp(self):
        require_binary("redis-server")
        self.redis = RedisServer(appendonly=False).start()
        self.addCleanup(self.redis.stop)
        ofp_port = free_tcp_port()
        spec = NetmasterProcess(redis_url=self.redis.url,
                                ofp_listen=f"tcp:{ofp_port}:interface=127.0.0.1")
        self.addCleanup(spec.cleanup)
        self.netmaster = NetmasterRunner(spec, reactor)
        await self.netmaster.start()
        self.addCleanup(lambda: defer.ensureDeferred(self.netmaster.stop()))
        self.cluster = await Cluster(spec.url, ("127.0.0.1", ofp_port), self.redis.url,
                                     max_backoff=0.5).start()
        self.addCleanup(lambda: defer.ensureDeferred(self.cluster.close()))
        for name, subnet in NETWORKS:
            await self.cluster.create_network(name, subnet)

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _populate(self):
        c = self.cluster
        for i in range(SWITCHES):
            await c.add_host(f"sim{i:04d}", c.vtep_of(i + 1))
        await c.wait_all_up()
        names = sorted(c.hosts)

        def create(i):
            net = NETWORKS[i % len(NETWORKS)][0]
            return lambda: c.create_endpoint(names[i % len(names)], net, endpoint_id(i))
        await bounded([create(i) for i in range(ENDPOINTS)])
        return names

    async def _churn(self, names):
        c = self.cluster
        ids = sorted(c.endpoints)
        gone = ids[::10]  # 10% deleted
        flapped = ids[3::20]  # 5% re-plugged (new ofport)
        linked = ids[7::20]  # 5% link down and up (same ofport)
        await bounded([lambda e=e: c.delete_endpoint(e) for e in gone])
        for e in flapped:
            c.flap(e)
        for e in linked:
            c.hosts[c.endpoints[e]["host"]].set_link(c.endpoints[e]["port"], False)
        await deferLater(reactor, 0.2, lambda: None)
        for e in linked:
            c.hosts[c.endpoints[e]["host"]].set_link(c.endpoints[e]["port"], True)

        def create(i):
            net = NETWORKS[i % len(NETWORKS)][0]
            return lambda: c.create_endpoint(names[(i * 7) % len(names)], net, endpoint_id(ENDPOINTS + i))
        await bounded([create(i) for i in range(ENDPOINTS // 10)])
        # and one created without its port yet: remote switches learn it, its own host not
        await c.create_endpoint(names[0], NETWORKS[0][0], endpoint_id(2 * ENDPOINTS), attach=False)

    def _check_oracle_is_meaningful(self, expected):
        """The oracle itself must name every attached endpoint's port on its host:
        an empty or partial compile would make the comparison prove nothing."""
        c = self.cluster
        self.assertEqual(set(expected), set(c.hosts))
        for ep_id, ep in c.endpoints.items():
            if ep["ofport"] is None:
                continue
            needle = in_port_tlv(ep["ofport"])
            self.assertTrue(any(needle in key[2] for key in expected[ep["host"]]),
                            f"the oracle has no flow for endpoint {ep_id[-6:]}'s port on {ep['host']}")

    async def test_churn_converges_to_full_compile_and_restart_sends_nothing(self):
        c = self.cluster
        names = await self._populate()
        await self._churn(names)

        expected = await c.oracle()
        self._check_oracle_is_meaningful(expected)
        await c.wait_matching(expected, timeout=300)

        # A restart with nothing changed: the switches keep their tables, reconnect,
        # are read back, and are sent nothing.
        before = c.totals()
        reads = {n: h.reads for n, h in c.hosts.items()}
        await self.netmaster.stop()
        await c.wait(lambda: not any(h.up for h in c.hosts.values()), 30, "all switches disconnected")
        restarted = reactor.seconds()
        await self.netmaster.start()
        await c.wait_all_up(timeout=120, since=restarted)
        # every switch is read again (flow or aggregate stats) before anything could be judged
        await c.wait(lambda: all(h.reads > reads[n] for n, h in c.hosts.items()), 300,
                     "every switch read back after the restart")
        await self._quiet(seconds=3.0)
        after = c.totals()
        self.assertEqual(after["flow_mods"] - before["flow_mods"], 0,
                         "flow_mods were sent after a restart that changed nothing")
        self.assertEqual(after["errors_sent"], 0)
        self.assertEqual(c.differences(expected), [])

    async def _quiet(self, seconds):
        """Wait until no switch has been read or written for ``seconds``."""
        c = self.cluster
        last = [reactor.seconds()]

        def note(host, event, detail):
            if event in ("read", "applied", "up"):
                last[0] = reactor.seconds()
        c.listeners.append(note)
        try:
            await c.wait(lambda: reactor.seconds() - last[0] >= seconds, 300, "the switches quiet")
        finally:
            c.listeners.remove(note)
