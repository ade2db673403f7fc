"""Redis replies parsed whole (``contiv_sdn.store.replies``), against a real Redis.

txredisapi's own parser takes one reactor turn per bulk string of a reply; ours
takes none.  The replies must be the same objects, in the same order, however the
reads are cut.
"""

from __future__ import annotations

import json
import random

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

import txredisapi

from contiv_sdn.store import Store, replies
from contiv_sdn.testing import RedisServer, require_binary

FIELDS = 3000


def _value(i: int) -> str:
    """Values of every shape a record or a reply element can take."""
    kind = i % 7
    if kind == 0:
        return ""
    if kind == 1:
        return str(i)  # (txredisapi turns a numeric text into a number; _s makes it text again)
    if kind == 2:
        return "é∂" * (i % 50)
    if kind == 3:
        return "x" * (i % 3000)
    return json.dumps({"id": f"{i:064x}", "ip": f"10.{i % 250}.0.1", "pad": "y" * (i % 400)})


class WholeReadsTests(TestCase):
    timeout = 120

    async def _setUp(self):
        require_binary("redis-server")
        self.redis = RedisServer(appendonly=False).start()
        self.addCleanup(self.redis.stop)
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        conn = self.store._conn
        for at in range(0, FIELDS, 500):
            args = []
            for i in range(at, min(at + 500, FIELDS)):
                args += [f"f{i}", _value(i)]
            await conn.execute_command("HSET", "h", *args)

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    def _cut_reads(self, seed: int) -> None:
        """Every read the store's connections get is handed over in random pieces."""
        rnd = random.Random(seed)
        whole = replies.WholeReads.dataReceived

        def cut(proto, data, unpause=False):
            i = 0
            while i < len(data):
                n = rnd.choice((1, 2, 3, 5, 8, 13, 64, 700, 4096))
                whole(proto, data[i:i + n], unpause)
                i += n
        self.patch(replies.WholeReads, "dataReceived", cut)

    async def _everything(self):
        s = self.store
        out = {}
        cursor, scanned = 0, {}
        while True:
            cursor, part = await s.hscan_raw("h", cursor, 150)
            scanned.update(part)
            if cursor == 0:
                break
        out["hscan"] = scanned
        out["hgetall"] = await s.hgetall_raw("h")
        out["hget"] = [await s.hget_raw("h", f"f{i}") for i in (0, 1, 2, 3, 4, 2999)]
        out["missing"] = await s.hget_raw("h", "nope")
        conn = s._conn
        out["nested"] = await conn.execute_command(
            "EVAL", "return {1, {'a', {}, {2, 'b'}}, 'c', redis.status_reply('OK')}", 0)
        out["empty"] = await conn.execute_command("HGETALL", "no-such-hash")
        try:
            await conn.execute_command("HGET", "h")  # wrong number of arguments
        except txredisapi.ResponseError as e:
            out["error"] = str(e)
        out["after_error"] = await s.hget_raw("h", "f4")
        return out

    async def test_replies_are_the_same_however_the_reads_are_cut(self):
        expected = {f"f{i}": _value(i) for i in range(FIELDS)}
        plain = await self._everything()
        self.assertEqual(plain["hscan"], expected)
        self.assertEqual(plain["hgetall"], expected)
        self.assertEqual(plain["hget"], [_value(i) for i in (0, 1, 2, 3, 4, 2999)])
        self.assertIsNone(plain["missing"])
        self.assertEqual(plain["nested"], [1, [b"a", [], [2, b"b"]], b"c", "OK"])
        self.assertEqual(plain["empty"], [])
        self.assertIn("wrong number of arguments", plain["error"])
        self.assertEqual(plain["after_error"], _value(4))
        for seed in range(3):
            self._cut_reads(seed)
            self.assertEqual(await self._everything(), plain, f"reads cut with seed {seed}")

    async def test_a_reply_is_parsed_in_the_turn_it_arrives(self):
        """txredisapi's parser put the rest of a read off to the next reactor turn after
        every bulk string (an HGETALL of 3000 fields: 6000 turns); this one never does."""
        later = []
        real = txredisapi.LineReceiver.callLater

        def counting(delay, *args, **kw):
            if delay == 0:  # (not the reply timeouts)
                later.append(args)
            return real(delay, *args, **kw)
        self.patch(txredisapi.LineReceiver, "callLater", staticmethod(counting))
        got = await self.store.hgetall_raw("h")
        self.assertEqual(len(got), FIELDS)
        self.assertEqual(later, [])
        # the same read through txredisapi's own parser: put off once per bulk string
        from contiv_sdn.store import store as store_module
        self.patch(store_module._Pool, "protocol", txredisapi.RedisProtocol)
        theirs = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(theirs.close()))
        self.assertEqual(await theirs.hgetall_raw("h"), got)
        self.assertGreater(len(later), FIELDS)

    async def test_the_change_feed_parses_whole_reads_too(self):
        """A published change reaches the subscriber (its protocol parses whole reads)."""
        got = defer.Deferred()
        resynced = defer.Deferred()

        def changed(kind, key, op, rev):
            if not got.called:
                got.callback((kind, key, op))

        self.store.subscribe(changed, lambda: resynced.called or resynced.callback(None))
        await resynced
        await self.store.put_state("endpoint", "e1", {"id": "e1"})
        d = got
        d.addTimeout(10, reactor)
        self.assertEqual((await d)[:2], ("endpoint", "e1"))
