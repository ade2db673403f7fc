"""Service load balancing benchmark (issue 12): a VIP against its provider, directly.

(1) datapath (needs root and OVS): one userspace OVS bridge programmed by our
    compiler and FlowSync (groups + flows, exactly what the controller sends), a
    client and two providers in their own network namespaces (veth ports), busybox
    ``httpd`` in each provider.  The same client, in the same run, opens new TCP
    connections (connect + one HTTP request + close) alternately to the VIP and
    straight to a provider: connections per second and p99 connect latency of each,
    and their ratio (target >= 0.9).  Then one provider is removed from the
    service: the time from the change reaching the compiler to the switch having
    confirmed the group MODIFY (after which no new connection can choose it; checked
    with 50 new connections), target <= 200 ms.

    Connections that fail are counted apart (``*_connect_failures``), not in the
    rates: alternating VIP and direct connections from one client, the kernel may
    give a direct connection the source port of a VIP connection still in
    TIME_WAIT, whose conntrack reply tuple (provider:port -> client:port) it then
    equals; conntrack takes the SYN as the old connection's and it is lost (the
    same clash as any DNAT-only load balancer, kube-proxy's included).  A few in a
    thousand, direct connections only.

(2) ``--plain``: flows and groups per switch for S services x P providers (plain
    compile, no switch), against the formula in ``pipeline/servicelb.py``.

    sudo .venv/bin/python bench/service.py [--conns 2000] [--json]
    .venv/bin/python bench/service.py --plain [--services 1000 --providers 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from types import MappingProxyType
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contiv_sdn.pipeline.compiler import compile_hosts  # noqa: E402
from contiv_sdn.pipeline.state import (Endpoint, GlobalCfg, Host, Network, Service, Snapshot,  # noqa: E402
                                       Tenant)

SUBNET = "10.77.0"
VIP = f"{SUBNET}.100"
TARGET = 8080

CLIENT = textwrap.dedent('''
    import json, socket, sys, time
    n, targets = int(sys.argv[1]), [(a.split(":")[0], int(a.split(":")[1])) for a in sys.argv[2:]]
    out = {f"{h}:{p}": {"connect": [], "total": 0.0, "answers": {}, "errors": 0} for h, p in targets}
    for i in range(n):
        for h, p in targets:
            r = out[f"{h}:{p}"]
            t0 = time.perf_counter()
            try:
                s = socket.create_connection((h, p), timeout=3)
            except OSError:  # counted apart (see the module doc): its timeout is not a connection's cost
                r["errors"] += 1
                continue
            t1 = time.perf_counter()
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            t2 = time.perf_counter()
            r["connect"].append(t1 - t0)
            r["total"] += t2 - t0
            body = data.split(b"\\r\\n\\r\\n", 1)[-1].decode(errors="replace").strip()
            r["answers"][body] = r["answers"].get(body, 0) + 1
    print(json.dumps(out))
''')


def plain(services: int, providers: int) -> Dict[str, Any]:
    """Flows and groups of one switch for ``services`` x ``providers`` (distinct providers)."""
    hosts = {"h1": Host("h1", 1, "192.0.2.1", MappingProxyType({"vxlan0": 1})),
             "h2": Host("h2", 2, "192.0.2.2", MappingProxyType({"vxlan0": 1}))}
    eps: Dict[str, Endpoint] = {"client": Endpoint("client", "h1", "t:n", "10.0.0.1", "02:00:00:00:00:01", "c")}
    svcs: Dict[str, Service] = {}
    n = 2
    for s in range(services):
        ids = []
        for p in range(providers):
            n += 1
            eid = f"e{n}"
            eps[eid] = Endpoint(eid, "h2", "t:n", f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                                f"02:00:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}", f"p{n}")
            ids.append(eid)
        vip = f"11.{s >> 16 & 255}.{s >> 8 & 255}.{s & 255 or 1}"
        svcs[f"t:s{s}"] = Service(f"t:s{s}", "t", "t:n", vip, ((80, 8080, 6),), (("app", f"s{s}"),), tuple(ids))
    snap = Snapshot(1, GlobalCfg(), MappingProxyType({"t": Tenant("t", 1)}),
                    MappingProxyType({"t:n": Network("t:n", "t", "n", "vxlan", 100, 1, "10.0.0.0/8")}),
                    MappingProxyType({}), MappingProxyType(hosts), MappingProxyType(eps),
                    services=MappingProxyType(svcs))
    base = Snapshot(1, snap.global_cfg, snap.tenants, snap.networks, snap.groups, snap.hosts, snap.endpoints)
    t0 = time.perf_counter()
    out = compile_hosts(snap, ["h1"])
    secs = time.perf_counter() - t0
    without = compile_hosts(base, ["h1"])
    svc_flows = len(out.flows["h1"]) - len(without.flows["h1"])
    groups = out.groups["h1"]
    return {"services": services, "providers": providers, "flows_total": len(out.flows["h1"]),
            "service_flows": svc_flows, "groups": len(groups),
            "buckets": sum(len(g.buckets) for g in groups),
            "formula_3S_plus_SP": 3 * services + services * providers, "compile_s": round(secs, 2)}


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


async def datapath(conns: int) -> Dict[str, Any]:
    from twisted.internet.threads import deferToThread
    from contiv_sdn.openflow.sync import FlowSync
    from contiv_sdn.openflow.testing import SwitchLab
    from contiv_sdn.pipeline.incremental import IncrementalCompiler

    lab = SwitchLab("svb")
    await lab.start()
    names = {"c": ("client", 2), "p1": ("p1", 3), "p2": ("p2", 4)}
    procs: List[subprocess.Popen] = []
    www = tempfile.mkdtemp(prefix="svb-www-")
    try:
        sw = await lab.add_switch("br")
        br = lab.bridges[0]
        for tag, (who, n) in names.items():
            ns, host_end = f"svb-{who}", lab.name(tag)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "link", "set", host_end, "up")
            _sh("ip", "-n", ns, "link", "set", "eth0", "address", f"02:00:00:00:00:{n:02x}")
            _sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{n}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            # the userspace datapath's conntrack checks TCP checksums: no offload (as the agent does)
            _sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            lab.ifaces.append(host_end)
            await lab.vsctl("add-port", br, host_end)
            if who != "client":
                d = os.path.join(www, who)
                os.makedirs(d)
                with open(os.path.join(d, "index.html"), "w") as f:
                    f.write(f"{who}\n")
                procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p",
                                               str(TARGET), "-h", d]))
        for _ in range(50):  # the port map arrives with the port-status messages
            if all(lab.name(t) in sw.ports for t in names):
                break
            await _sleep(0.1)
        host = Host("h", sw.dpid, "192.0.2.1", MappingProxyType(dict(sw.ports)))
        eps = {who: Endpoint(who, "h", "t:n", f"{SUBNET}.{n}", f"02:00:00:00:00:{n:02x}", lab.name(tag))
               for tag, (who, n) in names.items()}

        def snap(providers: tuple) -> Snapshot:
            svc = Service("t:web", "t", "t:n", VIP, ((80, TARGET, 6),), (("app", "web"),), providers)
            return Snapshot(1, GlobalCfg(), MappingProxyType({"t": Tenant("t", 1)}),
                            MappingProxyType({"t:n": Network("t:n", "t", "n", "vxlan", 100, 1, f"{SUBNET}.0/24")}),
                            MappingProxyType({}), MappingProxyType({"h": host}), MappingProxyType(eps),
                            services=MappingProxyType({"t:web": svc}))

        eng = IncrementalCompiler()
        eng.update(snap(("p1", "p2")), ["h"])
        sync = FlowSync(sw)
        await sync.converge(eng.flows("h"), groups=lambda: eng.groups("h"))
        await _sleep(0.5)
        client = ["ip", "netns", "exec", "svb-client", sys.executable, "-c", CLIENT]
        warm = await deferToThread(subprocess.run, client + ["20", f"{VIP}:80", f"{SUBNET}.3:{TARGET}"],
                                   capture_output=True, text=True, timeout=120)
        if warm.returncode != 0:
            if os.environ.get("SVB_DEBUG"):
                ovs = lab.ovs
                assert ovs is not None
                print("\n".join(ovs.dump_flows(br)), file=sys.stderr)
                print(ovs.ofctl("-O", "OpenFlow13", "dump-groups", br), file=sys.stderr)
                print(ovs.appctl("dpctl/dump-flows"), file=sys.stderr)
                print(ovs.appctl("dpctl/dump-conntrack"), file=sys.stderr)
                d = subprocess.run(client + ["1", f"{SUBNET}.3:{TARGET}"], capture_output=True, text=True)
                print("direct:", d.stdout, d.stderr[-300:], file=sys.stderr)
                cport = sw.ports[lab.name("c")]
                for what in (f"in_port={cport},tcp,dl_src=02:00:00:00:00:02,dl_dst=00:00:11:11:11:12,"
                             f"nw_src={SUBNET}.2,nw_dst={VIP},tp_dst=80,tcp_flags=0x002",
                             f"in_port={cport},arp,dl_src=02:00:00:00:00:02,dl_dst=ff:ff:ff:ff:ff:ff,"
                             f"arp_spa={SUBNET}.2,arp_tpa={VIP},arp_op=1"):
                    print(ovs.appctl("ofproto/trace", br, what), file=sys.stderr)
            raise RuntimeError(f"no connection through the VIP: {warm.stderr.strip()[-400:]}")
        # in a thread: the reactor keeps answering the switch's echoes meanwhile
        run = await deferToThread(subprocess.run, client + [str(conns), f"{VIP}:80", f"{SUBNET}.3:{TARGET}"],
                                  capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"the client failed: {run.stderr.strip()[-600:]}")
        res = json.loads(run.stdout)
        vip_r, direct_r = res[f"{VIP}:80"], res[f"{SUBNET}.3:{TARGET}"]

        def p99(xs: List[float]) -> float:
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000

        out: Dict[str, Any] = {
            "connections_each": conns,
            "vip_conn_per_s": round(len(vip_r["connect"]) / vip_r["total"], 1),
            "direct_conn_per_s": round(len(direct_r["connect"]) / direct_r["total"], 1),
            "vip_p99_connect_ms": round(p99(vip_r["connect"]), 3),
            "direct_p99_connect_ms": round(p99(direct_r["connect"]), 3),
            "vip_answers": vip_r["answers"],
            "vip_connect_failures": vip_r["errors"], "direct_connect_failures": direct_r["errors"],
        }
        out["rate_ratio"] = round(out["vip_conn_per_s"] / out["direct_conn_per_s"], 3)
        # removal: p2 leaves the service
        t0 = time.perf_counter()
        upd = eng.update(snap(("p1",)), ["h"])
        await sync.apply(upd.deltas.get("h", {}), lambda: eng.flows("h"), groups=lambda: eng.groups("h"))
        out["removal_to_group_confirmed_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        after = json.loads((await deferToThread(subprocess.run, client + ["50", f"{VIP}:80"], capture_output=True,
                                                text=True, timeout=120, check=True)).stdout)[f"{VIP}:80"]["answers"]
        out["answers_after_removal"] = after
        return out
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for who, _n in names.values():
            subprocess.run(["ip", "netns", "del", f"svb-{who}"], capture_output=True)
        shutil.rmtree(www, ignore_errors=True)
        await lab.stop()


def _sleep(s: float):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    return deferLater(reactor, s, lambda: None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", action="store_true", help="flows/groups per switch only (no root)")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--providers", type=int, default=10)
    ap.add_argument("--conns", type=int, default=2000, help="new connections to each target")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.plain:
        result: Dict[str, Any] = plain(a.services, a.providers)
    else:
        from twisted.internet import defer, task
        box: Dict[str, Any] = {}

        async def go(_reactor: Any) -> None:
            box.update(await datapath(a.conns))
            box["plain"] = plain(a.services, a.providers)
            print(json.dumps(box, indent=None if a.json else 2))

        task.react(lambda r: defer.ensureDeferred(go(r)), [])  # exits the process
        return 0
    print(json.dumps(result, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
