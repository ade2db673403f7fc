"""Compile benchmark: the cost of one change, incremental engine vs the full compile (plain data).

Usage: ``.venv/bin/python bench/compile.py [--sizes 20:1000 100:2000 500:10000] [--changes 40]``

For each (hosts, endpoints), a fabric of 20 VXLAN networks spanning every host
(endpoints spread round-robin over hosts and networks, every endpoint's port up)
is compiled once by :class:`IncrementalCompiler` (cold start), then ``--changes``
changes are applied one by one, each a new snapshot: an endpoint added with its
port (record and port-status coalesced), an endpoint's address changed, an
endpoint deleted, and a host refresh that changes nothing the compiler reads.
Printed per size: the incremental cost per change (median and max, per kind),
the owners evaluated and fragments built per change, the longest slice between
two yields of the engine (what would hold the reactor, with the controller's
10 ms slicing on top), and RSS per endpoint of the engine's state.

Reference: the full compile of every switch (``compile_hosts``) for one change;
above 100 hosts it is measured on 5 hosts and multiplied by the host count (the
full compile at 500 hosts × 10k endpoints takes minutes).  Same process, same
data, no I/O.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import sys
import time
from types import MappingProxyType
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from contiv_sdn.controller.service import Controller  # noqa: E402
from contiv_sdn.pipeline.compiler import compile_hosts  # noqa: E402
from contiv_sdn.pipeline.incremental import IncrementalCompiler, Update  # noqa: E402
from contiv_sdn.pipeline.state import Endpoint, GlobalCfg, Host, Network, Snapshot, Tenant  # noqa: E402

NETS = 20


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Fabric:
    def __init__(self, hosts: int, endpoints: int) -> None:
        self.hosts = [f"h{i}" for i in range(hosts)]
        self.nets = {f"t:n{i}": Network(f"t:n{i}", "t", f"n{i}", "vxlan", 5000 + i, i + 1,
                                        f"10.{i}.0.0/16") for i in range(NETS)}
        self.eps: Dict[str, Endpoint] = {}
        self.ports: Dict[str, Dict[str, int]] = {h: {"vxlan0": 1} for h in self.hosts}
        self.host_rec: Dict[str, Host] = {}
        self.next = 0
        for _ in range(endpoints):
            self.add_ep()
        for i, h in enumerate(self.hosts):
            self.host_rec[h] = self._host(h, i)
        self.rev = 0

    def _host(self, h: str, i: int) -> Host:
        return Host(h, i + 1, f"192.168.{i // 250}.{i % 250 + 1}", MappingProxyType(dict(self.ports[h])))

    def add_ep(self) -> str:
        n = self.next
        self.next += 1
        eid = f"ep{n}"
        host = self.hosts[(n // NETS) % len(self.hosts)]  # every network spans every host
        net = list(self.nets)[n % NETS]
        i = n // NETS
        port = f"v{n}"
        self.eps[eid] = Endpoint(eid, host, net, f"10.{n % NETS}.{i // 250}.{i % 250 + 1}",
                                 "02:%02x:%02x:%02x:%02x:%02x" % (n % NETS, (n >> 24) & 255, (n >> 16) & 255,
                                                                  (n >> 8) & 255, n & 255), port)
        self.ports[host][port] = 10 + n
        return eid

    def refresh_host(self, h: str) -> None:
        self.host_rec[h] = self._host(h, self.hosts.index(h))

    def snapshot(self) -> Snapshot:
        self.rev += 1
        f = MappingProxyType
        return Snapshot(self.rev, GlobalCfg(), f({"t": Tenant("t", 1)}), f(dict(self.nets)), f({}),
                        f(dict(self.host_rec)), f(dict(self.eps)))


def drive(eng: IncrementalCompiler, snap: Snapshot, hosts: List[str]) -> Tuple[Update, float, float]:
    """Run one pass; (update, total seconds, longest slice between two yields).

    As the controller runs it: no automatic garbage collection during the pass, and
    what a large pass built frozen out of later collections (``Controller._compile``)."""
    upd = Update()
    longest = 0.0
    gc.disable()
    try:
        t0 = last = time.perf_counter()
        for _ in eng.steps(snap, hosts, upd):
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now
        end = time.perf_counter()
    finally:
        if gc.get_count()[0] >= Controller.FREEZE_YOUNG:  # as the controller does
            gc.freeze()
        gc.enable()
    return upd, end - t0, max(longest, end - last)


def full_cost(snap: Snapshot, hosts: List[str]) -> Tuple[float, bool]:
    if len(hosts) <= 100:
        t0 = time.perf_counter()
        compile_hosts(snap, hosts)
        return time.perf_counter() - t0, False
    sample = hosts[:5]
    t0 = time.perf_counter()
    compile_hosts(snap, sample)
    return (time.perf_counter() - t0) * len(hosts) / len(sample), True


def run(hosts: int, endpoints: int, changes: int) -> dict:
    gc.collect()
    base = rss_kib()
    fab = Fabric(hosts, endpoints)
    snap = fab.snapshot()
    data_rss = rss_kib()
    eng = IncrementalCompiler()
    _upd, cold, cold_slice = drive(eng, snap, fab.hosts)
    gc.collect()
    eng_rss = rss_kib()
    flows_per_switch = len(eng.flows(fab.hosts[-1]) or ())
    per_kind: Dict[str, List[float]] = {}
    work: Dict[str, List[Tuple[int, int, int]]] = {}
    longest = cold_slice
    for k in range(changes):
        kind = ("add", "change", "delete", "refresh")[k % 4]
        if kind == "add":
            fab.add_ep()
            fab.refresh_host(fab.eps[f"ep{fab.next - 1}"].host)  # its port-status, coalesced
        elif kind == "change":
            eid = f"ep{(k * 7919) % fab.next}"
            while eid not in fab.eps:
                eid = f"ep{(int(eid[2:]) + 1) % fab.next}"
            e = fab.eps[eid]
            fab.eps[eid] = dataclasses.replace(e, ip=e.ip.rsplit(".", 1)[0] + ".254")
        elif kind == "delete":
            eid = f"ep{(k * 104729) % fab.next}"
            fab.eps.pop(eid, None)
        else:
            h = fab.hosts[k % hosts]
            fab.host_rec[h] = dataclasses.replace(fab.host_rec[h])
        upd, took, slice_ = drive(eng, fab.snapshot(), fab.hosts)
        longest = max(longest, slice_)
        per_kind.setdefault(kind, []).append(took)
        work.setdefault(kind, []).append((upd.evaluated, upd.built, sum(len(d) for d in upd.deltas.values())))
    full, extrapolated = full_cost(fab.snapshot(), fab.hosts)
    return {
        "hosts": hosts, "endpoints": endpoints, "flows_per_switch": flows_per_switch,
        "cold_s": cold, "full_s": full, "full_extrapolated": extrapolated,
        "per_kind": per_kind, "work": work, "longest_slice_s": longest,
        "rss_per_ep_kib": (eng_rss - data_rss) / endpoints, "data_rss_per_ep_kib": (data_rss - base) / endpoints,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["20:1000", "100:2000", "500:10000"])
    ap.add_argument("--changes", type=int, default=40)
    args = ap.parse_args()
    for size in args.sizes:
        h, e = (int(x) for x in size.split(":"))
        r = run(h, e, args.changes)
        print(f"== {h} hosts x {e} endpoints ({r['flows_per_switch']} flows per switch)")
        print(f"   cold start (every switch): {r['cold_s']:.2f} s")
        full = r["full_s"] * 1000
        print(f"   full compile per change (reference{', extrapolated from 5 hosts' if r['full_extrapolated'] else ''}):"
              f" {full:.0f} ms")
        for kind, times in r["per_kind"].items():
            med, mx = statistics.median(times) * 1000, max(times) * 1000
            ev = statistics.median(w[0] for w in r["work"][kind])
            bu = statistics.median(w[1] for w in r["work"][kind])
            fl = statistics.median(w[2] for w in r["work"][kind])
            print(f"   incremental {kind:8s}: median {med:7.2f} ms, max {mx:7.2f} ms "
                  f"({full / max(med, 1e-6):.0f}x less); owners evaluated {ev:.0f}, built {bu:.0f}, "
                  f"flow changes sent {fl:.0f}")
        print(f"   longest slice between yields: {r['longest_slice_s'] * 1000:.1f} ms (target <= 50)")
        print(f"   RSS per endpoint: engine {r['rss_per_ep_kib']:.1f} KiB (target <= 10 for the controller), "
              f"snapshot data {r['data_rss_per_ep_kib']:.1f} KiB")


if __name__ == "__main__":
    main()
