"""REST benchmark: netmaster create + inspect of 1,000 networks, against a
minimal Klein app that does one Redis write (create) or read (inspect) per
request, both measured in the same run on the same kind of private Redis.

    .venv/bin/python bench/api.py [--objects 1000] [--concurrency 10] [--rounds 4]

Prints throughput and p50/p99 latency per phase and the ratio
netmaster / baseline (throughput); the creates run in rounds alternating
the two servers, and the create ratio is given per round and as the median
next to issue 8's target (>= 0.5x the baseline); then the endpoint rate: ``--endpoints`` endpoints
created and deleted through ``/plugin/createEndpoint`` and
``/plugin/deleteEndpoint`` (the agents' path) by concurrent clients, spread
over a few networks and hosts, against the target of >= 500/s per
netmaster.  Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def serve_baseline(port: int, redis_url: str) -> None:
    """The reference: Klein + txredisapi, one HSET per POST, one HGET per GET."""
    import txredisapi
    from klein import Klein
    from twisted.internet import defer, reactor
    from twisted.web.server import Site

    from contiv_sdn.store import RedisURL

    u = RedisURL.parse(redis_url)
    app = Klein()
    state = {}

    @app.route("/obj/<key>/", methods=["POST"])
    async def create(request, key):
        body = request.content.read()
        await state["conn"].hset("bench:obj", key, body)
        request.setHeader(b"Content-Type", b"application/json")
        return body + b"\n"

    @app.route("/obj/<key>/", methods=["GET"])
    async def inspect(request, key):
        value = await state["conn"].hget("bench:obj", key)
        request.setHeader(b"Content-Type", b"application/json")
        return (value or b"null") + b"\n"

    @app.route("/version", methods=["GET"])
    def version(request):
        return b"{}\n"

    async def start():
        state["conn"] = await txredisapi.UnixConnectionPool(u.path, poolsize=2, charset=None,
                                                            convertNumbers=False)
        site = Site(app.resource())
        site.log = lambda request: None
        reactor.listenTCP(port, site, interface="127.0.0.1")

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))
    reactor.run()


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("baseline server exited")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def run_phase(client, requests, concurrency):
    """Issue (method, path, body) requests with ``concurrency`` in flight; latencies in ms."""
    import treq
    from twisted.internet import defer

    latencies = []
    queue = list(requests)
    queue.reverse()

    async def worker():
        while queue:
            method, path, body = queue.pop()
            t0 = time.perf_counter()
            resp = await treq.request(method, client["url"] + path,
                                      data=json.dumps(body).encode() if body is not None else None,
                                      headers={"Content-Type": ["application/json"]},
                                      pool=client["pool"])
            content = await treq.content(resp)
            if resp.code != 200:
                raise RuntimeError(f"{method} {path}: {resp.code} {content[:200]!r}")
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(concurrency)],
                              consumeErrors=True)
    elapsed = time.perf_counter() - t0
    return {"n": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def network_body(i: int) -> dict:
    return {"tenantName": "default", "networkName": f"bench-{i}", "encap": "vxlan",
            "subnet": f"10.{100 + i // 250}.{i % 250}.0/24", "gateway": f"10.{100 + i // 250}."
            f"{i % 250}.254"}


#: issue 8's targets
TARGET_CREATE_RATIO = 0.5
TARGET_ENDPOINT_RATE = 500.0


def endpoint_body(i: int, networks: int, hosts: int) -> dict:
    """What the agent sends for one container (no address asked: the netmaster picks)."""
    ep = f"bench-ep-{i}"
    return {"TenantName": "default", "NetworkName": f"bench-{i % networks}", "ServiceName": "",
            "EndpointID": ep, "EPCommonName": f"c{i}", "ContainerID": f"cid{i}",
            "ConfigEP": {"Container": ep, "Host": f"host-{i % hosts}", "IPAddress": "",
                         "IPv6Address": "", "ServiceName": "", "IntfName": f"vport{i}",
                         "VtepIP": f"192.168.0.{1 + i % hosts}", "ContainerID": f"cid{i}",
                         "Labels": {}}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_endpoints(args, nm_url: str, nm_pid: int) -> dict:
    """Endpoint create then delete through /plugin/* (networks from the create phase)."""
    from twisted.web.client import HTTPConnectionPool
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = args.ep_concurrency
    client = {"url": nm_url, "pool": pool}
    nets = min(args.objects, max(4, -(-args.endpoints // 200)))  # a /24 holds 253
    creates = [("POST", "/plugin/createEndpoint", endpoint_body(i, nets, 8))
               for i in range(args.endpoints)]
    deletes = [("POST", "/plugin/deleteEndpoint",
                {"TenantName": "default", "NetworkName": f"bench-{i % nets}", "ServiceName": "",
                 "EndpointID": f"bench-ep-{i}", "IPv4Address": ""})
               for i in range(args.endpoints)]
    out = {}
    for phase, requests in (("create", creates), ("delete", deletes)):
        before = cpu_seconds(nm_pid)
        out[phase] = await run_phase(client, requests, args.ep_concurrency)
        # the netmaster's own CPU per request: what bounds its rate on a machine of its
        # own, whatever the load generator in this process and the rest of the machine do
        out[phase]["cpu_ms"] = (cpu_seconds(nm_pid) - before) / out[phase]["n"] * 1000
    await pool.closeCachedConnections()
    return out


def _merge(parts: list) -> dict:
    """Phases run in rounds, as one: total requests over total time; the
    latency percentiles of the slowest round (a conservative figure)."""
    n = sum(p["n"] for p in parts)
    seconds = sum(p["seconds"] for p in parts)
    return {"n": n, "seconds": seconds, "rps": n / seconds,
            "p50": max(p["p50"] for p in parts), "p99": max(p["p99"] for p in parts)}


async def bench(args, nm_url: str, base_url: str, nm_pid: int) -> dict:
    """The creates run in ``--rounds`` rounds, the baseline and the netmaster
    alternating (and alternating which goes first), so that a burst of load
    from something else on the machine hits both sides of a round's ratio
    rather than one side of the whole run; the ratio is reported per round
    and as their median.  Each round creates new objects, so the last round
    runs with the tenant holding every network of the earlier ones."""
    from twisted.web.client import HTTPConnectionPool
    from twisted.internet import reactor

    clients = {}
    for name, url in (("baseline", base_url), ("netmaster", nm_url)):
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = args.concurrency
        clients[name] = {"url": url, "pool": pool}

    def creates(name: str, lo: int, hi: int) -> list:
        if name == "netmaster":
            return [("POST", f"/api/v1/networks/default:bench-{i}/", network_body(i))
                    for i in range(lo, hi)]
        return [("POST", f"/obj/default:bench-{i}/", network_body(i)) for i in range(lo, hi)]

    def inspects(name: str, n: int) -> list:
        if name == "netmaster":
            return [("GET", f"/api/v1/inspect/networks/default:bench-{i}/", None)
                    for i in range(n)]
        return [("GET", f"/obj/default:bench-{i}/", None) for i in range(n)]

    rounds = max(1, args.rounds)
    per = -(-args.objects // rounds)
    parts: dict = {"baseline": [], "netmaster": []}
    ratios = []
    for r in range(rounds):
        lo, hi = r * per, min(args.objects, (r + 1) * per)
        if lo >= hi:
            break
        order = ("baseline", "netmaster") if r % 2 == 0 else ("netmaster", "baseline")
        got = {}
        for name in order:
            got[name] = await run_phase(clients[name], creates(name, lo, hi), args.concurrency)
            parts[name].append(got[name])
        ratios.append(got["netmaster"]["rps"] / got["baseline"]["rps"])
    results = {"create_ratios": ratios}
    for name in ("baseline", "netmaster"):
        results[name] = {"create": _merge(parts[name]),
                         "inspect": await run_phase(clients[name], inspects(name, args.objects),
                                                    args.concurrency)}
        await clients[name]["pool"].closeCachedConnections()
    if args.endpoints:
        results["endpoints"] = await bench_endpoints(args, nm_url, nm_pid)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4,
                        help="create rounds, baseline and netmaster alternating (see bench())")
    parser.add_argument("--endpoints", type=int, default=2000,
                        help="endpoints created then deleted through /plugin/* (0: skip)")
    parser.add_argument("--ep-concurrency", type=int, default=32,
                        help="endpoint requests in flight (agents on many hosts)")
    parser.add_argument("--controller", action="store_true",
                        help="run the netmaster with its OpenFlow controller (no switches)")
    parser.add_argument("--serve-baseline", nargs=2, metavar=("PORT", "REDIS_URL"))
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1])
        return

    from twisted.internet import defer

    from contiv_sdn.testing import RedisServer, free_tcp_port
    from contiv_sdn.testing.netmaster import NetmasterProcess

    redis_nm = RedisServer(appendonly=True).start()
    redis_base = RedisServer(appendonly=True).start()
    nm = base = None
    try:
        ofp = f"tcp:{free_tcp_port()}:interface=127.0.0.1" if args.controller else "none"
        nm = NetmasterProcess(redis_url=redis_nm.url, ofp_listen=ofp).start()
        port = free_tcp_port()
        base = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-baseline",
                                 str(port), redis_base.url])
        base_url = f"http://127.0.0.1:{port}"
        wait_http(base_url + "/version", base)
        results = {}

        def run(reactor):
            d = defer.ensureDeferred(bench(args, nm.url, base_url, nm.proc.pid))
            d.addCallback(results.update)
            return d

        _react(run)
        print(f"{args.objects} objects ({args.rounds} create rounds), "
              f"{args.concurrency} requests in flight, "
              f"one private redis-server each, controller "
              f"{'on' if args.controller else 'off'}")
        print(f"{'':10} {'phase':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for name in ("baseline", "netmaster"):
            for phase in ("create", "inspect"):
                r = results[name][phase]
                print(f"{name:10} {phase:8} {r['rps']:9.1f} {r['p50']:8.2f} {r['p99']:8.2f}")
        for phase in ("create", "inspect"):
            ratio = results["netmaster"][phase]["rps"] / results["baseline"][phase]["rps"]
            print(f"ratio netmaster/baseline {phase}: {ratio:.2f} (throughput), "
                  f"p50 x{results['netmaster'][phase]['p50'] / results['baseline'][phase]['p50']:.1f}")
        ratios = results["create_ratios"]
        median = sorted(ratios)[len(ratios) // 2] if len(ratios) % 2 else \
            sum(sorted(ratios)[len(ratios) // 2 - 1:len(ratios) // 2 + 1]) / 2
        print(f"create ratio per round ({len(ratios)} rounds, alternating): "
              f"{' '.join(f'{r:.2f}' for r in ratios)}; median {median:.2f} "
              f"[target >= {TARGET_CREATE_RATIO}]")
        if "endpoints" in results:
            eps = results["endpoints"]
            print(f"endpoints ({args.endpoints}, {args.ep_concurrency} in flight, "
                  f"/plugin/createEndpoint + /plugin/deleteEndpoint):")
            for phase in ("create", "delete"):
                r = eps[phase]
                print(f"  {phase:8} {r['rps']:9.1f}/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms "
                      f"[target >= {TARGET_ENDPOINT_RATE:.0f}/s]; netmaster CPU "
                      f"{r['cpu_ms']:.2f} ms per request ({1000 / r['cpu_ms']:.0f}/s on a core "
                      f"of its own)")
    finally:
        if base is not None:
            base.terminate()
            base.wait()
        if nm is not None:
            nm.stop()
        redis_nm.stop()
        redis_base.stop()


def _react(fn) -> None:
    """Run ``fn(reactor)`` to completion without exiting the process (unlike task.react)."""
    from twisted.internet import reactor

    errors = []

    def go():
        d = fn(reactor)
        d.addErrback(errors.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if errors:
        errors[0].raiseException()


if __name__ == "__main__":
    main()
