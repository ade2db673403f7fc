"""Policy benchmark, part (2): flows per switch and compile time, plain data (no lab).

For 1k/5k/10k endpoints x 10/50/200 rules: one tenant, one /16 network, 10
groups on 4 hosts; the rules are spread over the groups' policies (one policy
per group, plus one shared ``in tcp deny`` policy on every group) and mix the
shapes that cost the most flows (a port without a protocol: TCP and UDP; a
last-octet range: several prefixes).  Prints, per case, the flows of one
switch (all of them, and the policy tables' share), the policy flows the
formula of ``contiv_sdn/pipeline/policy.py`` predicts, the full compile of
every switch, and the incremental cost of adding one rule.

    .venv/bin/python bench/policy.py --plain       (bench/policy.py imports this part)
    .venv/bin/python bench/policy_plain.py [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from types import MappingProxyType
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contiv_sdn.pipeline import policy as PL  # noqa: E402
from contiv_sdn.pipeline import tables as T  # noqa: E402
from contiv_sdn.pipeline.compiler import compile_hosts  # noqa: E402
from contiv_sdn.pipeline.incremental import IncrementalCompiler  # noqa: E402
from contiv_sdn.pipeline.state import (Endpoint, GlobalCfg, Group, Host, Network, Rule,  # noqa: E402
                                       Snapshot, Tenant)

ENDPOINTS = (1000, 5000, 10000)
RULES = (10, 50, 200)
GROUPS, HOSTS = 10, 4
_SHAPES = [dict(protocol="tcp", port=80), dict(protocol="", port=8000), dict(protocol="udp", port=53),
           dict(protocol="tcp", from_ip="10.8.1.2-200"), dict(protocol="icmp", from_group="g0"),
           dict(protocol="tcp", port=443, from_ip="10.8.0.0/16")]


def _rules(n: int) -> List[Rule]:
    out = [Rule("t:shared:1", "t", "t:shared", "in", "deny", 1, "tcp")]
    for i in range(n - 1):
        g = i % GROUPS
        shape = _SHAPES[i % len(_SHAPES)]
        direction = "in" if ("from_ip" in shape or "from_group" in shape or i % 2) else "out"
        out.append(Rule(f"t:pol{g}:{i}", "t", f"t:pol{g}", direction, ("allow", "deny")[i % 3 == 0],
                        1 + i % 100, **shape))
    return out


def snapshot(n_eps: int, rules: List[Rule]) -> Snapshot:
    net = Network("t:big", "t", "big", "vxlan", 7000, 1, "10.8.0.0/16")
    groups = {f"t:g{g}": Group(f"t:g{g}", "t", net.key, 100 + g, (f"t:pol{g}", "t:shared")) for g in range(GROUPS)}
    eps = {}
    for i in range(n_eps):
        eid = f"e{i}"
        eps[eid] = Endpoint(eid, f"h{i % HOSTS}", net.key, f"10.8.{i // 250}.{i % 250 + 1}",
                            f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}", f"p{i}",
                            f"t:g{i % GROUPS}", 100 + i % GROUPS)
    hosts = {}
    for h in range(HOSTS):
        ports = {"vxlan0": 1, **{e.port: 10 + n for n, e in enumerate(eps.values()) if e.host == f"h{h}"}}
        hosts[f"h{h}"] = Host(f"h{h}", h + 1, f"192.168.50.{h + 1}", MappingProxyType(ports))
    f = MappingProxyType
    return Snapshot(1, GlobalCfg(), f({"t": Tenant("t", 1)}), f({net.key: net}), f(groups), f(hosts), f(eps),
                    f({r.key: r for r in rules}))


def _formula(snap: Snapshot, rules: List[Rule], host: str) -> int:
    local = {e.epg_id for e in snap.endpoints.values() if e.host == host}
    by_group = []
    for g in snap.groups.values():
        if g.epg_id not in local:
            continue
        args, _ = PL.group_args(g.key, g, [r for r in rules if r.policy in g.policies], snap.groups,
                                snap.networks)
        by_group.append(args.rules)
    return PL.formula(1, by_group) - 1  # the switches have a tunnel port and no uplink


def case(n_eps: int, n_rules: int) -> Dict[str, Any]:
    rules = _rules(n_rules)
    snap = snapshot(n_eps, rules)
    names = sorted(snap.hosts)
    t0 = time.perf_counter()
    full = compile_hosts(snap, names)
    t_full = time.perf_counter() - t0
    flows = full.flows["h0"]
    policy = sum(1 for fl in flows if T.POLICY <= fl.table <= T.POLICY_COMMIT)
    eng = IncrementalCompiler()
    eng.update(snap, names)
    more = rules + [Rule("t:pol3:new", "t", "t:pol3", "in", "allow", 50, "tcp", 9090, from_ip="10.8.2.0/24")]
    snap2 = dataclasses.replace(snap, revision=2, rules=MappingProxyType({r.key: r for r in more}))
    t0 = time.perf_counter()
    upd = eng.update(snap2, names)
    t_rule = time.perf_counter() - t0
    return {"endpoints": n_eps, "rules": n_rules, "flows_per_switch": len(flows), "policy_flows": policy,
            "formula": _formula(snap, rules, "h0"), "full_compile_ms": t_full * 1000,
            "rule_add_ms": t_rule * 1000, "rule_add_flow_mods": sum(len(d) for d in upd.deltas.values())}


def plain_data_bench(args: Optional[argparse.Namespace] = None) -> Dict[str, Any]:
    """Part (2); prints a table unless ``args.json``; returns the figures."""
    rows = [case(e, r) for e in ENDPOINTS for r in RULES]
    linear = all(r["policy_flows"] == r["formula"] for r in rows) and all(
        len({r["policy_flows"] for r in rows if r["rules"] == n}) == 1 for n in RULES)
    if not (args is not None and getattr(args, "json", False)):
        print(f"policy, plain data: {GROUPS} groups on {HOSTS} hosts, switch h0 "
              f"(formula: {PL.BASE_FLOWS} + 2*networks + sum over local groups of their rules' p*s*d)")
        print(f"{'endpoints':>9} {'rules':>5} {'flows/switch':>12} {'policy':>7} {'formula':>7} "
              f"{'full compile':>13} {'+1 rule':>9} {'flow_mods':>9}")
        for r in rows:
            print(f"{r['endpoints']:>9} {r['rules']:>5} {r['flows_per_switch']:>12} {r['policy_flows']:>7} "
                  f"{r['formula']:>7} {r['full_compile_ms']:>10.0f} ms {r['rule_add_ms']:>6.2f} ms "
                  f"{r['rule_add_flow_mods']:>9}")
        print(f"target: policy flows linear in rules and independent of endpoints (= formula): "
              f"{'met' if linear else 'NOT met'}")
    return {"cases": rows, "linear_as_stated": linear}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", action="store_true", help="(the only part here)")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    res = plain_data_bench(ns)
    if ns.json:
        print(json.dumps(res, indent=2))
