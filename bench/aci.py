"""ACI benchmark (issue 16): time and APIC calls to converge N EPGs x M rules.

Real Redis and the netmaster's semantics write the intent; the reconciler mirrors
it into the stand-in APIC (loopback HTTP, drivers/aci/standin.py -- not an APIC,
so times are for our side plus a fast fake; a real APIC takes longer per call,
which is why the call counts are the figure that matters).

Each EPG ``gI`` carries its own policy ``pI`` with M allow rules from ``g(I+1)``
(tcp ports 8000+j), so the APIC gets N contracts of M entries each.  Measured:

1. from empty: the reconciler starts against an empty APIC;
2. one change each: a rule added, that rule removed, an EPG added -- the
   target is a constant number of calls (one POST), not a re-push;
3. one audit (the periodic read that repairs drift): its calls.

    .venv/bin/python bench/aci.py [--epgs 100] [--rules 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from contiv_sdn.master.config import MasterConfig  # noqa: E402
from contiv_sdn.master.core import Master  # noqa: E402
from contiv_sdn.model import TYPES, decode, validate  # noqa: E402
from contiv_sdn.store import Store  # noqa: E402
from contiv_sdn.testing import RedisServer  # noqa: E402
from contiv_sdn.testing.wait import wait_for  # noqa: E402
from drivers.aci.client import ApicClient  # noqa: E402
from drivers.aci.reconciler import Reconciler  # noqa: E402
from drivers.aci.standin import StandinApic  # noqa: E402


async def put(master: Master, kind: str, key: str, body: dict) -> None:
    spec = TYPES[kind]
    await master.post(kind, key, validate(spec, decode(spec, json.dumps(body).encode()), key))


async def run(epgs: int, rules: int) -> Dict[str, Any]:
    redis = RedisServer().start()
    apic = StandinApic("admin", "pw")
    store = await Store.connect(redis.url)
    rec = None
    try:
        master = Master(store, MasterConfig(infra="aci", vlans="100-3000"))
        await master.ensure_defaults()
        await put(master, "aciGw", "aciGw", {
            "name": "aciGw", "physicalDomain": "dom", "enforcePolicies": "yes",
            "includeCommonTenant": "no",
            "pathBindings": "topology/pod-1/paths-101/pathep-[eth1/1]"})
        await put(master, "network", "default:net", {
            "tenantName": "default", "networkName": "net", "encap": "vlan",
            "subnet": "10.8.0.0/16", "gateway": "10.8.0.1", "pktTag": 100})
        for i in range(epgs):
            await put(master, "policy", f"default:p{i}", {"tenantName": "default",
                                                          "policyName": f"p{i}"})
        for i in range(epgs):
            await put(master, "endpointGroup", f"default:g{i}", {
                "tenantName": "default", "groupName": f"g{i}", "networkName": "net",
                "policies": [f"p{i}"]})
        for i in range(epgs):
            for j in range(rules):
                await put(master, "rule", f"default:p{i}:{j}", {
                    "tenantName": "default", "policyName": f"p{i}", "ruleId": str(j),
                    "direction": "in", "protocol": "tcp", "port": 8000 + j, "action": "allow",
                    "fromEndpointGroup": f"g{(i + 1) % epgs}"})
        port = await apic.listen()
        client = ApicClient([f"http://127.0.0.1:{port}"], "admin", "pw", timeout=60)
        rec = Reconciler(store, client, audit_interval=3600)

        async def converged():
            rev = await store.revision()
            return rec.in_sync and rec.synced_rev >= rev

        out: Dict[str, Any] = {"epgs": epgs, "rules_per_epg": rules}

        async def measure(name: str, change) -> None:
            before = dict(client.calls)
            t0 = time.perf_counter()
            await change()
            await wait_for(converged, timeout=600, every=0.005, what=name)
            calls = {k: v - before.get(k, 0) for k, v in client.calls.items()
                     if v - before.get(k, 0)}
            out[name] = {"seconds": round(time.perf_counter() - t0, 3), "calls": calls,
                         "total_calls": sum(calls.values())}

        async def start():
            rec.startService()

        await measure("from_empty", start)
        out["mos"] = len(apic.mit.mos) - 1
        await measure("rule_added", lambda: put(master, "rule", "default:p0:new", {
            "tenantName": "default", "policyName": "p0", "ruleId": "new", "direction": "in",
            "protocol": "udp", "port": 53, "action": "allow", "fromEndpointGroup": "g1"}))
        await measure("rule_removed", lambda: master.delete("rule", "default:p0:new"))
        await measure("epg_added", lambda: put(master, "endpointGroup", "default:extra", {
            "tenantName": "default", "groupName": "extra", "networkName": "net",
            "policies": ["p0"]}))

        async def audit():
            rec.schedule(discover=True)
            rec.in_sync = False
        await measure("audit", audit)
        return out
    finally:
        if rec is not None and rec.running:
            await rec.stopService()
        await apic.stop()
        await store.close()
        redis.stop()


def _print(result: Dict[str, Any]) -> None:
    print(f"ACI: {result['epgs']} EPGs x {result['rules_per_epg']} rules -> "
          f"{result['mos']} MOs on the (stand-in) APIC")
    for name in ("from_empty", "rule_added", "rule_removed", "epg_added", "audit"):
        r = result[name]
        calls = ", ".join(f"{k} {v}" for k, v in sorted(r["calls"].items()))
        print(f"  {name:<13} {r['seconds']:8.3f} s  {r['total_calls']:4d} calls ({calls})")
    print("  target: one change -> a constant number of calls (not a re-push): "
          + ("met" if all(result[n]["total_calls"] <= 2 for n in
                          ("rule_added", "rule_removed", "epg_added")) else "NOT met"))


def main() -> None:
    p = argparse.ArgumentParser(description="ACI benchmark: time and APIC calls to converge "
                                            "N EPGs x M rules (stand-in APIC)")
    p.add_argument("--epgs", type=int, default=100)
    p.add_argument("--rules", type=int, default=10)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    async def go(reactor):
        result = await run(args.epgs, args.rules)
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            _print(result)

    task.react(lambda r: defer.ensureDeferred(go(r)))


if __name__ == "__main__":
    main()
