"""Packet-in benchmark: our OpenFlow stack vs os-ken's app manager, same load, same run.

Usage: ``.venv/bin/python bench/packetin.py [--switches 16] [--window 64] [--duration 5] [--rounds 2]``

Each round runs, one after the other, (a) ``bench/_ours_app.py`` (our
protocol + a learning-switch step) and (b) ``bench/_osken_app.py`` (the same
step as an os-ken app under os-ken's ``AppManager``), each as its own process
on a fresh loopback port, and drives each with the same load generator
(``bench/_pktgen.py``, another process: K fake switches keeping a window of
packet-ins outstanding, cbench style).  Reported: flow_mod responses per second
for both, and the ratio ours / os-ken (target: >= 3).  Rounds alternate the
order so neither side always runs on a warmer machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from contiv_sdn.testing import free_tcp_port  # noqa: E402


def run_one(app: str, args) -> dict:
    port = free_tcp_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    ctl = subprocess.Popen([sys.executable, os.path.join(HERE, app), "--port", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ctl.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"{app} did not start: {line}{ctl.stderr.read()}")
        time.sleep(0.3)
        gen = subprocess.run([sys.executable, os.path.join(HERE, "_pktgen.py"), "--port", str(port),
                              "--switches", str(args.switches), "--window", str(args.window),
                              "--warmup", str(args.warmup), "--duration", str(args.duration)],
                             capture_output=True, text=True, timeout=args.duration + args.warmup + 60)
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed: {gen.stderr}")
        result = json.loads(gen.stdout.strip().splitlines()[-1])
        if result["switches_up"] != args.switches:
            raise RuntimeError(f"only {result['switches_up']} of {args.switches} switches came up on {app}")
        return result
    finally:
        ctl.terminate()
        try:
            ctl.wait(10)
        except subprocess.TimeoutExpired:
            ctl.kill()
            ctl.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switches", type=int, default=16)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ours, osken = [], []
    for r in range(args.rounds):
        order = [("_ours_app.py", ours), ("_osken_app.py", osken)]
        if r % 2:
            order.reverse()
        for app, results in order:
            res = run_one(app, args)
            results.append(res["rate"])
            print(f"round {r + 1} {app:15s} {res['responses']:8d} responses in {res['seconds']:.2f} s "
                  f"= {res['rate']:10.1f}/s", flush=True)
    best_ours, best_osken = max(ours), max(osken)
    print(f"packet-in -> flow_mod, {args.switches} switches, window {args.window}: "
          f"ours {best_ours:.0f}/s, os-ken {best_osken:.0f}/s, "
          f"ratio ours/os-ken = {best_ours / best_osken:.2f} (target >= 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
