"""The packet-in benchmark's app on os-ken's own app manager (eventlet), in its own process.

os-ken 4.2 no longer ships the ``osken-manager`` script, so ``main()`` does
what it did: monkey-patch with os-ken's hub, parse the config (listen host
and port), load this module as an app through ``AppManager`` and run it.
The app is the same learning-switch step as ``_ours_app.py``, written the way
an os-ken app is written (``set_ev_cls``, ``OFPMatch``, ``OFPFlowMod``,
``datapath.send_msg``).  eventlet is allowed here only: this is the reference.
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__":
    from os_ken.lib import hub
    hub.patch(thread=False)

from os_ken.base import app_manager  # noqa: E402
from os_ken.controller import ofp_event  # noqa: E402
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls  # noqa: E402
from os_ken.ofproto import ofproto_v1_3  # noqa: E402


class LearnStep(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        src = msg.data[6:12].hex(":")
        match = parser.OFPMatch(in_port=in_port, eth_dst=src)
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(in_port)])]
        dp.send_msg(parser.OFPFlowMod(datapath=dp, cookie=0xC0DE << 48, table_id=0, priority=10,
                                      match=match, instructions=inst))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    from os_ken import cfg
    cfg.CONF(args=["--ofp-tcp-listen-port", str(args.port), "--ofp-listen-host", "127.0.0.1"],
             project="os_ken")
    mgr = app_manager.AppManager.get_instance()
    mgr.load_apps([__name__ if __name__ != "__main__" else "_osken_app"])
    contexts = mgr.create_contexts()
    services = mgr.instantiate_apps(**contexts)
    print("listening", flush=True)
    try:
        hub.joinall(services)
    finally:
        mgr.close()


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    sys.exit(main())
