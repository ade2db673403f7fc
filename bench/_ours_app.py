"""The packet-in benchmark's app on our stack: a learning-switch step per packet-in.

For every packet-in: take ``in_port`` from the match and the source MAC from the
frame, and answer with one flow_mod (table 0, priority 10, ``in_port,
eth_dst=<src>`` -> ``output:in_port``).  ``_osken_app.py`` does exactly the same
through os-ken's app manager.  Run by ``bench/packetin.py`` as its own process.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor

from contiv_sdn.openflow import codec
from contiv_sdn.openflow.protocol import OpenFlowFactory
from contiv_sdn.openflow.registry import SwitchRegistry
from contiv_sdn.pipeline.flow import COOKIE_MARK, Flow


def on_packet_in(switch, msg) -> None:
    in_port = msg.match["in_port"]
    src = msg.data[6:12].hex(":")
    flow = Flow(table=0, priority=10, match=(("eth_dst", src), ("in_port", in_port)),
                actions=(("output", in_port),), cookie=COOKIE_MARK)
    switch.send(codec.encode_flow_mod(flow, codec.ADD, switch.next_xid()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    factory = OpenFlowFactory(SwitchRegistry(), on_packet_in=on_packet_in, echo_interval=30,
                              echo_timeout=90)
    reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    print("listening", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
