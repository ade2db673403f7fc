"""Blast radius of bad state is one owner (issue 18, item 1).

Records that cannot be compiled — from older versions, other writers or a hand on
``redis-cli`` — are planted straight into the state hashes, bypassing the API.
The controller must refuse each one, log it once (kind, key, reason), and keep
programming everything else on every switch.

Plain-data tests cover :func:`build_checked`, the compiler's per-owner isolation
and the controller's per-switch isolation; :class:`PlantedBadRecordsTests` runs a
real Redis and a real OVS with two switches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
from typing import Any, Dict, List

import txredisapi
from twisted.internet import defer, threads
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from contiv_sdn.controller.service import Controller, ReportOnce
from contiv_sdn.controller.snapshot import build_checked, build_snapshot, parse_record
from contiv_sdn.lab.ovs import OvsInstance
from contiv_sdn.pipeline.compiler import compile_all, compile_hosts, compile_switch, CompileError, diagnose
from contiv_sdn.pipeline.state import _frozen
from contiv_sdn.store import Store
from contiv_sdn.store import keys as K
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary, require_root
from contiv_sdn.testing.wait import wait_for
from tests.test_ctrl_snapshot import _data
from tests.test_pip_compiler import build as build_fabric

GOOD_EP = {"network": "default:contiv-net", "group": "", "ipAddress": "20.1.1.9",
           "macAddress": "02:02:14:01:01:09", "homingHost": "node1", "intfName": "cve9"}

#: kind, key, stored value (as Redis would hold it), words the refusal must contain
BAD_RECORDS = [
    ("endpoint", "bad-host", dict(GOOD_EP, homingHost={"a": 1}), "homingHost of type string"),
    ("endpoint", "bad-intf", dict(GOOD_EP, intfName=["x"]), "intfName of type string"),
    ("endpoint", "bad-ip", dict(GOOD_EP, ipAddress=5), "ipAddress of type string"),
    ("endpoint", "bad-list", [1, 2], "cannot unmarshal array"),
    ("endpoint", "bad-text", "this is not JSON", "not JSON"),
    ("endpoint", "bad-nan", '{"ipAddress": NaN}', "not JSON"),
    ("network", "default:abc", {"netId": "abc", "encap": "vxlan", "vni": 5}, "netId of type int"),
    ("network", "default:huge", {"netId": 1 << 40, "encap": "vxlan", "vni": 5}, "out of range"),
    ("endpointGroup", "default:g", {"epgId": {"x": 1}, "network": "default:contiv-net"}, "epgId"),
    ("host", "node9", {"vtepIP": ["1.1.1.1"], "dpid": 99}, "vtepIP"),
    ("tenant", "t9", {"vrfId": True}, "vrfId of type int"),
]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stored(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _with_bad(data: Dict[str, Any]) -> Dict[str, Any]:
    """``data`` plus every bad record, each as the controller's mirror holds it."""
    out = {kind: dict(records) for kind, records in data.items()}
    for kind, key, value, _words in BAD_RECORDS:
        out.setdefault(kind, {})[key] = parse_record(_stored(value))
    return out


class BuildCheckedTests(TestCase):
    def test_each_bad_record_is_refused_and_the_rest_is_unchanged(self):
        good = build_snapshot(3, _data(), {11: {"cve1": 5}})
        built = build_checked(3, _with_bad(_data()), {11: {"cve1": 5}})
        self.assertEqual(built.snapshot, good)
        got = {(r.kind, r.key): r.reason for r in built.refused}
        self.assertEqual(set(got), {(k, key) for k, key, _v, _w in BAD_RECORDS})
        for kind, key, _value, words in BAD_RECORDS:
            self.assertIn(words, got[(kind, key)])
            self.assertNotIn("Traceback", got[(kind, key)])

    def test_a_good_record_passes_whatever_else_it_holds(self):
        data = _data()
        # (``labels`` is read now: pod labels give Kubernetes identities; junk goes elsewhere)
        data["endpoint"] = dict(data["endpoint"], e9=dict(GOOD_EP, containerName={"a": [1]},
                                                          extra=None, group=None, intfName=None))
        built = build_checked(1, data, {})
        self.assertEqual(built.refused, ())
        self.assertEqual(built.snapshot.endpoints["e9"].port, "")

    def test_refusal_fingerprint_follows_the_record(self):
        a = build_checked(1, {"endpoint": {"x": dict(GOOD_EP, intfName=["x"])}}, {}).refused
        b = build_checked(1, {"endpoint": {"x": dict(GOOD_EP, intfName=["x"])}}, {}).refused
        c = build_checked(1, {"endpoint": {"x": dict(GOOD_EP, intfName=["y"])}}, {}).refused
        self.assertEqual(a, b)
        self.assertEqual(a[0].reason, c[0].reason)
        self.assertNotEqual(a[0].fingerprint, c[0].fingerprint)

    def test_a_bad_global_record_is_refused(self):
        data = _data(**{"obj:global": {"global": {"fwdMode": 5}}})
        built = build_checked(1, data, {})
        self.assertEqual([(r.kind, r.key) for r in built.refused], [("obj:global", "global")])


class CompilerIsolationTests(TestCase):
    """Values of types nobody expected, past build_checked: one owner each."""

    def setUp(self):
        self.snap = build_fabric()
        self.good = compile_all(self.snap)

    def _replace(self, **tables):
        return dataclasses.replace(self.snap, **{k: _frozen(v) for k, v in tables.items()})

    def test_bad_endpoints_lose_their_own_flows_only(self):
        eps = dict(self.snap.endpoints)
        a = eps["a"]
        eps["zz1"] = dataclasses.replace(a, id="zz1", host={"a": 1})
        eps["zz2"] = dataclasses.replace(a, id="zz2", port=["x"], ip="10.1.1.99", mac="02:00:00:00:99:99")
        eps["zz3"] = dataclasses.replace(a, id="zz3", epg_id={"x": 1}, ip="10.1.1.98", mac="02:00:00:00:99:98")
        out = compile_hosts(self._replace(endpoints=eps), self.snap.hosts)
        self.assertEqual(dict(out.flows), self.good)
        self.assertEqual(sorted((f.kind, f.key) for f in out.failed),
                         [("endpoint", "zz1"), ("endpoint", "zz2"), ("endpoint", "zz3")])
        self.assertIn("unhashable", out.failed[0].reason)

    def test_a_network_whose_flows_break_the_tables_is_left_out(self):
        nets = dict(self.snap.networks)
        key = sorted(nets)[0]
        nets[key] = dataclasses.replace(nets[key], net_id=1 << 40)
        snap = self._replace(networks=nets)
        out = compile_hosts(snap, snap.hosts)
        self.assertIn(("network", key), {(f.kind, f.key) for f in out.failed})
        # its endpoints' flows carry its id too, so they go with it; everything else stays
        bad = {_cookie_of_net(key)} | _ep_cookies(self.snap, key)
        self.assertEqual({(f.kind, f.key) for f in out.failed},
                         {("network", key)} | {("endpoint", e.id) for e in self.snap.endpoints.values()
                                               if e.network == key})
        self.assertEqual(set(out.flows), set(self.good))
        for host, flows in out.flows.items():
            self.assertEqual(flows, {f for f in self.good[host] if f.cookie not in bad}, host)
        self.assertIn(f"network {key}: left out", "\n".join(diagnose(snap)))

    def test_a_host_that_cannot_compile_gets_no_result_not_an_empty_one(self):
        hosts = dict(self.snap.hosts)
        hosts["h1"] = dataclasses.replace(hosts["h1"], ports=[1])
        snap = self._replace(hosts=hosts)
        out = compile_hosts(snap, snap.hosts)
        self.assertNotIn("h1", out.flows)
        self.assertEqual([(f.kind, f.key) for f in out.failed], [("host", "h1")])
        self.assertEqual(out.flows["h2"], self.good["h2"])
        self.assertRaises(CompileError, compile_switch, snap, "h1")

    def test_compile_is_still_pure_and_canonical(self):
        eps = dict(self.snap.endpoints)
        eps["zz1"] = dataclasses.replace(eps["a"], id="zz1", host={"a": 1})
        snap = self._replace(endpoints=eps)
        self.assertEqual(compile_hosts(snap, snap.hosts), compile_hosts(snap, snap.hosts))


def _cookie_of_net(key: str) -> int:
    from contiv_sdn.pipeline.compiler import cookie_for
    return cookie_for("net", key)


def _ep_cookies(snap, net_key: str) -> set:
    from contiv_sdn.pipeline.compiler import cookie_for
    return {cookie_for("ep", e.id) for e in snap.endpoints.values() if e.network == net_key}


class ReportOnceTests(TestCase):
    def test_once_while_it_lasts_again_when_it_changes_or_returns(self):
        r = ReportOnce()
        self.assertEqual(r.update([("endpoint", "x", "bad", "f1")]), ([("endpoint", "x", "bad")], []))
        self.assertEqual(r.update([("endpoint", "x", "bad", "f1")]), ([], []))
        self.assertEqual(r.update([("endpoint", "x", "bad", "f2")]), ([("endpoint", "x", "bad")], []))
        self.assertEqual(r.update([]), ([], [("endpoint", "x")]))
        self.assertEqual(r.update([("endpoint", "x", "bad", "f2")]), ([("endpoint", "x", "bad")], []))


# --------------------------------------------------------------------------
# The controller on plain data: per-switch isolation.
# --------------------------------------------------------------------------
class _Switch:
    def __init__(self, ports: Dict[str, int]):
        self.ports = ports


class _Sync:
    """A FlowSync stand-in: applies what it is asked to a table and records the table
    after each call (``calls``); ``mode`` says how it answers."""

    def __init__(self, mode: str = "ok"):
        self.switch = _Switch({})
        self.mode = mode
        self.calls: List[frozenset] = []
        self.hanging: List[defer.Deferred] = []
        self.installed = None
        self.groups_installed: Dict = {}  # no services here: no groups to keep
        self.busy = False

    def invalidate(self) -> None:
        self.installed = None

    def apply(self, delta, full, groups=None, counts=None):
        if self.installed is None:
            desired = full()
            if desired is None:
                return defer.succeed(None)
            # the controller's full() is the engine's table (identity -> Flow)
            table = dict(desired)
        else:
            table = dict(self.installed)
            for ident, f in delta.items():
                if f is None:
                    table.pop(ident, None)
                else:
                    table[ident] = f
        self.calls.append(frozenset(table.values()))
        if self.mode == "fail":
            self.installed = None
            return defer.fail(RuntimeError("switch said no"))
        if self.mode == "hang":
            d = defer.Deferred()
            self.hanging.append(d)
            return d
        self.installed = table
        return defer.succeed(None)


class _MemoryStore:
    """The three reads the controller makes, from a dict of stored texts."""

    def __init__(self, data: Dict[str, Dict[str, Any]], bad: bool = False):
        self.raw = {K.hash_of(kind): {k: _stored(v) for k, v in recs.items()} for kind, recs in data.items()}
        for kind, key, value, _words in BAD_RECORDS if bad else ():
            self.raw.setdefault(K.hash_of(kind), {})[key] = _stored(value)

    async def revision(self) -> int:
        return 1

    async def hgetall_raw(self, key: str) -> Dict[str, str]:
        return dict(self.raw.get(key, {}))

    async def get_raw(self, kind: str, key: str):
        return self.raw.get(K.hash_of(kind), {}).get(key)


class ControllerIsolationTests(TestCase):
    def setUp(self):
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def _controller(self, data, syncs, bad=False):
        clock = Clock()
        ctl = Controller(_MemoryStore(data, bad), reactor=clock)
        ctl.running = True  # no listener, no subscription: runs are driven by hand
        ctl.SLICE = 60.0  # never give the (fake) reactor a turn in the middle of a run
        for dpid, sync in syncs.items():  # as if each switch had connected (the registry owns syncs)
            ctl.registry._switches[dpid] = sync.switch
            ctl.registry._syncs[dpid] = sync
        return ctl, clock

    def _one_run(self, ctl, clock, steps=0):
        d = defer.ensureDeferred(ctl._run())
        for _ in range(steps):
            clock.advance(ctl.CONVERGE_WAIT)
        self.successResultOf(d)

    def _lines(self, needle):
        return [formatEvent(e) for e in self.events if needle in (e.get("log_format") or "")]

    def test_bad_records_logged_once_across_runs_and_good_switches_programmed(self):
        syncs = {11: _Sync(), 12: _Sync()}
        ctl, clock = self._controller(_data(), syncs, bad=True)
        for _ in range(3):
            ctl._need_full = True
            self._one_run(ctl, clock)
        lines = self._lines("is unusable")
        self.assertEqual(len(lines), len(BAD_RECORDS), "\n".join(lines))
        for kind, key, _v, _w in BAD_RECORDS:
            self.assertEqual(len([l for l in lines if f"stored {kind} {key} is unusable" in l]), 1, key)
        self.assertTrue(all("\n" not in l for l in lines))
        self.assertFalse([e for e in self.events if "log_failure" in e])
        good = compile_all(build_snapshot(1, _data(), {11: {}, 12: {}}))
        self.assertEqual(syncs[11].calls[-1], good["node1"])
        self.assertEqual(syncs[12].calls[-1], good["node2"])

    def test_a_failing_switch_does_not_stop_the_others(self):
        syncs = {11: _Sync("fail"), 12: _Sync()}
        ctl, clock = self._controller(_data(), syncs)
        self._one_run(ctl, clock)
        self.assertEqual(len(syncs[12].calls), 1)
        self.assertTrue(ctl._pending is not None and ctl._pending.active())  # a retry, in 1 s
        self.flushLoggedErrors(RuntimeError)

    def test_the_duty_cycle_pause_counts_from_the_end_of_the_run(self):
        """A run that took (CPU) time d makes the next change wait about d — but only a
        change that arrives right after it: one arriving after the reactor was idle
        that long is compiled at once (the first change after a large converge used to
        wait the whole pause: the p99 of every scale bench)."""
        syncs = {11: _Sync()}
        ctl, clock = self._controller(_data(), syncs)
        self._one_run(ctl, clock)
        ctl._last_duration = ctl.MAX_DELAY  # as after a large converge
        ctl.schedule()  # a change right after the run: the whole pause
        self.assertAlmostEqual(ctl._pending.getTime() - clock.seconds(), ctl.MAX_DELAY, places=6)
        ctl._pending.cancel()
        clock.advance(0.3)
        ctl.schedule()  # 0.3 s after the run: what is left of the pause
        self.assertAlmostEqual(ctl._pending.getTime() - clock.seconds(), ctl.MAX_DELAY - 0.3, places=6)
        ctl._pending.cancel()
        clock.advance(5)
        ctl.schedule()  # long after: only the coalescing delay
        self.assertAlmostEqual(ctl._pending.getTime() - clock.seconds(), ctl.DEBOUNCE, places=6)
        ctl._pending.cancel()

    def test_background_work_lets_runs_go_first(self):
        """The audit's full checks and verifications slice their work with
        ``_background_turn``: while a run is going or due, a slice waits for its end
        (a policy change to 500 switches waited for every slice of a full check
        otherwise), and under a steady stream of runs it waits BACKGROUND_WAIT at most."""
        syncs = {11: _Sync()}
        ctl, clock = self._controller(_data(), syncs)
        self._one_run(ctl, clock)
        idle = ctl._background_turn()
        self.assertFalse(idle.called)
        clock.advance(0)
        self.assertTrue(idle.called)  # nothing going: the next turn
        ctl.schedule()  # a run is due
        waiting = ctl._background_turn()
        clock.advance(0)
        self.assertFalse(waiting.called)
        clock.advance(ctl._pending.getTime() - clock.seconds())  # the run starts and ends
        self.assertTrue(waiting.called)
        ctl._running = True  # a run that goes on and on
        starved = ctl._background_turn()
        clock.advance(ctl.BACKGROUND_WAIT - 0.01)
        self.assertFalse(starved.called)
        clock.advance(0.01)
        self.assertTrue(starved.called)
        ctl._running = False
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_garbage_collection_while_the_engine_builds(self):
        """The engine runs with automatic collection off (a cold compile's full
        collections were the longest reactor stalls), and it is on again after the
        run — also after a run whose compiler failed."""
        import gc
        syncs = {11: _Sync()}
        ctl, clock = self._controller(_data(), syncs)
        seen = []
        real_steps = ctl.engine.steps

        def steps(snap, names, upd):
            seen.append(gc.isenabled())
            yield from real_steps(snap, names, upd)
            seen.append(gc.isenabled())
        ctl.engine.steps = steps
        self.assertTrue(gc.isenabled())
        self._one_run(ctl, clock)
        self.assertEqual(seen, [False, False])
        self.assertTrue(gc.isenabled())

        def broken(snap, names, upd):
            seen.append(gc.isenabled())
            raise RuntimeError("a compiler bug")
            yield  # pragma: no cover
        ctl.engine.steps = broken
        ctl._recompile = True
        self._one_run(ctl, clock)
        self.assertEqual(seen[-1], False)
        self.assertTrue(gc.isenabled())
        self.flushLoggedErrors(RuntimeError)

    def test_a_hanging_switch_holds_up_a_run_only_for_a_while(self):
        syncs = {11: _Sync("hang"), 12: _Sync()}
        ctl, clock = self._controller(_data(), syncs)
        d = defer.ensureDeferred(ctl._run())
        self.assertNoResult(d)
        clock.advance(ctl.CONVERGE_WAIT)
        self.successResultOf(d)
        self.assertEqual(len(self._lines("still running")), 1)
        # the next run still serves the healthy switch
        syncs[12].invalidate()  # (as after an audit mismatch) so the next run has work for it
        self._one_run(ctl, clock, steps=1)
        self.assertEqual(len(syncs[12].calls), 2)
        # the slow sync finishing later fails: retried, though its run is long over
        syncs[11].hanging[0].errback(RuntimeError("late failure"))
        self.assertTrue(ctl._pending is not None and ctl._pending.active())
        self.flushLoggedErrors(RuntimeError)

    def test_stopping_ends_the_wait_for_a_hanging_switch(self):
        syncs = {11: _Sync("hang"), 12: _Sync()}
        ctl, clock = self._controller(_data(), syncs)
        d = defer.ensureDeferred(ctl._run())
        self.assertNoResult(d)
        ctl.stopService()
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_host_whose_flows_fail_keeps_its_switch_as_it_is(self):
        data = _data()
        syncs = {11: _Sync(), 12: _Sync()}
        ctl, clock = self._controller(data, syncs)
        real = ctl._snapshots.build

        def broken_node1(rev, data, ports, changed=None):
            built = real(rev, data, ports, changed=changed)
            hosts = dict(built.snapshot.hosts)
            hosts["node1"] = dataclasses.replace(hosts["node1"], ports=[1])
            return built._replace(snapshot=dataclasses.replace(built.snapshot, hosts=_frozen(hosts)))

        self.patch(ctl._snapshots, "build", broken_node1)
        self._one_run(ctl, clock)
        ctl._recompile = True  # compile again: still broken, still not logged twice
        syncs[12].invalidate()
        self._one_run(ctl, clock)
        self.assertEqual(syncs[11].calls, [])
        self.assertEqual(len(syncs[12].calls), 2)
        lines = self._lines("cannot compile")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("host node1", lines[0])
        self.assertIn("keeps the flows it has", lines[0])

    def test_a_bad_global_record_holds_every_switch(self):
        syncs = {11: _Sync(), 12: _Sync()}
        ctl, clock = self._controller(_data(**{"obj:global": {"global": {"fwdMode": ["routing"]}}}), syncs)
        self._one_run(ctl, clock)
        self.assertEqual((syncs[11].calls, syncs[12].calls), ([], []))
        self.assertEqual(len(self._lines("is unusable")), 1)


# --------------------------------------------------------------------------
# Real Redis, real OVS: two switches, bad records planted with raw HSETs.
# --------------------------------------------------------------------------
DPID = 0xC7B1
MAC = "02:02:14:01:01:{:02x}"


class PlantedBadRecordsTests(TestCase):
    timeout = 180

    async def _setUp(self):
        require_root()
        require_binary("ovs-vswitchd", "redis-server")
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.ovs = OvsInstance(tempfile.mkdtemp(prefix="hard-ctl-ovs-"))
        await threads.deferToThread(self.ovs.start)
        self.addCleanup(lambda: self.ovs.stop(remove=True))
        self.port = free_tcp_port()
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        self.raw = await txredisapi.UnixConnection(self.redis.socket, dbid=0)
        self.addCleanup(self.raw.disconnect)
        await self._seed()

        def bridges():
            for h, dpid, eps in ((1, DPID, (1, 5, 20, 31)), (2, DPID + 1, (3, 4, 30))):
                bridge = self.bridges[h - 1]
                self.ovs.add_bridge(bridge, dpid=dpid, controllers=[f"tcp:127.0.0.1:{self.port}"])
                # one OVS plays both hosts: each flow-based VXLAN port needs its own UDP port
                self.ovs.vsctl("add-port", bridge, f"vx{h}", "--", "set", "interface", f"vx{h}",
                               "type=vxlan", "options:remote_ip=flow", "options:key=flow",
                               f"options:dst_port={free_udp_port()}")
                for i in eps:
                    name = self._port(i)
                    self.ovs.vsctl("add-port", bridge, name, "--", "set", "interface", name, "type=internal")

        self.addCleanup(threads.deferToThread, self._del_bridges)
        await threads.deferToThread(bridges)

    def setUp(self):
        # device names are global on the machine: carry our pid, like SwitchLab
        self.prefix = f"hc{os.getpid() % 100000}"
        self.bridges = [f"{self.prefix}b1", f"{self.prefix}b2"]
        return defer.ensureDeferred(self._setUp())

    def _port(self, i: int) -> str:
        return f"{self.prefix}p{i}"

    def _del_bridges(self) -> None:
        for bridge in self.bridges:  # their tap devices would outlive ovs-vswitchd
            self.ovs.vsctl("--if-exists", "del-br", bridge)

    async def _seed(self):
        s = self.store
        await s.put_state("obj:global", "global", {"name": "global", "fwdMode": "bridge", "arpMode": "proxy"})
        await s.put_state("tenant", "default", {"vrfId": 1})
        for net, net_id, vni, subnet in (("net1", 3, 1001, "20.1.1.0/24"), ("net2", 4, 1002, "20.1.2.0/24")):
            await s.put_state("obj:network", f"default:{net}", {"encap": "vxlan", "subnet": subnet,
                                                                "tenantName": "default", "networkName": net})
            await s.put_state("network", f"default:{net}", {"netId": net_id, "encap": "vxlan", "vni": vni,
                                                             "vlan": 0, "localVlan": 1, "subnet": subnet})
        for h in (1, 2):
            await s.put_state("host", f"h{h}", {"name": f"h{h}", "vtepIP": f"192.168.77.{h}",
                                                "dpid": DPID + h - 1, "tunnelPort": f"vx{h}"})
        for i, host in ((1, "h1"), (3, "h2")):
            await s.put_state("endpoint", f"ep{i}", self._ep(i, host))

    def _ep(self, i: int, host: Any, **extra) -> dict:
        return dict({"id": f"ep{i}", "network": "default:net1", "group": "",
                     "ipAddress": f"20.1.1.{i}", "macAddress": MAC.format(i),
                     "homingHost": host, "intfName": self._port(i)}, **extra)

    async def _plant(self, kind: str, key: str, value: Any, announce: bool = False):
        """A raw HSET into the state hash: no API, no check, no revision."""
        await self.raw.hset(K.hash_of(kind), key, _stored(value))
        if announce:  # what another writer's transaction would publish
            await self.raw.publish(K.CHANGES, json.dumps({"kind": kind, "key": key, "op": "set", "rev": 0}))

    def _flows(self, bridge: str) -> List[str]:
        return [f for f in self.ovs.ofctl("dump-flows", bridge).splitlines() if "cookie=0xc0de" in f]

    async def _on_both(self, needle: str, present: bool = True) -> None:
        def check():
            return all((needle in "\n".join(self._flows(b))) == present for b in self.bridges)
        try:
            await wait_for(check, timeout=20, every=0.1, in_thread=True,
                           what=f"{needle} {'on' if present else 'gone from'} both switches")
        except AssertionError as err:
            dump = await threads.deferToThread(lambda: {b: self._flows(b) for b in self.bridges})
            raise AssertionError(f"{err}; flows: {json.dumps(dump, indent=1)}") from None

    def _refusals(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for e in self.events:
            if "is unusable" in (e.get("log_format") or "") and e.get("log_level") == LogLevel.warn:
                k = f"{e['kind']} {e['key']}"
                counts[k] = counts.get(k, 0) + 1
        return counts

    async def _settle(self, ctl, audits: int = 2):
        for _ in range(audits):
            ctl.audit()
            await ctl.when_idle()

    async def test_bad_records_cost_their_own_flows_only(self):
        planted = [
            ("endpoint", "bad-host", self._ep(20, {"a": 1})),
            ("endpoint", "bad-intf", self._ep(21, "h1", intfName=["x"])),
            ("endpoint", "bad-ip", self._ep(22, "h2", ipAddress=5)),
            ("endpoint", "bad-list", [1, 2]),
            ("endpoint", "bad-text", "{not json"),
            ("network", "default:abc", {"netId": "abc", "encap": "vxlan", "vni": 1003, "subnet": "20.1.3.0/24"}),
            ("endpointGroup", "default:g", {"epgId": {"x": 1}, "network": "default:net1"}),
            ("host", "h9", {"vtepIP": "192.168.77.9", "dpid": "abc"}),
        ]
        for kind, key, value in planted:
            await self._plant(kind, key, value)
        # an endpoint of the bad network: complete itself, but its network is refused
        await self._plant("obj:network", "default:abc", {"encap": "vxlan", "subnet": "20.1.3.0/24"})
        for i, host in ((30, "h2"), (31, "h1")):
            await self.store.put_state("endpoint", f"ep{i}", self._ep(i, host, ipAddress=f"20.1.3.{i}",
                                                                     network="default:abc"))

        ctl = Controller(self.store, listen=f"tcp:{self.port}:interface=127.0.0.1")
        ctl.startService()
        self.ctl = ctl
        self.addCleanup(ctl.stopService)
        await wait_for(lambda: len(ctl.registry.switches()) == 2, timeout=20, what="both switches connected")
        # the good endpoints reach both switches (proxy ARP for both on each, remote MAC via VXLAN)
        await self._on_both("20.1.1.1")
        await self._on_both("20.1.1.3")

        # a good endpoint added after the bad records: its flows appear on every switch...
        await self.store.put_state("endpoint", "ep4", self._ep(4, "h2"))
        await self._on_both("20.1.1.4")
        await self._on_both(MAC.format(4))
        # ...and go when it is deleted
        await self.store.del_state("endpoint", "ep4")
        await self._on_both("20.1.1.4", present=False)
        await self._on_both(MAC.format(4), present=False)

        # a bad record arriving through a change notification (the incremental read)
        await self._plant("endpoint", "bad-late", self._ep(23, "h1", macAddress=["02:00:00:00:00:01"]),
                          announce=True)
        await self.store.put_state("endpoint", "ep5", self._ep(5, "h1"))
        await self._on_both("20.1.1.5")

        # many runs later (audits re-read everything), each bad record was logged once
        await self._settle(ctl, audits=3)
        counts = self._refusals()
        expected = {f"{kind} {key}" for kind, key, _v in planted} | {"endpoint bad-late"}
        self.assertEqual(set(counts), expected, counts)
        self.assertEqual(set(counts.values()), {1}, counts)
        for e in self.events:
            self.assertNotIn("log_failure", e, formatEvent(e))
        for needle in ("20.1.1.20", "20.1.1.21", "20.1.1.22", "20.1.3.30", "20.1.1.23"):
            self.assertNotIn(needle, "\n".join(self._flows(self.bridges[0]) + self._flows(self.bridges[1])))

        # rewriting a bad record with another bad value is logged again; fixing one lets
        # its owner compile; fixing the network lets its endpoint compile
        await self._plant("endpoint", "bad-intf", self._ep(21, "h1", intfName=["y"]), announce=True)
        await self.store.put_state("endpoint", "bad-host", self._ep(20, "h1"))
        await self._on_both("20.1.1.20")
        await self.store.put_state("network", "default:abc", {"netId": 5, "encap": "vxlan", "vni": 1003,
                                                              "subnet": "20.1.3.0/24"})
        await self._on_both("20.1.3.30")
        await self.raw.hdel(K.hash_of("endpoint"), "bad-list")
        await self._settle(ctl)
        counts = self._refusals()
        self.assertEqual(counts["endpoint bad-intf"], 2, counts)
        self.assertEqual(counts["endpoint bad-host"], 1, counts)
        self.assertEqual(counts["endpoint bad-list"], 1, counts)
        recovered = {f"{e['kind']} {e['key']}" for e in self.events
                     if "no longer refused" in (e.get("log_format") or "")}
        self.assertEqual(recovered, {"endpoint bad-host", "network default:abc", "endpoint bad-list"})
