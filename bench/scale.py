"""Controller scale: simulated switches against a real netmaster (issue 8, part 3).

For each size (switches × endpoints) this starts a private redis-server and a
netmaster with its OpenFlow listener, registers one simulated host per switch
the way netplugin does (``/plugin/registerHost``, or the store record before
that route existed), connects every switch (a real OpenFlow 1.3 connection
each, see :mod:`contiv_sdn.testing.simswitch`), creates a policy and an
endpoint group ``web`` carrying it on the first network (netctl's bodies, no
rule yet), creates the endpoints through ``/plugin/createEndpoint`` with the
agent's own client (each followed by its port appearing on its host's switch;
one in ``--group-every`` (10) in the group, chosen so that every switch hosts a
member: see :func:`in_group`), waits for the switches to converge, then
measures:

* change latency: from an endpoint create returning to its flows being in
  every affected switch (every switch of its network holds a flow naming its
  MAC; its own switch holds flows on its port), p50/p99 over ``--changes``
  creates made one after the other;
* controller CPU per change (the netmaster process's user+system time from
  /proc over those changes, REST handling included);
* policy rule change latency: ``--rule-changes`` (50) rules added one after the
  other to the group's policy through REST as ``netctl policy rule-add -l tcp -P
  P`` posts them (allow, direction in, a distinct port P each); from the REST
  answer to a flow matching ``tcp_dst=P`` being on every switch that hosts a
  member of the group, p50/p99 (same targets as endpoint changes), and the
  controller CPU per rule change (the rules stay: the restart below then holds
  them too);
* netmaster RSS per endpoint ((RSS after the fill - RSS with the switches
  connected and no endpoint) / endpoints);
* the longest reactor stall seen from the wire: echo round trips to one switch
  every 50 ms during the changes (an upper bound: the harness shares the CPU);
* a netmaster restart with nothing changed: time until every switch has
  reconnected, been checked (flow counts, or a full read where they disagree) and
  sent what it needed, and the flow_mods sent (target 0); then, separately, until
  every switch was also read back in full (the verification that follows a
  count match, one switch at a time).

Each figure is printed next to its target.  Progress goes to stderr while it runs.

The harness is one Python process for all switches, on the same CPUs as the
netmaster: its own pauses stall every simulated switch at once, which no set of
real switches does.  So its tables are frozen out of its garbage collector after
the fill, and its automatic collection is off during the measured phases.

    .venv/bin/python bench/scale.py                       # a modest size (20 x 400)
    .venv/bin/python bench/scale.py --size 100x2k --size 500x10k --size 1000x20k
    .venv/bin/python bench/scale.py --size 50x1k --changes 30 --rule-changes 20 --json
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import resource
import struct
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from os_ken.ofproto import ofproto_v1_3 as ofp  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from contiv_sdn.agent.netmaster import NetmasterError  # noqa: E402
from contiv_sdn.netctl.wire import encode_object  # noqa: E402
from contiv_sdn.testing import RedisServer, free_tcp_port  # noqa: E402
from contiv_sdn.testing.netmaster import NetmasterProcess  # noqa: E402
from contiv_sdn.testing.simswitch import (Cluster, NetmasterRunner, endpoint_id,  # noqa: E402
                                          in_port_tlv)

#: issue 8's targets, by size (switches, endpoints); None = report only
TARGETS = {
    "p99": {(500, 10000): 0.100, (1000, 20000): 0.250},
    "rss_per_ep": 10 * 1024,
    "reconnect": 30.0,
    "stall": 0.050,
}


def parse_size(text: str) -> tuple:
    def num(t: str) -> int:
        t = t.strip().lower()
        return int(float(t[:-1]) * 1000) if t.endswith("k") else int(t)
    s, _, e = text.partition("x")
    if not e:
        raise argparse.ArgumentTypeError(f"size {text!r}: write SWITCHESxENDPOINTS, e.g. 100x2k")
    return num(s), num(e)


def say(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def pct(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))]


class Progress:
    """Prints the phase and the switches' counters every few seconds (a long run)."""

    def __init__(self, reactor: Any, cluster: Cluster, every: float = 3.0):
        self.cluster = cluster
        self.phase = "starting"
        self.extra = ""
        self.loop = task.LoopingCall(self.show)
        self.loop.clock = reactor
        self.loop.start(every, now=False)

    def show(self) -> None:
        t = self.cluster.totals()
        up = sum(1 for h in self.cluster.hosts.values() if h.up)
        say(f"{self.phase}{self.extra}: {up}/{len(self.cluster.hosts)} switches up, "
            f"{len(self.cluster.endpoints)} endpoints, {t['flows']} flows held, "
            f"{t['flow_mods']} flow_mods, {t['bundles']} bundles, {t['reads']} reads")

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()


#: the netmaster's CPU share that counts as idle in :func:`quiet` (its audit, REST pings)
IDLE_CPU = 0.1


async def quiet(reactor: Any, cluster: Cluster, seconds: float, timeout: float, what: str,
                nm: Optional[NetmasterRunner] = None) -> float:
    """Wait until no switch was read, written or (re)connected for ``seconds`` and (with
    ``nm``) the netmaster used at most :data:`IDLE_CPU` of a core over that time; returns
    the time of the last switch event.  The CPU condition matters at 500 switches: a
    compile of a fill's backlog keeps the switches silent for longer than any settle
    time, and measuring changes behind that backlog measures the backlog."""
    last = [reactor.seconds()]
    cpu: List[tuple] = []

    def note(host: Any, event: str, detail: Any) -> None:
        if event in ("read", "applied", "up"):
            last[0] = reactor.seconds()

    def done() -> bool:
        now = reactor.seconds()
        if now - last[0] < seconds:
            return False
        if nm is None:
            return True
        cpu.append((now, nm.cpu_seconds()))
        while len(cpu) > 1 and now - cpu[1][0] >= seconds:
            cpu.pop(0)  # keep the oldest sample at least ``seconds`` old
        t0, c0 = cpu[0]
        return now - t0 >= seconds and (cpu[-1][1] - c0) <= IDLE_CPU * (now - t0)
    cluster.listeners.append(note)
    try:
        await cluster.wait(done, timeout, what, every=0.1)
    finally:
        cluster.listeners.remove(note)
    return last[0]


class ChangeWatch:
    """When did a change's flows reach every affected switch?

    An endpoint create (:meth:`start`): on remote switches a flow naming the endpoint's
    MAC (its L2 entry, its ARP answer), on its own switch a flow matching its port
    (``in_port``).  A policy rule (:meth:`watch` with :func:`rule_arrived`): a flow
    matching the rule's ``tcp_dst`` on every switch hosting a member of the group.
    Judged from the bytes the
    switches hold, not from cookies or any other internal of the compiler.  Only the
    entries touched since :meth:`arm` are looked at (never whole tables: at 100k+ flows
    that would make the harness, not the controller, the slow part)."""

    def __init__(self, reactor: Any, cluster: Cluster):
        self.reactor = reactor
        self.cluster = cluster
        self.pending: Optional[Dict[str, Any]] = None
        self.buffer: Optional[List[Any]] = None
        cluster.listeners.append(self._event)

    def arm(self) -> None:
        """Before the create: remember what the switches get meanwhile."""
        self.pending = None
        self.buffer = []

    def start(self, host: str, affected: set, mac: str, ofport: int) -> defer.Deferred:
        """An endpoint create: its MAC on the remote switches, its port on its own."""
        mac_bytes = bytes.fromhex(mac.replace(":", ""))
        needle = in_port_tlv(ofport)

        def arrived(h: Any, key: Any, value: Any) -> bool:
            if h.name == host:
                return needle in key[2]
            return mac_bytes in key[2] or mac_bytes in value[1]
        return self.watch(affected, arrived)

    def watch(self, affected: set, arrived: Any) -> defer.Deferred:
        """Fires with the time ``arrived(host, key, value)`` was first true of an entry
        touched on the last switch of ``affected``."""
        self.pending = {"remaining": set(affected), "arrived": arrived, "last": None,
                        "done": defer.Deferred()}
        done = self.pending["done"]
        buffered, self.buffer = self.buffer or [], None
        for h, keys in buffered:  # arrived before the create returned
            self._check(h, keys)
        if self.pending is not None and not self.pending["remaining"]:  # nothing to wait for
            self.pending = None
            done.callback(self.reactor.seconds())
        return done

    def _event(self, host: Any, event: str, detail: Any) -> None:
        if event != "applied":
            return
        if self.pending is None:
            if self.buffer is not None:
                self.buffer.append((host, [k for k, _old in detail]))
        elif host.name in self.pending["remaining"]:
            self._check(host, [k for k, _old in detail])

    def _check(self, host: Any, keys: List[Any]) -> None:
        p = self.pending
        if p is None or host.name not in p["remaining"]:
            return
        t = host.table
        arrived = p["arrived"]
        for k in keys:
            v = t.get(k)
            if v is not None and arrived(host, k, v):
                break
        else:
            return
        p["remaining"].discard(host.name)
        p["last"] = self.reactor.seconds()
        if not p["remaining"]:
            self.pending = None
            p["done"].callback(p["last"])


#: the bench's endpoint group (on the first network), its policy, the tenant of both
GROUP, POLICY, TENANT = "web", "scalepol", "default"
#: the first ``tcp_dst`` the rule changes use (distinct ports upwards)
RULE_PORT0 = 20000


def in_group(i: int, switches: int, networks: int, every: int) -> bool:
    """Whether fill endpoint ``i`` is created in :data:`GROUP`: one in ``every``,
    taken as whole rounds of the round-robin placement (endpoint ``i`` goes to switch
    ``i % switches``), so that once there are as many endpoints as switches every
    switch hosts a member and a rule reaches every switch -- the widest fan-out, the
    same as an endpoint change on one network.  (``i % every == 0`` would put the
    members on ``switches / gcd(switches, every)`` switches only.)"""
    return every > 0 and i % networks == 0 and (i // switches) % every == 0


def tcp_dst_tlv(port: int) -> bytes:
    """The OXM bytes of ``tcp_dst=<port>``: a rule ``allow tcp port P`` matches them."""
    return struct.pack("!IH", ofp.OXM_OF_TCP_DST, port)


def rule_arrived(port: int) -> Any:
    """``arrived(host, key, value)`` for :meth:`ChangeWatch.watch`: the entry matches
    ``tcp_dst=<port>`` (the match bytes are canonical, so the TLV is contiguous)."""
    needle = tcp_dst_tlv(port)
    return lambda host, key, value: needle in key[2]


def rule_body(rule_id: str, port: int) -> Dict[str, Any]:
    """What ``netctl policy rule-add -d in -l tcp -P <port> -j allow`` posts
    (netctl's own encoder, its defaults: priority 1)."""
    return encode_object("rules", {
        "tenantName": TENANT, "policyName": POLICY, "ruleId": rule_id, "priority": 1,
        "direction": "in", "fromEndpointGroup": "", "toEndpointGroup": "", "fromNetwork": "",
        "toNetwork": "", "fromIpAddress": "", "toIpAddress": "", "protocol": "tcp",
        "port": port, "action": "allow"})


async def run_size(reactor: Any, switches: int, endpoints: int, args: argparse.Namespace) -> Dict[str, Any]:
    result: Dict[str, Any] = {"switches": switches, "endpoints": endpoints}
    redis = RedisServer(appendonly=False).start()
    ofp_port = free_tcp_port()
    spec = NetmasterProcess(redis_url=redis.url, ofp_listen=f"tcp:{ofp_port}:interface=127.0.0.1")
    nm = NetmasterRunner(spec, reactor)
    cluster: Optional[Cluster] = None
    progress: Optional[Progress] = None
    try:
        say(f"=== {switches} switches x {endpoints} endpoints: starting redis and the netmaster")
        await nm.start()
        say(f"netmaster pid {nm.pid}, {spec.url}, log {spec.logfile}")
        cluster = await Cluster(spec.url, ("127.0.0.1", ofp_port), redis.url,
                                max_backoff=args.max_backoff).start()
        progress = Progress(reactor, cluster)
        nets = [f"scale{i}" for i in range(args.networks)]
        for i, net in enumerate(nets):
            await cluster.create_network(net, f"10.{64 + i}.0.0/16" if endpoints < 60000 else f"10.{64 + 4 * i}.0.0/14")
        # a group with a policy (no rule yet) on the first network, as netctl creates them
        await cluster.rest("POST", f"/api/v1/policys/{TENANT}:{POLICY}/",
                           encode_object("policys", {"policyName": POLICY, "tenantName": TENANT}))
        await cluster.rest("POST", f"/api/v1/endpointGroups/{TENANT}:{GROUP}/", encode_object(
            "endpointGroups", {"tenantName": TENANT, "networkName": nets[0], "groupName": GROUP,
                               "policies": [POLICY]}))

        progress.phase = "registering hosts and connecting switches"
        sem = defer.DeferredSemaphore(args.concurrency)
        names = [f"sim{i:05d}" for i in range(switches)]
        await defer.gatherResults([sem.run(lambda n=n, i=i: defer.ensureDeferred(
            cluster.add_host(n, cluster.vtep_of(i + 1)))) for i, n in enumerate(names)], consumeErrors=True)
        result["registration"] = cluster.registration
        await cluster.wait_all_up(timeout=args.timeout)
        await quiet(reactor, cluster, args.settle, args.timeout, "switches quiet after connecting", nm)
        rss0 = nm.rss_bytes()

        progress.phase = "creating endpoints"
        started = reactor.seconds()
        made = [0]

        retried = [0]

        async def create(i: int) -> None:
            group = GROUP if in_group(i, switches, len(nets), args.group_every) else ""
            for attempt in range(5):
                try:
                    await cluster.create_endpoint(names[i % switches], nets[i % len(nets)],
                                                  endpoint_id(i), group)
                    break
                except NetmasterError as e:
                    # 503: the netmaster could not reach its store in time ("retry shortly"),
                    # what an agent retries; counted and printed, never hidden
                    if e.status != 503 or attempt == 4:
                        raise
                    retried[0] += 1
                    say(f"create {i} answered 503 ({e}); retrying in 1 s")
                    await task.deferLater(reactor, 1.0, lambda: None)
            made[0] += 1
            progress.extra = f" ({made[0]}/{endpoints}, {made[0] / max(1e-9, reactor.seconds() - started):.0f}/s)"
        await defer.gatherResults([sem.run(lambda i=i: defer.ensureDeferred(create(i)))
                                   for i in range(endpoints)], consumeErrors=True)
        result["create_rate"] = endpoints / (reactor.seconds() - started)
        result["create_retried"] = retried[0]
        progress.extra = ""
        progress.phase = "waiting for the switches to converge"
        if args.verify:
            expected = await cluster.oracle()
            await cluster.wait_matching(expected, timeout=args.timeout)
            result["verified_fill"] = True
        await quiet(reactor, cluster, args.settle, args.timeout, "switches and netmaster quiet after the fill", nm)
        result["fill_seconds"] = reactor.seconds() - started
        result["flows_per_switch"] = cluster.totals()["flows"] / switches
        rss1 = nm.rss_bytes()
        result["rss_bytes"] = rss1
        result["rss_per_endpoint"] = (rss1 - rss0) / endpoints
        members = {e["host"] for e in cluster.endpoints.values() if e["group"] == GROUP}
        result["group_members"] = sum(1 for e in cluster.endpoints.values() if e["group"] == GROUP)
        result["group_switches"] = len(members)

        # the simulated switches' tables (10M flows at 500x10k) out of this process's
        # garbage collections: a full collection over them stalled the harness for
        # 7.7 s in the middle of the changes measured (its latency was the p99)
        gc.collect()
        gc.freeze()
        # and no automatic collection in the harness while it measures: with the tables
        # frozen, its collections still held all 500 simulated switches at once for
        # 120-200 ms every ~6 s at 500x10k (young and full ones, nothing collected), a
        # stall no set of real switches has (each OVS is a process of its own), and
        # those pauses were the p99 of the changes.  What the measured phases leave is
        # little (a few hundred changes); the netmaster's own collections are untouched.
        gc.disable()

        # -- change latency, one create at a time ---------------------------------------
        progress.phase = "measuring changes"
        watch = ChangeWatch(reactor, cluster)
        probe_host = cluster.hosts[names[0]]
        rtts: List[float] = []

        def probe(into: List[float] = rtts) -> None:
            if probe_host.conn is not None and probe_host.up:
                probe_host.conn.ping().addCallbacks(into.append, lambda f: None)
        prober = task.LoopingCall(probe)
        prober.clock = reactor
        prober.start(0.05)
        # the harness's own lateness: an echo round trip is the controller's stall only
        # when the harness was not itself busy at that moment
        lag = [0.0, reactor.seconds()]

        def tick() -> None:
            now = reactor.seconds()
            lag[0] = max(lag[0], now - lag[1] - 0.05)
            lag[1] = now
        ticker = task.LoopingCall(tick)
        ticker.clock = reactor
        ticker.start(0.05)
        async def timed(done: defer.Deferred, t0: float, into: List[float]) -> bool:
            """Wait (bounded) for one watched change: its latency into ``into``, or False."""
            done.addTimeout(args.change_timeout, reactor)
            try:
                into.append(max(0.0, await done - t0))
                return True
            except defer.TimeoutError:
                watch.pending = None
                return False

        def so_far(k: int, n: int, into: List[float]) -> str:
            return f" ({k + 1}/{n}, p50 {pct(into, 50) * 1e3:.1f} ms, p99 {pct(into, 99) * 1e3:.1f} ms)"

        latencies: List[float] = []
        timeouts = 0
        cpu0 = nm.cpu_seconds()
        for k in range(args.changes):
            host = names[(k * 7919) % switches]
            net = nets[k % len(nets)]
            eid = endpoint_id(k, "change")
            affected = {e["host"] for e in cluster.endpoints.values() if e["network"] == net} | {host}
            watch.arm()
            config = await cluster.create_endpoint(host, net, eid, attach=False)
            t0 = reactor.seconds()
            ofport = cluster.attach(eid)  # as the agent: the port right after the create
            done = watch.start(host, affected, config["macAddress"], ofport)
            timeouts += not await timed(done, t0, latencies)
            progress.extra = so_far(k, args.changes, latencies)
        cpu1 = nm.cpu_seconds()
        prober.stop()
        ticker.stop()
        progress.extra = ""
        result.update(changes=args.changes, change_timeouts=timeouts,
                      p50=pct(latencies, 50), p99=pct(latencies, 99),
                      max_latency=max(latencies) if latencies else float("nan"),
                      latencies=[round(x, 4) for x in latencies],
                      cpu_per_change=(cpu1 - cpu0) / args.changes,
                      stall=max(rtts) if rtts else float("nan"),
                      echo_p99=pct(rtts, 99), harness_lag=lag[0])
        await quiet(reactor, cluster, args.settle, args.timeout, "switches and netmaster quiet after the changes", nm)

        # -- policy rule changes, one at a time ----------------------------------------------
        progress.phase = "measuring rule changes"
        rule_latencies: List[float] = []
        rule_timeouts = 0
        cpu0 = nm.cpu_seconds()
        for k in range(args.rule_changes):
            port = RULE_PORT0 + k
            rule_id = f"r{port}"
            watch.arm()
            await cluster.rest("POST", f"/api/v1/rules/{TENANT}:{POLICY}:{rule_id}/", rule_body(rule_id, port))
            t0 = reactor.seconds()
            done = watch.watch(members, rule_arrived(port))
            rule_timeouts += not await timed(done, t0, rule_latencies)
            progress.extra = so_far(k, args.rule_changes, rule_latencies)
        cpu1 = nm.cpu_seconds()
        progress.extra = ""
        result.update(rule_changes=args.rule_changes, rule_timeouts=rule_timeouts,
                      rule_p50=pct(rule_latencies, 50), rule_p99=pct(rule_latencies, 99),
                      rule_max_latency=max(rule_latencies) if rule_latencies else float("nan"),
                      rule_latencies=[round(x, 4) for x in rule_latencies],
                      cpu_per_rule_change=(cpu1 - cpu0) / max(1, args.rule_changes))
        if args.rule_changes:
            await quiet(reactor, cluster, args.settle, args.timeout,
                        "switches and netmaster quiet after the rule changes", nm)

        # -- a restart with nothing changed -------------------------------------------------
        progress.phase = "netmaster restart"
        before = cluster.totals()
        reads = {n: h.reads for n, h in cluster.hosts.items()}
        await nm.stop()
        await cluster.wait(lambda: not any(h.up for h in cluster.hosts.values()), 60, "switches disconnected")
        spawned = reactor.seconds()
        first_read: Dict[str, float] = {}
        full_read: Dict[str, float] = {}
        last_applied = [spawned]

        def seen(host: Any, event: str, detail: Any) -> None:
            if event == "read":
                first_read.setdefault(host.name, reactor.seconds())
                if detail == ofp.OFPMP_FLOW:
                    full_read.setdefault(host.name, reactor.seconds())
            elif event == "applied":
                last_applied[0] = reactor.seconds()
        cluster.listeners.append(seen)
        await nm.start()
        ready = reactor.seconds()
        # the reconnect storm's own stall: echo round trips to one switch while it runs
        restart_rtts: List[float] = []
        prober = task.LoopingCall(probe, restart_rtts)
        prober.clock = reactor
        prober.start(0.05)
        await cluster.wait_all_up(timeout=args.timeout, since=spawned)
        all_up = reactor.seconds()
        await cluster.wait(lambda: all(h.reads > reads[n] for n, h in cluster.hosts.items()),
                           args.timeout, "every switch read back after the restart", every=0.1)
        # converged: every switch read back once (nothing can be known before) and the
        # last flow_mod (if any) applied; later periodic audits do not count
        converged = max(max(first_read.values()), last_applied[0])
        # counts first: a switch whose counts agree is read back in full later, one at a time
        if args.wait_readback:
            await cluster.wait(lambda: len(full_read) == len(cluster.hosts), args.timeout,
                               "every switch read back in full after the restart", every=0.1)
            await quiet(reactor, cluster, args.settle, args.timeout,
                        "switches quiet after the restart")
        prober.stop()
        cluster.listeners.remove(seen)
        after = cluster.totals()
        result.update(restart_ready=ready - spawned, restart_all_up=all_up - spawned,
                      restart_converged=converged - spawned,
                      restart_verified=(max(full_read.values()) - spawned
                                        if args.wait_readback and full_read else float("nan")),
                      restart_stall=max(restart_rtts) if restart_rtts else float("nan"),
                      restart_count_reads=after["count_reads"] - before["count_reads"],
                      restart_flow_reads=after["flow_reads"] - before["flow_reads"],
                      restart_flow_mods=after["flow_mods"] - before["flow_mods"],
                      restart_bundles=after["bundles"] - before["bundles"])
        if args.verify:
            expected = await cluster.oracle()
            result["verified_after_restart"] = not cluster.differences(expected)
        result["harness_max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result.update(log_figures(spec.logfile))
        return result
    finally:
        gc.enable()  # (turned off for the measured phases, below the fill)
        if progress is not None:
            progress.stop()
        if cluster is not None:
            await cluster.close()
        await nm.stop()
        spec.cleanup()
        redis.stop()


def log_figures(path: str) -> Dict[str, Any]:
    """What the netmaster said about itself over the whole run (both lives): switch
    lease lapses (its reactor missed the renewal deadline: every switch demoted to
    SLAVE until it is back), lapses it came back from with nobody in between (no
    read-back), and the longest garbage collection it logged."""
    lapses = continued = 0
    gc_ms = 0.0
    lines = 0
    for name in [path] + glob.glob(path + ".*"):  # twistd rotates its log every MB
        try:
            f = open(name, errors="replace")
        except OSError:
            continue
        with f:
            for line in f:
                lines += 1
                if "switch lease not renewed" in line:
                    lapses += 1
                elif "switch lease back with nobody in between" in line:
                    continued += 1
                elif "garbage collection" in line and "held the reactor" in line:
                    try:
                        gc_ms = max(gc_ms, float(line.rsplit("reactor", 1)[1].split("ms")[0]))
                    except ValueError:
                        pass
    return {"lease_lapses": lapses, "lease_continued": continued, "gc_longest_ms": gc_ms,
            "log_lines": lines}


def report(r: Dict[str, Any]) -> str:
    size = (r["switches"], r["endpoints"])
    p99_target = TARGETS["p99"].get(size)

    def ms(v: float) -> str:
        return f"{v * 1e3:.1f} ms"

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"
    rows = [
        ("change -> all affected switches, p50", ms(r["p50"]), ""),
        ("change -> all affected switches, p99", ms(r["p99"]),
         f"<= {ms(p99_target)} {mark(r['p99'] <= p99_target)}" if p99_target else
         "<= 100 ms at 500x10k, <= 250 ms at 1000x20k (report)"),
        ("  (changes measured / timed out)", f"{r['changes']} / {r['change_timeouts']}", "none timed out"),
        ("controller CPU per change", ms(r["cpu_per_change"]), "proportional to the change"),
        ("policy rule change -> group's switches, p50", ms(r["rule_p50"]), ""),
        ("policy rule change -> group's switches, p99", ms(r["rule_p99"]),
         f"<= {ms(p99_target)} {mark(r['rule_p99'] <= p99_target)}" if p99_target else
         "<= 100 ms at 500x10k, <= 250 ms at 1000x20k (report)"),
        ("  (rule changes measured / timed out)", f"{r['rule_changes']} / {r['rule_timeouts']}", "none timed out"),
        ("  (group members / switches hosting them)", f"{r['group_members']} / {r['group_switches']}", ""),
        ("controller CPU per rule change", ms(r["cpu_per_rule_change"]), "proportional to the change"),
        ("netmaster RSS per endpoint", f"{r['rss_per_endpoint'] / 1024:.1f} KiB",
         f"<= 10 KiB {mark(r['rss_per_endpoint'] <= TARGETS['rss_per_ep'])}"),
        ("  (netmaster RSS after the fill)", f"{r['rss_bytes'] / 2**20:.0f} MiB", ""),
        ("longest reactor stall (echo RTT max)", ms(r["stall"]),
         f"<= 50 ms {mark(r['stall'] <= TARGETS['stall'])}"),
        ("  (echo RTT p99 / harness's own worst lag)", f"{ms(r['echo_p99'])} / {ms(r['harness_lag'])}", ""),
        ("restart: all reconnected and converged", f"{r['restart_converged']:.1f} s",
         f"<= 30 s {mark(r['restart_converged'] <= TARGETS['reconnect'])}"),
        ("  (answering REST / all switches up)", f"{r['restart_ready']:.1f} s / {r['restart_all_up']:.1f} s", ""),
        ("  (every switch read back in full, after)", f"{r['restart_verified']:.1f} s", "one at a time"),
        ("  (count requests / full reads)", f"{r['restart_count_reads']} / {r['restart_flow_reads']}", ""),
        ("restart: longest stall (echo RTT max)", ms(r["restart_stall"]),
         f"<= 50 ms {mark(r['restart_stall'] <= TARGETS['stall'])}"),
        ("restart: flow_mods sent, nothing changed", str(r["restart_flow_mods"]),
         f"0 {mark(r['restart_flow_mods'] == 0)}"),
        ("switch lease lapses (renewal missed)", str(r.get("lease_lapses", "n/a")),
         f"0 {mark(r.get('lease_lapses', 0) == 0)}"),
        ("  (of them back with nobody in between)", str(r.get("lease_continued", "n/a")),
         "no read-back for these"),
        ("  (netmaster log lines over the run)", str(r.get("log_lines", "n/a")), ""),
        ("  (longest garbage collection logged)", f"{r.get('gc_longest_ms', 0):.0f} ms", "(> 50 ms logged)"),
        ("fill: endpoint creates per second", f"{r['create_rate']:.0f}/s", ""),
        ("  (creates answered 503 and retried)", f"{r.get('create_retried', 0)}",
         "0: the netmaster always reached its store in time"),
        ("fill: until converged", f"{r['fill_seconds']:.1f} s", ""),
        ("flows per switch", f"{r['flows_per_switch']:.0f}", ""),
    ]
    w = max(len(a) for a, _, _ in rows)
    v = max(len(b) for _, b, _ in rows)
    head = f"{r['switches']} switches x {r['endpoints']} endpoints (host registration via {r['registration']})"
    lines = [head, "-" * len(head)]
    lines += [f"{a:<{w}}  {b:>{v}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    failed = 0
    for switches, endpoints in args.size or [(20, 400)]:
        try:
            r = await run_size(reactor, switches, endpoints, args)
        except Exception as e:
            while isinstance(e, defer.FirstError):  # one of many parallel calls: say which
                e = e.subFailure.value
            say(f"{switches}x{endpoints} failed: {type(e).__name__}: {e}")
            failed += 1
            continue
        print(json.dumps(r) if args.json else "\n" + report(r) + "\n", flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, action="append",
                    help="SWITCHESxENDPOINTS (k = 1000), repeatable; default 20x400")
    ap.add_argument("--changes", type=int, default=100, help="endpoint creates measured one by one (100)")
    ap.add_argument("--rule-changes", type=int, default=50,
                    help="policy rules added one by one, each allow tcp port P, P distinct (50)")
    ap.add_argument("--group-every", type=int, default=10,
                    help=f"one fill endpoint in N joins group {GROUP!r} (10; 0: none)")
    ap.add_argument("--networks", type=int, default=1, help="networks the endpoints are spread over (1)")
    ap.add_argument("--concurrency", type=int, default=32, help="creates in flight during the fill (32)")
    ap.add_argument("--max-backoff", type=float, default=8.0,
                    help="switch reconnect back-off ceiling in seconds (OVS's default: 8)")
    ap.add_argument("--settle", type=float, default=3.0, help="quiet seconds that count as converged (3)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="bound of each waiting phase (3600 s)")
    ap.add_argument("--wait-readback", action=argparse.BooleanOptionalAction, default=True,
                    help="after the restart, also wait until every switch was read back in full "
                         "(one at a time: about half a second per switch at 500x10k)")
    ap.add_argument("--change-timeout", type=float, default=120.0, help="bound of one change (120 s)")
    ap.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                    help="compare every switch with a full compile after the fill and the restart "
                         "(default: on up to 100 switches)")
    ap.add_argument("--json", action="store_true", help="one JSON object per size on stdout")
    a = ap.parse_args()
    if a.verify is None:
        a.verify = all(s <= 100 for s, _ in (a.size or [(20, 400)]))
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, a)))
