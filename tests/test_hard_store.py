"""A store transaction writes everything or nothing, whatever it is given and
whatever Redis holds: the APPLY script checks its whole program and the type of
every key it touches before its first write (a real redis-server)."""

from __future__ import annotations

import json

from twisted.trial import unittest

from contiv_sdn.store import StoreError, Txn, placeholder
from contiv_sdn.store import keys as K
from contiv_sdn.store.consistency import problems
from contiv_sdn.store.lua import APPLY
from tests.test_fnd_store import StoreTestBase, async_test


class AllOrNothing(StoreTestBase):
    async def fingerprint(self, s):
        """Everything a transaction could have written: revision, versions, records, bits."""
        conn = s._conn
        keys = sorted(k.decode() if isinstance(k, bytes) else k
                      for k in await conn.execute_command("KEYS", "*"))
        out = {}
        for k in keys:
            t = await conn.execute_command("TYPE", k)
            t = t.decode() if isinstance(t, bytes) else t
            if t == "hash":
                out[k] = sorted((await s.hgetall_raw(k)).items())
            elif t == "string":
                out[k] = await s.get_bytes(k)
            elif t == "set":
                out[k] = sorted(await conn.execute_command("SMEMBERS", k))
        return out

    def txn_with_everything(self) -> Txn:
        txn = Txn()
        txn.alloc("n", "contiv:alloc:test", 1, 100)
        txn.put("thing", "a", {"n": placeholder("n")}, subs=True)
        txn.incr_field("thing", "counter", "c", 1)
        txn.setbit("contiv:alloc:other", 5, 1)
        txn.raw_set("contiv:idx:test", placeholder("n", "int"), "a", subs=True)
        return txn

    @async_test
    async def test_a_key_of_the_wrong_type_refuses_before_any_write(self):
        s = await self.store()
        await s.put_state("thing", "counter", {"c": 1})
        # the transaction's last write targets a key that is not a hash: before the
        # fix the allocation, the record and the revision were written, then it failed
        await s._conn.execute_command("SET", "contiv:idx:test", "not a hash")
        before = await self.fingerprint(s)
        with self.assertRaises(StoreError) as e:
            await s.apply(self.txn_with_everything())
        self.assertIn("contiv:idx:test holds a string, not a hash", str(e.exception))
        self.assertEqual(await self.fingerprint(s), before)

    @async_test
    async def test_an_undecodable_record_refuses_before_any_write(self):
        s = await self.store()
        await s._conn.execute_command("HSET", K.hash_of("thing"), "counter", "{not json")
        before = await self.fingerprint(s)
        with self.assertRaises(StoreError) as e:
            await s.apply(self.txn_with_everything())
        self.assertIn("record contiv:state:thing counter", str(e.exception))
        self.assertEqual(await self.fingerprint(s), before)

    @async_test
    async def test_a_non_numeric_revision_refuses_before_any_write(self):
        s = await self.store()
        await s._conn.execute_command("SET", K.REV, "x")
        before = await self.fingerprint(s)
        with self.assertRaises(StoreError):
            await s.apply(self.txn_with_everything())
        self.assertEqual(await self.fingerprint(s), before)

    @async_test
    async def test_malformed_programs_are_refused_whole(self):
        """Programs Python would never build (a NaN field, a number as a key, a
        placeholder naming no allocation): the script refuses, nothing written."""
        s = await self.store()
        await s.put_state("thing", "counter", {"c": 1})
        before = await self.fingerprint(s)
        good = {"t": "put", "k": "thing", "h": K.hash_of("thing"), "f": "b", "vi": 2}
        for bad_op in [
            {"t": "put", "k": "thing", "h": K.hash_of("thing"), "f": 12, "vi": 2},
            {"t": "put", "k": "thing", "h": K.hash_of("thing"), "f": "x", "vi": 9},
            {"t": "put", "k": "thing", "h": K.hash_of("thing"), "f": "x", "vi": 2, "subs": True,
             "_v": '{"n":"$$nosuch$$"}'},
            {"t": "setbit", "b": "contiv:alloc:x", "pos": -1, "v": 1},
            {"t": "setbit", "b": "contiv:alloc:x", "pos": 1.5, "v": 1},
            {"t": "jincr", "k": "thing", "h": K.hash_of("thing"), "f": "counter", "field": "c",
             "by": "1"},
            {"t": "nosuch"},
        ]:
            value = bad_op.pop("_v", '{"a":1}')
            program = json.dumps({"guards": [], "checks": [], "allocs": [],
                                  "ops": [good, bad_op]})
            raw = await s._conn.eval(APPLY, [], [program, value])
            out = json.loads(raw)
            self.assertIn("error", out, bad_op)
            self.assertTrue(out["error"].startswith("invalid store transaction"), out)
            self.assertEqual(await self.fingerprint(s), before, bad_op)
        # guard and check types the Python side does not build are refused too
        for part, bad in [("guards", {"t": "exists", "key": "contiv:rev", "v": True}),
                          ("checks", {"t": "isset", "b": "contiv:alloc:x", "pos": 1,
                                      "err": "e"}),
                          ("checks", {"t": "fail"})]:
            prog = {"guards": [], "checks": [], "allocs": [], "ops": [good]}
            prog[part] = [bad]
            out = json.loads(await s._conn.eval(APPLY, [], [json.dumps(prog), '{"a":1}']))
            self.assertTrue(out.get("error", "").startswith("invalid store transaction"), bad)
            self.assertEqual(await self.fingerprint(s), before, bad)
        # NaN never leaves Python: json refuses it before Redis is asked
        txn = Txn()
        with self.assertRaises(ValueError):
            txn.put("thing", "nan", {"v": float("nan")})
            await s.apply(txn)
        txn = Txn()
        txn.delete("thing", float("nan"))  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            await s.apply(txn)
        self.assertEqual(await self.fingerprint(s), before)


class ConsistencyCheckTests(unittest.TestCase):
    """The checker itself must find what it is meant to find (plain data)."""

    def base(self):
        data = {
            "tenant": {"default": {"vrfId": 1}}, "obj:tenant": {"default": {}},
            "network": {"default:n": {"key": "default:n", "encap": "vxlan", "vni": 5,
                                      "localVlan": 1, "netId": 1, "subnetIP": "10.0.0.0",
                                      "subnetLen": 24, "gateway": "10.0.0.1", "epCount": 1}},
            "obj:network": {"default:n": {}},
            "endpoint": {"e1": {"network": "default:n", "ipAddress": "10.0.0.2"}},
        }
        owners = {"default:n": {"10.0.0.2": "e1"}}
        ip_bits = {"default:n": {1, 2}}
        tags = {K.ALLOC_VXLAN: {5}, K.ALLOC_LOCAL_VLAN: {1}, K.ALLOC_NET_ID: {1},
                K.ALLOC_VRF_ID: {1}}
        return data, owners, ip_bits, {}, tags

    def test_consistent_state_has_no_problems(self):
        self.assertEqual(problems(*self.base()), [])

    def test_each_kind_of_breakage_is_found(self):
        cases = []
        d, o, i, p, t = self.base()
        d["network"]["default:n"]["epCount"] = 2
        cases.append(((d, o, i, p, t), "epCount 2 but 1 endpoints"))
        d, o, i, p, t = self.base()
        o["default:n"] = {}
        cases.append(((d, o, i, p, t), "address index of default:n has 10.0.0.2 -> None"))
        d, o, i, p, t = self.base()
        o["default:n"]["10.0.0.9"] = "ghost"
        cases.append(((d, o, i, p, t), "endpoint ghost does not hold it"))
        d, o, i, p, t = self.base()
        i["default:n"].add(7)
        cases.append(((d, o, i, p, t), "address bit 7 set without an owner"))
        d, o, i, p, t = self.base()
        t[K.ALLOC_NET_ID].add(9)
        cases.append(((d, o, i, p, t), "bit 9 set without an owner"))
        d, o, i, p, t = self.base()
        del d["obj:network"]["default:n"]
        cases.append(((d, o, i, p, t), "state without config"))
        for args, text in cases:
            found = problems(*args)
            self.assertTrue(any(text in f for f in found), (text, found))
        d, o, i, p, t = self.base()
        i["default:n"].add(7)
        self.assertEqual(problems(d, o, i, p, t, reserved=[("default:n", "10.0.0.7")]), [])
