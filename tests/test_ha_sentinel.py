"""Redis Sentinel (issue 15, item 3): the store follows a failover, re-subscribes,
and acknowledges a write only once a replica has it — against a real Redis
primary, two replicas and three sentinels (``contiv_sdn.testing.redisgroup``),
and a real netmaster process under REST load while the primary is SIGKILLed."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List

from twisted.internet import defer, threads
from twisted.trial import unittest

from contiv_sdn.store import RedisURL, Store, StoreUnavailable
from contiv_sdn.store import consistency
from contiv_sdn.testing import require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.redisgroup import RedisGroup
from contiv_sdn.testing.wait import sleep, wait_for
from tests.test_fnd_helpers import async_test


class SentinelURLTests(unittest.SynchronousTestCase):
    def test_parse(self):
        u = RedisURL.parse("sentinel://bob:pw@10.0.0.1:26379,h2:26380,h3/prim?db=2&replicas=2")
        self.assertEqual(u.sentinels, (("10.0.0.1", 26379), ("h2", 26380), ("h3", 26379)))
        self.assertEqual((u.primary, u.db, u.replicas, u.username, u.password),
                         ("prim", 2, 2, "bob", "pw"))
        self.assertNotIn("pw", str(u))
        self.assertEqual(str(u), "sentinel://bob@10.0.0.1:26379,h2:26380,h3:26379/prim?db=2")

    def test_refusals_say_what_is_wrong(self):
        for url, text in [("sentinel://h1:x/p", "bad sentinel address"),
                          ("sentinel://h1:1/", "no primary name"),
                          ("sentinel://h1/p?replicas=x", "?replicas= must be"),
                          ("sentinel://h1/p?wait_ms=0", "?wait_ms= must be")]:
            with self.assertRaises(ValueError) as cm:
                RedisURL.parse(url)
            self.assertIn(text, str(cm.exception))


class SentinelStoreTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        require_binary("redis-server")
        self.group = RedisGroup().start()
        self.addCleanup(self.group.stop)
        self.stores: List[Store] = []

    async def store(self, url: str = "") -> Store:
        s = await Store.connect(url or self.group.url, timeout=3.0)
        self.stores.append(s)
        return s

    def tearDown(self):
        async def close():
            for s in self.stores:
                await s.close()
        return defer.ensureDeferred(close())

    @async_test
    async def test_writes_follow_a_failover_and_none_acknowledged_is_lost(self):
        s = await self.store()
        resyncs: List[float] = []
        s.subscribe(lambda *a: None, lambda: resyncs.append(time.monotonic()))
        await wait_for(lambda: resyncs, timeout=10, what="first subscription")
        acked: Dict[str, int] = {}
        refused = 0
        old = self.group.data_ports[0]
        killed_at = None
        back_at = None
        i = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 40:
            i += 1
            key = f"k{i}"
            try:
                await s.put_state("host", key, {"name": key, "n": i})
                acked[key] = i
                if killed_at is not None and back_at is None:
                    back_at = time.monotonic()
            except StoreUnavailable:
                refused += 1
                await sleep(0.05)
            if i == 50:
                await threads.deferToThread(self.group.kill, old)
                killed_at = time.monotonic()
            if back_at is not None and len(acked) >= 100:
                break
        self.assertIsNotNone(back_at, f"no write succeeded after the primary was killed "
                                      f"({refused} refused)")
        new, _ = await threads.deferToThread(self.group.wait_failover, old)
        self.assertNotEqual(new, old)
        # every acknowledged write is on the new primary
        direct = await self.store(f"redis://127.0.0.1:{new}")
        present = await direct.list("host")
        lost = sorted(set(acked) - set(present), key=lambda k: int(k[1:]))
        self.assertEqual(lost, [], f"acknowledged but lost: {lost[:10]}")
        # the change feed re-subscribed (on the new primary) and asked for a resync
        await wait_for(lambda: any(t > killed_at for t in resyncs), timeout=15,
                       what="a resync after the failover")

    @async_test
    async def test_no_replica_no_acknowledgement(self):
        s = await self.store()
        await s.put_state("host", "before", {"name": "before"})
        for p in self.group.data_ports[1:]:
            await threads.deferToThread(self.group.kill, p)
        # the primary no longer has a replica: it may apply, but must not acknowledge
        with self.assertRaises(StoreUnavailable) as cm:
            await s.put_state("host", "after", {"name": "after"})
        self.assertIn("replica", str(cm.exception))


class SentinelNetmasterTests(unittest.TestCase):
    """A real netmaster on the Sentinel group: REST creates while the primary dies."""

    timeout = 240

    def setUp(self):
        require_binary("redis-server")
        self.group = RedisGroup().start()
        self.addCleanup(self.group.stop)
        self.nm = NetmasterProcess(redis_url=self.group.url).start()
        self.addCleanup(self.nm.stop)

    def _post(self, path: str, body: dict) -> int:
        req = urllib.request.Request(self.nm.url + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError):
            return 0

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.nm.url + path, timeout=15) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    @async_test
    async def test_primary_killed_under_creates(self):
        acked: List[int] = []
        other: Dict[int, int] = {}
        stop = threading.Event()
        old = self.group.data_ports[0]

        def load() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                i += 1
                status = self._post(f"/api/v1/networks/default:n{i}/", {
                    "key": f"default:n{i}", "tenantName": "default", "networkName": f"n{i}",
                    "encap": "vxlan", "subnet": f"10.{i // 250}.{i % 250}.0/24"})
                if 200 <= status < 300:
                    acked.append(i)
                else:
                    other[i] = status
                if i == 40:
                    self.group.kill(old)

        await threads.deferToThread(load)
        self.assertTrue(any(i > 60 for i in acked),
                        f"no create acknowledged well after the kill: refused {other}")
        # refusals were clean (503: try again), never a 500
        self.assertFalse([s for s in other.values() if s not in (503, 0)],
                         f"unclean refusals: {other}")
        # every acknowledged network is there (read through the netmaster)
        missing = [i for i in acked if self._get(f"/api/v1/networks/default:n{i}/") != 200]
        self.assertEqual(missing, [], f"acknowledged but lost: {missing}")
        # and the store is consistent: no leaked or double allocation
        new = self.group.primary_port()
        direct = await Store.connect(f"redis://127.0.0.1:{new}")
        try:
            self.assertEqual(await consistency.check(direct), [])
        finally:
            await direct.close()
