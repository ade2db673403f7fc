"""The store against a real redis-server: atomic writes, revisions, change
feed, snapshots, allocators, optimistic concurrency, persistence."""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.store import (
    Conflict, Finish, RedisURL, Store, StoreError, Txn, placeholder, transact,
)
from contiv_sdn.store import bitmap
from contiv_sdn.store import keys as K
from contiv_sdn.testing import RedisServer
from contiv_sdn.testing.wait import wait_for
from tests.test_fnd_helpers import async_test


class StoreTestBase(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.stores = []

    async def store(self) -> Store:
        s = await Store.connect(self.redis.url)
        self.stores.append(s)
        return s

    async def _close(self):
        for s in self.stores:
            await s.close()

    def tearDown(self):
        return defer.ensureDeferred(self._close())


class RecordsTests(StoreTestBase):
    @async_test
    async def test_put_get_list_delete_bump_revision(self):
        s = await self.store()
        r1 = await s.put_state("host", "h1", {"name": "h1", "vtepIP": "10.0.0.1"})
        r2 = await s.put_state("host", "h2", {"name": "h2"})
        self.assertGreater(r2, r1)
        self.assertEqual(await s.get("host", "h1"), {"name": "h1", "vtepIP": "10.0.0.1"})
        self.assertEqual(sorted(await s.list("host")), ["h1", "h2"])
        r3 = await s.del_state("host", "h1")
        self.assertGreater(r3, r2)
        self.assertIsNone(await s.get("host", "h1"))
        self.assertEqual(await s.revision(), r3)

    @async_test
    async def test_snapshot_covers_obj_and_state_kinds_at_one_revision(self):
        s = await self.store()
        t = Txn()
        t.put("obj:network", "default:n1", {"key": "default:n1"})
        t.put("network", "default:n1", {"netId": 1})
        rev = (await s.apply(t)).rev
        snap_rev, kinds = await s.snapshot()
        self.assertEqual(snap_rev, rev)
        self.assertEqual(kinds["obj:network"], {"default:n1": {"key": "default:n1"}})
        self.assertEqual(kinds["network"], {"default:n1": {"netId": 1}})

    @async_test
    async def test_change_feed_and_resync(self):
        s = await self.store()
        changes, resyncs = [], []
        s.subscribe(lambda *c: changes.append(c), lambda: resyncs.append(1))
        await wait_for(lambda: resyncs, what="a resync")
        rev = await s.put_state("endpoint", "ep1", {"id": "ep1"})
        rev2 = await s.del_state("endpoint", "ep1")
        await wait_for(lambda: len(changes) >= 2, what="two changes")
        self.assertEqual(changes, [("endpoint", "ep1", "set", rev), ("endpoint", "ep1", "del", rev2)])

    @async_test
    async def test_data_and_subscription_survive_redis_restart(self):
        s = await self.store()
        changes, resyncs = [], []
        s.subscribe(lambda *c: changes.append(c), lambda: resyncs.append(1))
        await wait_for(lambda: resyncs, what="a resync")
        t = Txn()
        t.alloc("epg", K.ALLOC_EPG_ID, 1, 65535, cursor=K.CURSOR_EPG_ID)
        t.put("endpointGroup", "default:g1", {"epgId": placeholder("epg")}, subs=True)
        await s.apply(t)
        self.redis.stop(remove=False)
        self.redis.start()
        await wait_for(lambda: len(resyncs) >= 2, timeout=20, what="a second resync")
        self.assertEqual(await s.get("endpointGroup", "default:g1"), {"epgId": 1})
        t = Txn()
        t.alloc("epg", K.ALLOC_EPG_ID, 1, 65535, cursor=K.CURSOR_EPG_ID)
        t.put("endpointGroup", "default:g2", {"epgId": placeholder("epg")}, subs=True)
        self.assertEqual((await s.apply(t)).allocs["epg"], 2)
        await wait_for(lambda: any(c[1] == "default:g2" for c in changes), what="the change of g2")


class AllocatorTests(StoreTestBase):
    @async_test
    async def test_lowest_free_requested_and_exhaustion(self):
        s = await self.store()
        got = []
        for _ in range(3):
            t = Txn()
            t.alloc("v", K.ALLOC_VLAN, 1, 3, full="no vlans available")
            got.append((await s.apply(t)).allocs["v"])
        self.assertEqual(got, [1, 2, 3])
        t = Txn()
        t.alloc("v", K.ALLOC_VLAN, 1, 3, full="no vlans available")
        with self.assertRaises(StoreError) as e:
            await s.apply(t)
        self.assertEqual(str(e.exception), "no vlans available")
        t = Txn()
        t.setbit(K.ALLOC_VLAN, 2, 0)
        await s.apply(t)
        t = Txn()
        t.alloc("v", K.ALLOC_VLAN, 1, 4094, want=3, taken="requested vlan not available - vlan:{}")
        with self.assertRaises(StoreError) as e:
            await s.apply(t)
        self.assertEqual(str(e.exception), "requested vlan not available - vlan:3")
        t = Txn()
        t.alloc("v", K.ALLOC_VLAN, 1, 4094)
        self.assertEqual((await s.apply(t)).allocs["v"], 2)

    @async_test
    async def test_next_fit_cursor_wraps(self):
        s = await self.store()
        ids = []
        for _ in range(4):
            t = Txn()
            t.alloc("e", K.ALLOC_EPG_ID, 1, 3, cursor=K.CURSOR_EPG_ID, full="full")
            ids.append((await s.apply(t)).allocs["e"])
            if len(ids) == 3:
                t = Txn()
                t.setbit(K.ALLOC_EPG_ID, 1, 0)
                await s.apply(t)
        self.assertEqual(ids, [1, 2, 3, 1])

    @async_test
    async def test_failed_transaction_changes_nothing(self):
        s = await self.store()
        rev = await s.revision()
        t = Txn()
        t.alloc("a", K.ALLOC_VLAN, 1, 10)
        t.alloc("b", K.ALLOC_VXLAN, 5, 5, want=6, taken="requested vxlan not available")
        t.put("network", "x", {"a": 1})
        with self.assertRaises(StoreError):
            await s.apply(t)
        self.assertEqual(await s.revision(), rev)
        self.assertIsNone(await s.get("network", "x"))
        self.assertEqual(bitmap.count(await s.get_bytes(K.ALLOC_VLAN), 0, 4095), 0)

    @async_test
    async def test_ip_rendering_and_range_check(self):
        s = await self.store()
        base = (20 << 24) | (1 << 16) | (1 << 8)
        t = Txn()
        t.setbit(K.ip_bitmap("t:n"), 254, 1)  # gateway
        t.alloc("ip", K.ip_bitmap("t:n"), 1, 254, fmt="ip", base=base)
        t.put("endpoint", "e1", json.dumps({"ip": placeholder("ip", "ip"),
                                            "mac": placeholder("ip", "mac")}), subs=True)
        await s.apply(t)
        self.assertEqual(await s.get("endpoint", "e1"), {"ip": "20.1.1.1", "mac": "02:02:14:01:01:01"})
        t = Txn()
        t.check_clear(K.ip_bitmap("t:n"), 250, 254, "ip address {} is not available", fmt="ip",
                      base=base)
        with self.assertRaises(StoreError) as e:
            await s.apply(t)
        self.assertEqual(str(e.exception), "ip address 20.1.1.254 is not available")
        data = await s.get_bytes(K.ip_bitmap("t:n"))
        self.assertEqual(bitmap.runs(data, 1, 254, 0), [(2, 253)])

    @async_test
    async def test_ipv6_next_after_last_skipping_used(self):
        s = await self.store()
        groups = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]
        got = []
        t = Txn()
        t.alloc_v6("g", K.ip6_hash("t:n"), groups, 2 ** 48, want=2)
        await s.apply(t)
        for _ in range(2):
            t = Txn()
            t.alloc_v6("a", K.ip6_hash("t:n"), groups, 2 ** 48)
            t.put("endpoint", "v6", json.dumps({"ip": placeholder("a", "ip6")}), subs=True)
            await s.apply(t)
            got.append((await s.get("endpoint", "v6"))["ip"])
        self.assertEqual(got, ["2001:db8::1", "2001:db8::3"])


class KindCacheTests(StoreTestBase):
    """``list_versioned`` keeps whole kinds cached and patches them with the
    store's own commits; what it answers must always be what Redis holds."""

    async def poke(self, s, kind, key, raw):
        """Write a record behind the store's back (no version bump): it shows
        in a kind's listing only if that listing is read again from Redis."""
        await s._conn.execute_command("HSET", K.hash_of(kind), key, raw)

    @async_test
    async def test_own_plain_writes_patch_the_cache(self):
        s = await self.store()
        await s.put_state("thing", "a", {"v": 1})
        await s.put_state("thing", "b", {"v": 2})
        await s.list_versioned("thing")
        t = Txn()
        t.put("thing", "c", {"v": 3})
        t.delete("thing", "a")
        t.put("other", "x", {"v": 0})
        ver = (await s.apply(t)).vers["thing"]
        await self.poke(s, "thing", "hidden", '{"v":9}')
        got_ver, items = await s.list_versioned("thing")
        # patched, not re-read: the poked record is not there, ours are
        self.assertEqual((got_ver, items), (ver, {"b": {"v": 2}, "c": {"v": 3}}))

    @async_test
    async def test_writes_only_redis_can_complete_drop_the_cache(self):
        s = await self.store()
        await s.put_state("thing", "n", {"count": 1})
        await s.list_versioned("thing")
        for build in (lambda t: t.incr_field("thing", "n", "count", 1),
                      lambda t: (t.alloc("i", "contiv:alloc:test", 1, 9),
                                 t.put("thing", "m", {"i": placeholder("i")}, subs=True))):
            t = Txn()
            build(t)
            await s.apply(t)
            _, items = await s.list_versioned("thing")
            self.assertEqual(items, await s.list("thing"))
        self.assertEqual(items, {"n": {"count": 2}, "m": {"i": 1}})

    @async_test
    async def test_another_writer_between_means_a_fresh_read(self):
        s, other = await self.store(), await self.store()
        await s.put_state("thing", "a", {"v": 1})
        await s.list_versioned("thing")
        await other.put_state("thing", "b", {"v": 2})
        await s.put_state("thing", "c", {"v": 3})
        _, items = await s.list_versioned("thing")
        self.assertEqual(items, {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}})

    def test_apply_to_replays_only_what_python_knows(self):
        t = Txn()
        t.put("thing", "a", {"v": 1})
        t.delete("thing", "gone")
        t.put("other", "x", {"v": 2})
        items = {"gone": {}, "kept": {"v": 0}}
        self.assertTrue(t.apply_to("thing", items))
        self.assertEqual(items, {"a": {"v": 1}, "kept": {"v": 0}})
        t.incr_field("thing", "a", "v", 1)
        self.assertFalse(t.apply_to("thing", {}))
        self.assertTrue(t.apply_to("other", {}))


class ConcurrencyTests(StoreTestBase):
    @async_test
    async def test_guard_conflict_then_transact_retries(self):
        s = await self.store()
        await s.put_state("tenant", "t", {"n": 1})
        raw = await s.get_raw("tenant", "t")
        await s.put_state("tenant", "t", {"n": 2})
        t = Txn()
        t.guard_eq("tenant", "t", raw)
        t.put("tenant", "t", {"n": 99})
        with self.assertRaises(Conflict):
            await s.apply(t)

        async def bump(view):
            cur = await view.get("tenant", "t")
            view.txn.put("tenant", "t", {"n": cur["n"] + 1})
            return cur["n"] + 1

        results = await defer.gatherResults(
            [defer.ensureDeferred(transact(s, bump)) for _ in range(20)])
        self.assertEqual(sorted(results), list(range(3, 23)))
        self.assertEqual(await s.get("tenant", "t"), {"n": 22})

    @async_test
    async def test_finish_answers_with_the_committing_attempts_result(self):
        s = await self.store()
        await s.put_state("tenant", "t", {"n": 1})
        attempts = []

        async def create(view):
            cur = await view.get("tenant", "t")
            attempts.append(cur["n"])
            if len(attempts) == 1:
                await s.put_state("tenant", "t", {"n": 2})  # a concurrent writer: conflict
            view.txn.alloc("x", "contiv:alloc:test", 1, 9)
            view.txn.put("tenant", "t", {"n": cur["n"] + 1})
            return Finish(lambda r: (cur["n"], r.allocs["x"]))

        self.assertEqual(await transact(s, create), (2, 1))
        self.assertEqual(attempts, [1, 2])

        async def nothing(view):
            await view.get("tenant", "t")
            return Finish(lambda r: r.rev)

        rev = await s.revision()
        with self.assertRaises(TypeError):
            await transact(s, nothing)
        self.assertEqual(await s.revision(), rev)

    @async_test
    async def test_two_clients_allocate_distinct(self):
        a, b = await self.store(), await self.store()

        async def one(s):
            t = Txn()
            t.alloc("ip", K.ip_bitmap("t:n"), 1, 1000, full="exhausted")
            return (await s.apply(t)).allocs["ip"]

        got = await defer.gatherResults(
            [defer.ensureDeferred(one(a if i % 2 else b)) for i in range(300)])
        self.assertEqual(sorted(got), list(range(1, 301)))


class PureTests(unittest.TestCase):
    def test_runs(self):
        data = bytes([0b01100000, 0xFF, 0x00, 0b00000001])
        self.assertEqual(bitmap.runs(data, 0, 31, 1), [(1, 2), (8, 15), (31, 31)])
        self.assertEqual(bitmap.runs(data, 0, 40, 0), [(0, 0), (3, 7), (16, 30), (32, 40)])
        self.assertEqual(bitmap.count(data, 2, 31), 10)
        self.assertEqual(bitmap.range_string([(1, 2), (5, 5)], str), "1-2, 5")

    def test_urls(self):
        u = RedisURL.parse("redis://:pw@10.0.0.1:6380/2")
        self.assertEqual((u.host, u.port, u.db, u.password, u.path), ("10.0.0.1", 6380, 2, "pw", None))
        u = RedisURL.parse("unix:///run/redis.sock?db=3")
        self.assertEqual((u.path, u.db), ("/run/redis.sock", 3))
        self.assertRaises(ValueError, RedisURL.parse, "http://x")


class ConnectRetryingTests(unittest.TestCase):
    """The host-side readers' connect: back-off while Redis is away, one warning per outage."""

    def test_backs_off_until_redis_answers_and_logs_the_outage_once(self):
        from twisted.internet.task import Clock
        from twisted.logger import globalLogPublisher
        from contiv_sdn.store.store import connect_retrying

        clock, attempts, events = Clock(), [], []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        async def factory(url):
            attempts.append(clock.seconds())
            if len(attempts) < 4:
                raise ConnectionRefusedError("no redis yet")
            return "a store"

        d = defer.ensureDeferred(connect_retrying("unix:///nowhere", lambda: True, "test",
                                                  factory=factory, clock=clock))
        for _ in range(10):
            clock.advance(5)
        self.assertEqual(self.successResultOf(d), "a store")
        self.assertEqual(attempts, [0, 5, 10, 15])  # 0.5, 1, 2 s waits, advanced 5 s a step
        warnings = [e for e in events if "not reachable" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertTrue(any("reachable again" in e.get("log_format", "") for e in events))

    def test_gives_up_when_told_to(self):
        from twisted.internet.task import Clock
        from contiv_sdn.store.store import connect_retrying
        clock, running = Clock(), [True]

        async def factory(url):
            running[0] = False  # stopped while the first attempt failed
            raise ConnectionRefusedError("no redis")

        d = defer.ensureDeferred(connect_retrying("unix:///nowhere", lambda: running[0], "test",
                                                  factory=factory, clock=clock))
        clock.advance(1)
        self.assertIsNone(self.successResultOf(d))
