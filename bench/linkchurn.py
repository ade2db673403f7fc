"""Packets lost by the lab's datapath while links come and go in a host's namespace.

Why this exists: a cross-host ping in the HA tests lost one packet now and then
while no control-plane event could explain it (flows unchanged, roles right).  The
cause is below us: every link event in a namespace where OVS 3.1's *userspace*
datapath runs (a veth created for a new endpoint, removed for a deleted or refused
one) makes ovs-vswitchd reset its route table and revalidate its megaflows, and a
revalidation racing that reset re-translates tunnel megaflows of unrelated traffic
without their ``tnl_push`` (sender) or ``tnl_pop`` (receiver): those packets are
dropped until the next revalidation.  This bench shows it with nothing of ours
moving: two lab containers on two hosts ping at 100 per second, first with no
churn (the reference), then while a shell loop adds and removes veth pairs in the
sender's host namespace, then in the receiver's; it prints the packets lost in
each phase and, with ``--megaflows``, the tunnel megaflows seen without their
tunnel action.  The kernel datapath does VXLAN in the kernel and has no such
translation step.

    sudo .venv/bin/python bench/linkchurn.py [--churn 150] [--seconds 5] [--megaflows]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Counter, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contiv_sdn.lab import Lab  # noqa: E402
from contiv_sdn.lab.core import ping_argv  # noqa: E402
from contiv_sdn.lab.secure import netctl_argv  # noqa: E402
from contiv_sdn.testing import free_tcp_port  # noqa: E402

CHURN = ("for i in $(seq 1 {n}); do ip link add zc$i type veth peer name zd$i; "
         "ip link set zc$i up; ip link set zd$i up; ip link del zc$i; done")
SEQ = re.compile(r"(?:icmp_)?seq=(\d+)")
SUMMARY = re.compile(r"(\d+) packets transmitted")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ping_phase(src_netns: str, dst_ip: str, churn_netns: str, churn: int,
               seconds: float, watch: Any = None) -> Tuple[int, int, Counter]:
    """(sent, lost, tunnel megaflows seen without their tunnel action) for one phase."""
    proc = subprocess.Popen(["ip", "netns", "exec", src_netns, *ping_argv(), "-i", "0.01",
                             dst_ip], stdout=subprocess.PIPE, text=True)
    seqs = set()
    lines = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = SEQ.search(line)
            if m and "bytes from" in line:
                seqs.add(int(m.group(1)))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    bad: Counter = collections.Counter()
    stop = threading.Event()

    def megaflows() -> None:
        while not stop.is_set():
            out = watch.ovs.appctl("dpctl/dump-flows", "netdev@ovs-netdev")
            for line in out.splitlines():
                if "udp(dst=4789)" in line and "tnl_pop" not in line:
                    bad["VXLAN received without tnl_pop"] += 1
                elif "recirc_id(0x" in line and "in_port" in line and "ct_state(+" in line \
                        and "tnl_push" not in line and "actions:drop" in line:
                    bad["tunnel-bound reply dropped (no tnl_push)"] += 1
            time.sleep(0.01)
    watcher = threading.Thread(target=megaflows, daemon=True)
    time.sleep(0.5)
    if watch is not None:
        watcher.start()
    if churn_netns:
        subprocess.run(["ip", "netns", "exec", churn_netns, "sh", "-c", CHURN.format(n=churn)],
                       check=False, timeout=600)
    else:
        time.sleep(seconds)
    stop.set()
    time.sleep(0.3)  # replies in flight
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    reader.join(5)
    text = "".join(lines)
    m = SUMMARY.search(text)
    sent = int(m.group(1)) if m else len(seqs)
    first = 1 if "icmp_seq=" in text else 0  # iputils counts from 1, busybox from 0
    return sent, len(set(range(first, first + sent)) - seqs), bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--churn", type=int, default=150, help="veth pairs added and removed")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the reference phase")
    ap.add_argument("--megaflows", action="store_true",
                    help="watch the churning host's megaflows for missing tunnel actions")
    args = ap.parse_args()
    if os.geteuid() != 0:
        say("needs root (network namespaces, OVS)")
        return 2
    lab = Lab(hosts=2, root="/run/contiv-bench-churn", prefix="bchurn", link_prefix="ctbc",
              subnet="192.168.83.0/24", netmaster_port=free_tcp_port(),
              ofp_port=free_tcp_port(), progress=say, docker=False)
    try:
        lab.up()
        h1, h2 = lab.hosts
        subprocess.run([*netctl_argv(sys.executable), "net", "create", "-s", "10.83.1.0/24", "-g",
                        "10.83.1.254", "churn-net"], check=True, env=dict(os.environ,
                                                                          **lab.netctl_env()))
        a = lab.add_container(h1.name, "ca", "churn-net")
        b = lab.add_container(h2.name, "cb", "churn-net")
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", a.netns, *ping_argv(), "-c", "1", "-W", "1",
                              b.ip], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                say("the containers never pinged each other")
                return 1
        rows = []
        for label, churn_host in (("no churn (reference)", None), ("veth churn on the sender's host", h1),
                                  ("veth churn on the receiver's host", h2)):
            say(f"phase: {label}")
            sent, lost, bad = ping_phase(a.netns, b.ip, churn_host.netns if churn_host else "",
                                         args.churn, args.seconds,
                                         churn_host if (args.megaflows and churn_host) else None)
            rows.append((label, sent, lost, bad))
        print(f"{'phase':36} {'sent':>6} {'lost':>5} {'loss':>7}")
        for label, sent, lost, bad in rows:
            print(f"{label:36} {sent:6d} {lost:5d} {100.0 * lost / max(sent, 1):6.2f}%"
                  + ("".join(f"\n    {v} x {k}" for k, v in bad.items())))
        return 0
    finally:
        lab.down(all=True)


if __name__ == "__main__":
    sys.exit(main())
