"""`make demo`: the seed README's walkthrough on a local two-host lab.

Brings the lab up (hosts ``node1`` and ``node2``: namespaces with their own
OVS, Redis, netmaster, a netplugin each), runs the seed's ``netctl`` lines
verbatim, starts ``web`` on node1 and ``db`` on node2, pings db from web over
the flows the controller pushed, then the policy part of the seed, and leaves
everything running for the user to explore.  ``--down`` removes it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional

from contiv_sdn.lab.core import DEFAULT_ROOT, Lab, LabError, ping_argv

SEED_NET = "netctl net create contiv-net --subnet=20.1.1.0/24 --gateway=20.1.1.254 --pkt-tag=1001"
SEED_POLICY = [
    "netctl policy create prod_web",
    "netctl policy rule-add prod_web 1 -direction=in -protocol=tcp -action=deny",
    "netctl policy rule-add prod_web 2 -direction=in -protocol=tcp -port=80 -action=allow -priority=10",
    "netctl policy rule-add prod_web 3 -direction=in -protocol=tcp -port=443 -action=allow -priority=10",
    "netctl group create contiv-net web -policy=prod_web",
]


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def netctl(line: str, url: str) -> None:
    """Run one seed line exactly as a user types it, showing it and its output."""
    print(f"$ {line}", flush=True)
    argv = shlex.split(line)
    exe = os.path.join(os.path.dirname(sys.executable), "netctl")
    proc = subprocess.run([exe, *argv[1:]], env={**os.environ, "NETMASTER": url},
                          capture_output=True, text=True, timeout=60)
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print(out, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo: '{line}' failed (exit {proc.returncode}); the lab is still up: "
                         f"'make demo-down' removes it")


def ping(container, ip: str, count: int = 3) -> bool:
    print(f"$ python -m contiv_sdn.lab exec {container.netns} -- {' '.join(ping_argv())} -c {count} {ip}", flush=True)
    proc = container.exec(*ping_argv(), "-c", str(count), "-W", "2", ip, timeout=30)
    print(proc.stdout.rstrip(), flush=True)
    return proc.returncode == 0


def up(hosts: int) -> int:
    step(f"Bringing up a {hosts}-host lab (namespaces node1..node{hosts}, one OVS each)")
    lab = Lab(hosts=hosts, root=DEFAULT_ROOT, progress=say)
    try:
        lab.up()
    except LabError as e:
        print(f"demo: the lab did not come up: {e}", file=sys.stderr)
        return 1
    url = lab.netmaster_url

    step("Step 1: create a network")
    netctl(SEED_NET, url)
    netctl("netctl net ls", url)

    step("Step 2: run containers on two hosts")
    web = lab.add_container("node1", "web", "contiv-net")
    db = lab.add_container(f"node{min(2, hosts)}", "db", "contiv-net")
    say(f"web on node1 has {web.ip}; db on node{min(2, hosts)} has {db.ip}")

    step("Ping db from web (VXLAN between the hosts, flows from the controller)")
    ok = False
    for _ in range(10):
        if ping(web, db.ip):
            ok = True
            break
        time.sleep(1)
    if not ok:
        print("demo: web cannot reach db; see 'python -m contiv_sdn.lab status'", file=sys.stderr)
        return 1

    step("Using policies: the seed's policy, rules and endpoint group")
    for line in SEED_POLICY:
        netctl(line, url)
    netctl("netctl policy rule-ls prod_web", url)
    netctl("netctl group ls", url)
    app = lab.add_container("node1", "web1", "contiv-net", group="web")
    say(f"web1 (group web) on node1 has {app.ip}")

    step("The lab is up. Try:")
    print(f"""  source .venv/bin/activate        # netctl and the lab CLI
  export NETMASTER={url}
  netctl net ls
  netctl net inspect contiv-net
  python -m contiv_sdn.lab status
  python -m contiv_sdn.lab exec node1-web -- {' '.join(ping_argv())} -c 2 {db.ip}
  python -m contiv_sdn.lab exec node1 -- ovs-ofctl -O OpenFlow13 dump-flows br-int
  python -m contiv_sdn.lab container add node2 db2 --net contiv-net
  make demo-down""")
    return 0


def down() -> int:
    step("Removing the demo lab")
    try:
        lab = Lab.load(DEFAULT_ROOT, progress=say)
    except (LabError, FileNotFoundError):
        lab = Lab(hosts=2, root=DEFAULT_ROOT, progress=say)
    lab.down(all=True)
    say("down")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m contiv_sdn.demo", description=__doc__)
    p.add_argument("--down", action="store_true", help="remove the demo lab")
    p.add_argument("--hosts", type=int, default=2)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (network namespaces, OVS); run it with sudo", file=sys.stderr)
        return 1
    return down() if args.down else up(args.hosts)


if __name__ == "__main__":
    sys.exit(main())
