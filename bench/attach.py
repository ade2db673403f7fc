"""Attach latency: a container's whole network set-up and tear-down, ours vs the reference.

Measured in one run, interleaved, on one lab host (its own namespace, OVS,
netplugin with the Docker driver, dockerd, podman) with Redis and a netmaster:

* ``podman run --rm --network contiv busybox true``  (contiv-cni → netplugin → netmaster,
  veth + OVS port)  vs  the same with a network of the reference ``bridge`` +
  ``host-local`` CNI plugins;
* ``docker run --rm --net contiv-net busybox true`` (our Docker driver)  vs
  ``--net none``.

For scale, a third Docker case uses ``floor``: a remote driver that does nothing
but create the veth (Docker's own IPAM): what any remote network driver costs
Docker 20.10 here, before the driver does any real work.

Each case runs back to back ``--runs`` times after ``--warmup`` runs; medians are
compared.  Targets: podman through contiv-cni ≤ 1.1 × the reference ``bridge``
(issue 8, item 4), Docker ≤ 1.2 × ``--net none``.  Podman runs the plugin four times
per ``run --rm`` (VERSION, ADD, VERSION, DEL) from the lab's plugin folder, where
the lab writes the lean launcher (drivers/cni/launcher.py) as ``contiv-cni``.

    sudo .venv/bin/python bench/attach.py [--runs 15] [--warmup 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contiv_sdn.lab.core import Lab  # noqa: E402
from contiv_sdn.lab.docker import Podman  # noqa: E402
from contiv_sdn.testing import free_tcp_port  # noqa: E402

NET, SUBNET, GATEWAY = "contiv-net", "20.1.1.0/24", "20.1.1.254"


def _post(url: str, path: str, body: dict) -> None:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=15).read()


def _timed(argv, env=None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


class FloorDriver:
    """The cheapest possible remote network driver: a veth per endpoint, nothing else.

    Served from a thread (this script is synchronous) on ``<plugins>/drvfloor.sock``;
    the veths are made with ``ip -n <host netns>`` where dockerd runs.
    """

    def __init__(self, sock: str, netns: str):
        import http.server
        import socketserver
        import threading

        floor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = json.loads(body) if body.strip() else {}
                out = floor.answer(self.path.lstrip("/"), req)
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self):
                conn, _ = super().get_request()
                return conn, ("floor", 0)

        self.netns = netns
        if os.path.exists(sock):
            os.unlink(sock)
        self.server = Server(sock, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, call: str, req: dict) -> dict:
        name = "fl" + str(req.get("EndpointID", ""))[:12]
        if call == "Plugin.Activate":
            return {"Implements": ["NetworkDriver"]}
        if call == "NetworkDriver.GetCapabilities":
            return {"Scope": "local"}
        if call == "NetworkDriver.CreateEndpoint":
            return {"Interface": {}}
        if call == "NetworkDriver.Join":
            subprocess.run(["ip", "-n", self.netns, "link", "add", name, "type", "veth", "peer",
                            "name", name + "p"], check=True, capture_output=True)
            return {"InterfaceName": {"SrcName": name + "p", "DstPrefix": "eth"},
                    "Gateway": "10.98.0.1"}
        if call == "NetworkDriver.DeleteEndpoint":
            subprocess.run(["ip", "-n", self.netns, "link", "del", name], capture_output=True)
        return {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("attach: needs root (namespaces, OVS, dockerd, podman)", file=sys.stderr)
        return 2

    lab = Lab(hosts=1, prefix="drvb", link_prefix="drb", subnet="192.168.58.0/24",
              root=f"/run/contiv-lab-drvbench-{os.getpid()}", docker=True,
              netmaster_port=free_tcp_port(), ofp_port=free_tcp_port(),
              progress=lambda m: print(f"  {m}", file=sys.stderr))
    try:
        lab.up()
        host = lab.hosts[0].name
        _post(lab.netmaster_url, f"/api/v1/networks/default:{NET}/", {
            "tenantName": "default", "networkName": NET, "encap": "vxlan",
            "subnet": SUBNET, "gateway": GATEWAY})
        deadline = time.monotonic() + 30
        while NET not in lab.docker(host, "network", "ls", "--format", "{{.Name}}").stdout.split():
            if time.monotonic() > deadline:
                raise RuntimeError("docker network contiv-net did not appear")
            time.sleep(0.2)

        floor = FloorDriver(os.path.join(os.path.dirname(lab.plugin_socket(host)),
                                         "drvfloor.sock"), lab.host(host).netns)
        lab.docker(host, "network", "create", "-d", "drvfloor", "--subnet", "10.98.0.0/24",
                   "--gateway", "10.98.0.1", "floornet")
        podman = Podman(os.path.join(lab.root, host, "podman"), netns=lab.host(host).netns)
        podman.setup()
        podman.add_network("contiv", {"cniVersion": "1.0.0", "plugins": [{
            "type": "contiv-cni", "socket": lab.host(host).socket, "network": NET}]})
        podman.add_network("reference", {"cniVersion": "1.0.0", "plugins": [{
            "type": "bridge", "bridge": "drvbr0", "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]})
        podman.import_busybox()
        penv = podman.env()
        dsock = lab.docker_socket(host)
        cases = {
            "podman contiv-cni": podman.argv("run", "--rm", "--network", "contiv",
                                             "busybox:local", "true"),
            "podman bridge (reference)": podman.argv("run", "--rm", "--network", "reference",
                                                     "busybox:local", "true"),
            "docker --net contiv-net": ["docker", "-H", f"unix://{dsock}", "run", "--rm",
                                        "--net", NET, "busybox:local", "true"],
            "docker --net none (reference)": ["docker", "-H", f"unix://{dsock}", "run", "--rm",
                                              "--net", "none", "busybox:local", "true"],
            "docker --net floornet (floor)": ["docker", "-H", f"unix://{dsock}", "run", "--rm",
                                              "--net", "floornet", "busybox:local", "true"],
        }
        times = {name: [] for name in cases}
        for i in range(args.warmup + args.runs):
            for name, argv in cases.items():
                t = _timed(argv, env=penv if name.startswith("podman") else None)
                if i >= args.warmup:
                    times[name].append(t)
        podman.cleanup()
        lab.docker(host, "network", "rm", "floornet")
        floor.close()
    finally:
        lab.down(all=True)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    # (ours, reference, target ratio; None: for scale only)
    pairs = [("podman contiv-cni", "podman bridge (reference)", 1.1),
             ("docker --net contiv-net", "docker --net none (reference)", 1.2),
             ("docker --net floornet (floor)", "docker --net none (reference)", None),
             ("docker --net contiv-net", "docker --net floornet (floor)", 1.2)]
    print(f"attach latency, median of {args.runs} runs (after {args.warmup} warm-up), same run:")
    for name, ts in times.items():
        print(f"  {name:32s} median {med[name] * 1000:7.1f} ms   "
              f"min {min(ts) * 1000:7.1f}  max {max(ts) * 1000:7.1f}")
    result = {"runs": args.runs, "median_ms": {k: round(v * 1000, 1) for k, v in med.items()}}
    for ours, ref, goal in pairs:
        ratio = med[ours] / med[ref]
        verdict = "OK" if goal is not None and ratio <= goal else "over target"
        target = "" if goal is None else f"  (target <= {goal}: {verdict})"
        print(f"  ratio {ours} / {ref}: {ratio:.2f}{target}")
        result[f"{ours} / {ref}"] = round(ratio, 3)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
