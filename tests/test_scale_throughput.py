"""Transactions read intent objects from the store's cache without asking
Redis (issue 8, control-plane throughput); these prove that this never lets
a stale read through: a commit built on a stale cache conflicts and re-reads
Redis, and an answer that commits nothing (a refusal, a no-op) is checked
against Redis's kind versions before it is given."""

from __future__ import annotations

from contiv_sdn.store import Txn, View, transact
from tests.test_fnd_helpers import async_test
from tests.test_fnd_store import StoreTestBase

KIND = "obj:thing"


class Missing(Exception):
    """A refusal made from what the transaction read."""


async def bump(store, key: str = "a") -> int:
    """Read-modify-write of one intent record: lost updates would show."""

    async def fn(view: View) -> int:
        rec = await view.get(KIND, key) or {"n": 0}
        rec["n"] += 1
        view.txn.put(KIND, key, rec)
        return rec["n"]

    return await transact(store, fn)


def count_calls(store) -> list:
    """Record the name of every Redis call the store makes from now on."""
    calls = []
    real = store._call

    async def call(what, fn, write=False):
        calls.append(what)
        return await real(what, fn, write)

    store._call = call
    return calls


class CachedIntentReads(StoreTestBase):
    @async_test
    async def test_a_warm_transaction_is_one_round_trip(self):
        s = await self.store()
        await bump(s)
        calls = count_calls(s)
        self.assertEqual(await bump(s), 2)
        self.assertEqual(calls, ["APPLY"])

    @async_test
    async def test_another_writer_in_between_is_never_lost(self):
        a, b = await self.store(), await self.store()
        for _ in range(5):
            await bump(a)
            await bump(b)
        self.assertEqual(await bump(a), 11)
        self.assertEqual((await b.get(KIND, "a"))["n"], 11)

    @async_test
    async def test_text_written_differently_is_read_from_redis(self):
        # same record, other spelling (another writer's JSON encoder): the
        # cache cannot reproduce its text, so its guard fails and the retry reads Redis
        s, other = await self.store(), await self.store()
        await bump(s)
        t = Txn()
        t.put(KIND, "a", '{ "n" : 7 }')
        await other.apply(t)
        self.assertEqual(await bump(s), 8)
        self.assertEqual(await bump(s), 9)

    @async_test
    async def test_a_refusal_from_a_stale_cache_is_checked(self):
        a, b = await self.store(), await self.store()
        await bump(a, "seed")  # a caches the kind; "late" does not exist yet
        await bump(b, "late")

        async def needs_late(view: View) -> int:
            rec = await view.get(KIND, "late")
            if rec is None:
                raise Missing("late not found")
            view.txn.put(KIND, "late", {"n": rec["n"] + 1})
            return rec["n"] + 1

        self.assertEqual(await transact(a, needs_late), 2)

    @async_test
    async def test_a_refusal_that_holds_is_given(self):
        s = await self.store()
        await bump(s, "seed")

        async def refuse(view: View):
            if await view.get(KIND, "absent") is None:
                raise Missing("absent not found")

        with self.assertRaises(Missing):
            await transact(s, refuse)

    @async_test
    async def test_an_answer_without_writes_from_a_stale_cache_is_checked(self):
        a, b = await self.store(), await self.store()
        await bump(a)
        await bump(b)

        async def read(view: View) -> int:
            listed = await view.list(KIND)
            return listed["a"]["n"]

        self.assertEqual(await transact(a, read), 2)

    @async_test
    async def test_listing_from_the_cache_guards_the_whole_kind(self):
        a, b = await self.store(), await self.store()
        await bump(a, "x")
        await bump(a, "y")

        async def total(view: View) -> int:
            n = sum(r["n"] for r in (await view.list(KIND)).values())
            view.txn.put(KIND, "total", {"n": n})
            return n

        await bump(b, "z")  # a's cache lacks z: its first attempt must conflict
        self.assertEqual(await transact(a, total), 3)
        self.assertEqual((await b.get(KIND, "total"))["n"], 3)
