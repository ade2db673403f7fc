"""DNS serving: our server vs dnsmasq on the same records, same load generator, same run.

Records: ``--groups`` endpoint groups of ``--members`` endpoints each (every
endpoint also has a container name), in one network of one tenant.  Ours
serves them from a :class:`~contiv_sdn.dns.names.Directory` (as netplugin
would, minus Redis); dnsmasq (Debian's ``dnsmasq-base``) serves the same names
from an ``--addn-hosts`` file (a group is one name on many lines: many A
records, like ours).  The query mix is container names (one record) and group
names (``--members`` records), A, plain (no EDNS: what glibc, musl and Docker's
resolver send).

Load generator: ``dnsperf`` (Debian), the same binary and options for both.
Each server runs pinned to CPU 0 and dnsperf to CPU 1 (when there are two).
Everything is on loopback.

1. Saturation: dnsperf as fast as it can (``-q`` outstanding) for ``--seconds``,
   ours and dnsmasq alternately, ``--rounds`` times; best QPS of each.
2. Latency below saturation: both at the same fixed rates (``--load`` × our
   saturation QPS: 10, 25 and 50 %), every query's latency (dnsperf ``-v``) →
   p50/p99.  On a shared machine the p99 is mostly the scheduler's: the load
   average is printed with the figures.

Targets (issue 10): ours ≥ 0.5 × dnsmasq's QPS, p99 ≤ 2 ms below saturation.
The container path's added latency (datapath to the server) is not measured
here: that serving path is not built yet.

    .venv/bin/python bench/dns.py [--groups 20 --members 10 --seconds 5 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this file is named dns.py: its own folder must not hide dnspython's ``dns`` package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.modules.pop("dns", None)
sys.path.insert(0, ROOT)


# -- the records ------------------------------------------------------------------------
def make_records(groups: int, members: int) -> List[Dict[str, str]]:
    out = []
    n = 0
    for g in range(groups):
        for m in range(members):
            n += 1
            out.append({"id": f"ep{n}", "tenant": "default", "network": "default:contiv-net",
                        "networkName": "contiv-net", "groupName": f"group{g}",
                        "group": f"default:group{g}", "containerName": f"ctr{n}",
                        "ipAddress": f"10.{1 + n // 65536}.{(n >> 8) & 255}.{n & 255}",
                        "ipv6Address": ""})
    return out


def hosts_file(records: List[Dict[str, str]], path: str) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(f"{r['ipAddress']} {r['containerName']}\n")
        for r in records:
            f.write(f"{r['ipAddress']} {r['groupName']}\n")


def query_file(records: List[Dict[str, str]], groups: int, path: str) -> None:
    with open(path, "w") as f:
        for i, r in enumerate(records):
            f.write(f"{r['containerName']} A\n")
            f.write(f"group{i % groups} A\n")


# -- our server in its own process ----------------------------------------------------
def serve(records_path: str, port: int) -> None:
    """The server process: our DNSServer on 127.0.0.1:port, answering as one endpoint."""
    from twisted.internet import reactor

    from contiv_sdn.dns.names import Asker, Directory
    from contiv_sdn.dns.resolver import Resolver
    from contiv_sdn.dns.server import DNSServer, fixed_scope

    with open(records_path) as f:
        records = json.load(f)
    resolver = Resolver(Directory({r["id"]: r for r in records}, {}, {}))
    server = DNSServer(resolver, None)
    server.listen_udp(port, "127.0.0.1", fixed_scope(Asker("default", "contiv-net")))
    reactor.callWhenRunning(lambda: (sys.stdout.write("ready\n"), sys.stdout.flush()))
    reactor.run()


def _pin(cpu: int) -> List[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() > 1 else []


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_answering(port: int, name: str, timeout: float = 10.0) -> None:
    import dns.message
    import dns.query
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.5)
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers DNS on 127.0.0.1:{port}")


class Servers:
    def __init__(self, workdir: str, records: List[Dict[str, str]]) -> None:
        self.workdir = workdir
        self.procs: List[subprocess.Popen] = []
        rec_path = os.path.join(workdir, "records.json")
        with open(rec_path, "w") as f:
            json.dump(records, f)
        hosts = os.path.join(workdir, "hosts")
        hosts_file(records, hosts)
        probe = records[0]["containerName"]
        self.ours = _free_udp_port()
        self._start(_pin(0) + [sys.executable, os.path.abspath(__file__), "--serve", rec_path,
                               "--port", str(self.ours)])
        _wait_answering(self.ours, probe)
        self.dnsmasq = _free_udp_port()
        self._start(_pin(0) + ["dnsmasq", "--keep-in-foreground", "--port", str(self.dnsmasq),
                               "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                               "--no-hosts", f"--addn-hosts={hosts}", "--pid-file=",
                               "--user=" + os.environ.get("USER", "root"), "--cache-size=10000",
                               "--log-facility=" + os.path.join(workdir, "dnsmasq.log")])
        _wait_answering(self.dnsmasq, probe)

    def _start(self, argv: List[str]) -> None:
        self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, cwd=self.workdir))

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def dnsperf(port: int, qfile: str, seconds: float, qps: Optional[float] = None,
            verbose: bool = False, outstanding: int = 200) -> Tuple[float, List[float], float]:
    """(QPS completed, latencies in seconds if ``verbose``, fraction lost)."""
    argv = _pin(1) + ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile,
                      "-l", str(seconds), "-q", str(outstanding), "-t", "2"]
    if qps:
        argv += ["-Q", str(int(qps))]
    if verbose:
        argv += ["-v"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    qps_done, lost, lat = 0.0, 0.0, []
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("Queries per second:"):
            qps_done = float(s.split(":")[1])
        elif s.startswith("Queries lost:"):
            lost = float(s.split("(")[1].split("%")[0]) / 100
        elif verbose and s.startswith(">"):
            try:
                lat.append(float(s.split()[-1]))
            except ValueError:
                pass
    return qps_done, lat, lost


def pct(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--load", type=lambda v: [float(x) for x in v.split(",")],
                    default=[0.1, 0.25, 0.5],
                    help="fixed rates of the latency runs, as fractions of our saturation QPS")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    for tool in ("dnsmasq", "dnsperf"):
        if not shutil.which(tool):
            print(f"bench/dns.py: {tool} is not installed (Debian packages dnsmasq-base, "
                  f"dnsperf; scripts/install.sh installs them)", file=sys.stderr)
            return 1
    records = make_records(args.groups, args.members)
    workdir = tempfile.mkdtemp(prefix="contiv-dnsbench-")
    qfile = os.path.join(workdir, "queries")
    query_file(records, args.groups, qfile)
    servers = Servers(workdir, records)
    try:
        sat: Dict[str, List[float]] = {"ours": [], "dnsmasq": []}
        for _ in range(args.rounds):
            for who, port in (("ours", servers.ours), ("dnsmasq", servers.dnsmasq)):
                sat[who].append(dnsperf(port, qfile, args.seconds)[0])
        best = {k: max(v) for k, v in sat.items()}
        lats: Dict[int, Dict[str, Tuple[float, float, float]]] = {}
        for load in args.load:
            rate = int(max(100.0, load * best["ours"]))
            lat = lats[rate] = {}
            for who, port in (("ours", servers.ours), ("dnsmasq", servers.dnsmasq)):
                _qps, samples, lost = dnsperf(port, qfile, args.seconds, qps=rate, verbose=True)
                lat[who] = (pct(samples, 50) * 1e3, pct(samples, 99) * 1e3, lost)
    finally:
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = best["ours"] / best["dnsmasq"] if best["dnsmasq"] else float("nan")
    lowest = lats[min(lats)]["ours"][1] if lats else float("nan")
    result = {"records": len(records), "groups": args.groups, "members": args.members,
              "qps": best, "qps_runs": sat, "qps_ratio": round(ratio, 3),
              "latency_ms": {str(rate): {k: {"p50": round(v[0], 3), "p99": round(v[1], 3),
                                             "lost": v[2]} for k, v in lat.items()}
                             for rate, lat in lats.items()},
              "targets": {"qps_ratio>=0.5": ratio >= 0.5, "p99<=2ms": lowest <= 2.0}}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"DNS serving, {len(records)} endpoints in {args.groups} groups "
          f"(query mix: container names and {args.members}-record group names), loopback, "
          f"dnsperf as load generator, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"  saturation QPS   ours {best['ours']:9.0f}   dnsmasq {best['dnsmasq']:9.0f}   "
          f"ratio {ratio:.2f}x  (target >= 0.5x; runs: ours "
          f"{', '.join(f'{x:.0f}' for x in sat['ours'])}; dnsmasq "
          f"{', '.join(f'{x:.0f}' for x in sat['dnsmasq'])})")
    for rate, lat in sorted(lats.items()):
        print(f"  at {rate:6d} qps   ours p50 {lat['ours'][0]:.3f} ms p99 {lat['ours'][1]:.3f} ms"
              f"   dnsmasq p50 {lat['dnsmasq'][0]:.3f} ms p99 {lat['dnsmasq'][1]:.3f} ms"
              f"  (target ours p99 <= 2 ms)")
    print("  container path (datapath to the server): not measured, serving path not built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
