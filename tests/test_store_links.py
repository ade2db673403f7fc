"""Server-side link-set edits (``Txn.link``, the APPLY script's ``link`` op).

What they must keep: the record a link edit leaves is the record the old
read-edit-write left (same JSON value, every other field untouched), the
Python twin (:func:`contiv_sdn.store.links.splice`) that patches the cache
writes exactly the script's text, concurrent edits from two connections lose
no member, and what a tenant's GET answers after creates and deletes is what
it answered when the tenant was rewritten by every create.
"""

from __future__ import annotations

import json
import random

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.model import TYPES
from contiv_sdn.model.wire import to_wire
from contiv_sdn.store import Store, Txn
from contiv_sdn.store import keys as K
from contiv_sdn.store import links as L
from contiv_sdn.store.txn import LinksNeedRead
from contiv_sdn.testing import RedisServer, require_binary
from tests.test_fnd_helpers import async_test, gather_all, master_on_redis, post_object

KIND = "obj:tenant"
SETS = ("AppProfiles", "EndpointGroups", "NetProfiles", "Networks", "Policies", "Servicelbs")
SET_TYPE = {"AppProfiles": "appProfile", "EndpointGroups": "endpointGroup",
            "NetProfiles": "netprofile", "Networks": "network", "Policies": "policy",
            "Servicelbs": "serviceLB"}
#: member keys: model keys, plus ones the splice must refuse (and the old way handle)
KEYS = ["t:a", "t:b", "t:web", "t:db", "Networks", "type", "t:x.y", "t:a_b-c",
        'od"d', "br{ace}", "back\\slash", "", "t:é"]


def dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def edit(obj: dict, set_name: str, member: str, add: bool) -> None:
    """Work.add_to_set / remove_from_set's edit of a read record (the oracle)."""
    members = obj.setdefault("link-sets", {}).setdefault(set_name, {})
    if add:
        members[member] = {"type": SET_TYPE[set_name], "key": member}
    else:
        members.pop(member, None)


class LinkOpTests(unittest.TestCase):
    def setUp(self):
        require_binary("redis-server")
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    async def store(self) -> Store:
        s = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(s.close()))
        return s

    async def link(self, store: Store, key: str, set_name: str, member: str,
                   add: bool) -> bool:
        """One link edit through the script; False when it answered "slow"
        (nothing written) or the names cannot be spliced."""
        txn = Txn()
        if not txn.link(KIND, key, set_name, member,
                        (SET_TYPE[set_name], member) if add else None):
            return False
        try:
            await store.apply(txn)
        except LinksNeedRead:
            return False
        return True

    @async_test
    async def test_script_edit_equals_read_edit_write_and_its_python_twin(self):
        """Random add/remove sequences on tenant records (with awkward member
        keys already in them): the script's record parses to the old edit's
        object, the twin reproduces its text byte for byte, and an edit it
        cannot prove writes nothing (the caller then edits the old way)."""
        store = await self.store()
        rng = random.Random(8)
        spliced = slow = 0
        for trial in range(6):
            key = f"t{trial}"
            model = {"key": key, "tenantName": key, "defaultNetwork": "",
                     "link-sets": {s: {} for s in SETS}, "links": {}}
            for _ in range(rng.randrange(0, 4)):  # pre-existing members, some awkward
                edit(model, rng.choice(SETS), rng.choice(KEYS), True)
            if trial == 5:
                del model["link-sets"]["Policies"]  # a set that is not there: slow
            await store.hset_raw(K.hash_of(KIND), key, dumps(model))
            for _ in range(120):
                set_name, member = rng.choice(SETS), rng.choice(KEYS)
                add = rng.random() < 0.6
                before = await store.hget_raw(K.hash_of(KIND), key)
                if await self.link(store, key, set_name, member, add):
                    after = await store.hget_raw(K.hash_of(KIND), key)
                    twin = L.splice(before, set_name, L.key_text(member),
                                    L.link_text(SET_TYPE[set_name], member) if add else None)
                    self.assertEqual(after, before if twin is None else twin)
                    spliced += 1
                else:
                    self.assertEqual(await store.hget_raw(K.hash_of(KIND), key), before)
                    obj = json.loads(before)
                    edit(obj, set_name, member, add)
                    await store.hset_raw(K.hash_of(KIND), key, dumps(obj))
                    slow += 1
                edit(model, set_name, member, add)
                self.assertEqual(json.loads(await store.hget_raw(K.hash_of(KIND), key)), model)
        # both paths were exercised
        self.assertGreater(spliced, 100)
        self.assertGreater(slow, 100)

    @async_test
    async def test_model_keys_are_always_spliced(self):
        """With model keys only (what the handlers link), every edit takes the
        server-side path except: an add whose key is already a member of that
        set or of a set after it, and a removal of a key absent from the set
        but in a set after it (the splice does not look for the set's end,
        so it cannot tell these apart and lets the caller read the record)."""
        store = await self.store()
        rng = random.Random(9)
        model = {"key": "t", "tenantName": "t", "defaultNetwork": "",
                 "link-sets": {s: {} for s in SETS}, "links": {}}
        await store.hset_raw(K.hash_of(KIND), "t", dumps(model))
        for _ in range(300):
            set_name, member = rng.choice(SETS), f"t:m{rng.randrange(12)}"
            add = rng.random() < 0.5
            here = member in model["link-sets"][set_name]
            later = any(member in model["link-sets"][other]
                        for other in SETS[SETS.index(set_name) + 1:])
            done = await self.link(store, "t", set_name, member, add)
            fast = not (here or later) if add else (here or not later)
            self.assertEqual(done, fast, (set_name, member, add))
            if not done:
                continue
            edit(model, set_name, member, add)
            self.assertEqual(json.loads(await store.hget_raw(K.hash_of(KIND), "t")), model)

    @async_test
    async def test_absent_record_is_left_absent(self):
        store = await self.store()
        self.assertTrue(await self.link(store, "nobody", "Networks", "t:a", True))
        self.assertIsNone(await store.hget_raw(K.hash_of(KIND), "nobody"))

    @async_test
    async def test_concurrent_edits_from_two_connections_lose_no_member(self):
        """Two netmasters (two connections) adding and removing members of one
        tenant at once: the result holds exactly the members added and not
        removed, and every edit took the server-side path (no conflict)."""
        a, b = await self.store(), await self.store()
        model = {"key": "t", "tenantName": "t", "defaultNetwork": "",
                 "link-sets": {s: {} for s in SETS}, "links": {}}
        await a.hset_raw(K.hash_of(KIND), "t", dumps(model))
        adds = [(a if i % 2 else b, f"t:n{i}") for i in range(200)]
        done = await gather_all(defer.ensureDeferred(self.link(s, "t", "Networks", m, True))
                                for s, m in adds)
        self.assertTrue(all(done))
        removed = [f"t:n{i}" for i in range(0, 200, 3)]
        done = await gather_all(
            defer.ensureDeferred(self.link(a if i % 2 else b, "t", "Networks", m, False))
            for i, m in enumerate(removed))
        self.assertTrue(all(done))
        stored = json.loads(await a.hget_raw(K.hash_of(KIND), "t"))
        want = {m for _, m in adds} - set(removed)
        self.assertEqual(set(stored["link-sets"]["Networks"]), want)
        for m in want:
            self.assertEqual(stored["link-sets"]["Networks"][m], {"type": "network", "key": m})


class TenantWireTests(unittest.TestCase):
    async def run_sequence(self):
        """Creates, refusals and deletes of networks and groups in two tenants;
        the tenants' and networks' GET (wire) form afterwards."""
        store, master, _ = await master_on_redis(self)
        await post_object(master, "tenant", "blue", {"tenantName": "blue"})
        errors = []
        for i in range(12):
            tenant = "default" if i % 3 else "blue"
            try:
                await post_object(master, "network", f"{tenant}:n{i}", {
                    "tenantName": tenant, "networkName": f"n{i}", "encap": "vxlan",
                    "subnet": f"10.1.{i // 2}.0/24"})  # every other one overlaps: refused
            except Exception as e:  # noqa: BLE001 - the refusal text is compared
                errors.append(str(e))
        await post_object(master, "endpointGroup", "default:g1", {
            "tenantName": "default", "groupName": "g1", "networkName": "n1"})
        for key in ("default:n4", "blue:n6", "default:missing"):
            try:
                await master.delete("network", key)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
        out = {}
        for kind in ("tenant", "network", "endpointGroup"):
            for obj in await master.list(kind):
                out[f"{kind} {obj['key']}"] = to_wire(TYPES[kind], obj)
        return out, errors

    @async_test
    async def test_get_is_what_the_read_edit_write_gave(self):
        fast, fast_errors = await self.run_sequence()
        # the old way: every link edit refused by the splice, so Work reads the
        # parent, edits it and writes it whole
        self.patch(Txn, "link", lambda self, *args, **kwargs: False)
        slow, slow_errors = await self.run_sequence()
        self.assertEqual(fast, slow)
        self.assertEqual(fast_errors, slow_errors)
        # and it is the set of networks the tenant has
        self.assertEqual(set(fast["tenant default"]["link-sets"]["Networks"]),
                         {k.split(" ", 1)[1] for k, v in fast.items()
                          if k.startswith("network default:")})
        self.assertTrue(fast["tenant default"]["link-sets"]["Networks"])
        self.assertIn("default:g1", fast["tenant default"]["link-sets"]["EndpointGroups"])
        self.assertTrue(fast_errors)
