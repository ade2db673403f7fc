"""Flow push benchmark: N flows into a real OVS through our controller vs ``ovs-ofctl --bundle``.

Usage: ``.venv/bin/python bench/flowpush.py [--flows 10000 100000] [--rounds 1]``  (root, OVS installed)

For each N, the same N flows (realistic shapes: port classification, L3
lookup with tunnel set-up, proxy-ARP replies, stateful policy; all distinct
matches) are pushed into a fresh bridge of one private OVS:

(a) ours: the bridge is created with our controller as its controller; timed
    from the TCP connection being accepted to the barrier reply after
    ``FlowSync.converge`` committed all N in one bundle (handshake, flow read,
    encoding, bundle and commit included);
(b) ofctl: ``ovs-ofctl -O OpenFlow13 --bundle add-flows BR FILE`` with the
    same flows written by ``Flow.to_ofctl()``, timed as the command's wall time.

Both results are checked (the bridge holds exactly N flows afterwards).
Printed: both times and the ratio ours / ofctl (target: <= 1.0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from contiv_sdn.openflow import codec  # noqa: E402
from contiv_sdn.openflow.protocol import OpenFlowProtocol  # noqa: E402
from contiv_sdn.openflow.sync import FlowSync  # noqa: E402
from contiv_sdn.openflow.testing import SwitchLab  # noqa: E402
from contiv_sdn.pipeline.flow import Flow, make_match  # noqa: E402

VXLAN_PORT = 100


def _mac(i: int) -> str:
    return "02:%02x:%02x:%02x:%02x:%02x" % ((i >> 32) & 0xFF, (i >> 24) & 0xFF, (i >> 16) & 0xFF,
                                            (i >> 8) & 0xFF, i & 0xFF)


def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def make_flows(n: int) -> list:
    """N distinct flows in the proportions a large deployment has: per endpoint a classifier,
    a lookup, an ARP reply; policy rules on top."""
    flows = []
    i = 0
    while len(flows) < n:
        net = 1 + i % 50
        k = len(flows) % 10
        if k < 3:  # table 0: classify the endpoint's port + MAC into network and group
            flows.append(Flow(table=0, priority=100,
                              match=make_match(in_port=1 + i % 4000, eth_src=_mac(i)),
                              actions=(("set_field", "reg0", net), ("set_field", "reg1", i % 900)),
                              goto=10))
        elif k < 7:  # table 20: L3 lookup to a remote endpoint over VXLAN
            flows.append(Flow(table=20, priority=100,
                              match=make_match(reg0=net, eth_type=0x800, ipv4_dst=_ip(i)),
                              actions=(("set_field", "eth_src", "00:00:11:11:11:11"),
                                       ("set_field", "eth_dst", _mac(i)),
                                       ("set_field", "tun_ipv4_dst", f"192.168.{(i >> 8) & 0xFF}.{i & 0xFF}"),
                                       ("set_field", "tunnel_id", 5000 + net),
                                       ("output", VXLAN_PORT))))
        elif k < 9:  # table 5: proxy-ARP reply
            flows.append(Flow(table=5, priority=100,
                              match=make_match(reg0=net, eth_type=0x806, arp_op=1, arp_tpa=_ip(i)),
                              actions=(("move", "eth_src", "eth_dst", 48),
                                       ("set_field", "eth_src", _mac(i)),
                                       ("set_field", "arp_op", 2),
                                       ("move", "arp_sha", "arp_tha", 48),
                                       ("set_field", "arp_sha", _mac(i)),
                                       ("move", "arp_spa", "arp_tpa", 32),
                                       ("set_field", "arp_spa", _ip(i)),
                                       ("output", 0xFFFFFFF8))))
        else:  # table 30: stateful policy (group -> group, tcp port)
            flows.append(Flow(table=30, priority=1000 + i % 100,
                              match=make_match(reg1=i % 900, reg2=(i // 900) % 900, eth_type=0x800,
                                               ip_proto=6, ct_state=(0x21, 0x21)),
                              actions=(("ct", True, net, None),), goto=40))
        i += 1
    idents = {f.identity for f in flows}
    assert len(idents) == n, "flow generator produced duplicates"
    return flows


class _Stamped(OpenFlowProtocol):
    def connectionMade(self) -> None:
        self.connected_at = time.perf_counter()
        super().connectionMade()


async def push_ours(lab: SwitchLab, flows: list, tag: str) -> dict:
    dpid = lab.next_dpid()
    name = lab.name(tag)
    lab.bridges.append(name)
    up = lab.wait_switch(dpid)
    made = deferToThread(lab.ovs.add_bridge, name, dpid, [lab.controller])
    sw = await up
    t_up = time.perf_counter()
    r = await FlowSync(sw).converge(flows)
    await sw.barrier()
    t_end = time.perf_counter()
    await made
    assert r.added == len(flows), r
    count = await count_flows(lab, name)
    assert count == len(flows), f"bridge holds {count} flows, expected {len(flows)}"
    await lab.vsctl("del-br", name)
    return {"seconds": t_end - sw.connected_at, "handshake": t_up - sw.connected_at}


async def push_ofctl(lab: SwitchLab, flows: list, tag: str, path: str) -> dict:
    name = lab.name(tag)
    lab.bridges.append(name)
    await deferToThread(lab.ovs.add_bridge, name)
    argv = ["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", lab.ovs.mgmt(name), path]

    def run():
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, env=lab.ovs.env, capture_output=True)
        return time.perf_counter() - t0
    seconds = await deferToThread(run)
    count = await count_flows(lab, name)
    assert count == len(flows), f"bridge holds {count} flows, expected {len(flows)}"
    await lab.vsctl("del-br", name)
    return {"seconds": seconds}


async def count_flows(lab: SwitchLab, bridge: str) -> int:
    out = await lab.ofctl("dump-aggregate", bridge)
    return int(out.split("flow_count=")[1].split()[0])


async def main(args) -> None:
    lab = SwitchLab("ofpb")
    lab.factory.protocol = _Stamped
    await lab.start()
    try:
        for n in args.flows:
            flows = make_flows(n)
            with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as f:
                f.write("\n".join(fl.to_ofctl() for fl in flows) + "\n")
                path = f.name
            try:
                t0 = time.perf_counter()
                enc = codec.FlowModEncoder()
                for x, fl in enumerate(flows):
                    enc.encode(fl, codec.ADD, x)
                enc_s = time.perf_counter() - t0
                ours_t, ofctl_t = [], []
                for r in range(args.rounds):
                    steps = [("ours", lambda: push_ours(lab, flows, f"o{r}")),
                             ("ofctl", lambda: push_ofctl(lab, flows, f"c{r}", path))]
                    if r % 2:
                        steps.reverse()
                    for what, step in steps:
                        res = await step()
                        (ours_t if what == "ours" else ofctl_t).append(res["seconds"])
                        extra = f" (handshake {res['handshake'] * 1000:.0f} ms)" if "handshake" in res else ""
                        print(f"N={n:7d} round {r + 1} {what:5s} {res['seconds']:7.3f} s{extra}", flush=True)
                o, c = min(ours_t), min(ofctl_t)
                print(f"N={n:7d}: ours {o:.3f} s ({n / o:,.0f} flows/s; template encoding alone "
                      f"{enc_s:.3f} s, {enc.shape_count()} shapes), ovs-ofctl --bundle {c:.3f} s, "
                      f"ratio ours/ofctl = {o / c:.2f} (target <= 1.0)", flush=True)
            finally:
                os.unlink(path)
    finally:
        await lab.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    def run(reactor):
        return defer.ensureDeferred(main(args))
    task.react(run)
