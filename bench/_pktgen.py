"""cbench-style load generator: K fake OpenFlow 1.3 switches sending packet-ins.

Run as its own process by ``bench/packetin.py`` (so it never shares an event
loop with the controller under test).  Each fake switch completes the
handshake (HELLO, FEATURES, PORT_DESC, answers barriers and echoes), then keeps
``window`` packet-ins outstanding: every flow_mod that comes back releases the
next packet-in (with a new source MAC, so every answer is a new flow).  After
``warmup`` seconds it counts flow_mods for ``duration`` seconds and prints one
JSON line: ``{"responses": n, "seconds": s, "rate": n/s, "switches_up": k}``.

asyncio only (no Twisted, no os-ken): the generator must be cheap and neutral.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time

HDR = struct.Struct("!BBHI")
V = 4
OFPT_HELLO, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 0, 2, 3
OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY = 5, 6
OFPT_GET_CONFIG_REQUEST, OFPT_GET_CONFIG_REPLY = 7, 8
OFPT_PACKET_IN, OFPT_FLOW_MOD = 10, 14
OFPT_MULTIPART_REQUEST, OFPT_MULTIPART_REPLY = 18, 19
OFPT_BARRIER_REQUEST, OFPT_BARRIER_REPLY = 20, 21
OFPMP_PORT_DESC = 13


def msg(t: int, xid: int, body: bytes = b"") -> bytes:
    return HDR.pack(V, t, 8 + len(body), xid) + body


class Stats:
    def __init__(self):
        self.counting = False
        self.responses = 0
        self.up = 0


class FakeSwitch(asyncio.Protocol):
    def __init__(self, dpid: int, window: int, stats: Stats, in_ports: int = 16):
        self.dpid = dpid
        self.window = window
        self.stats = stats
        self.buf = b""
        self.seq = 0
        self.in_ports = in_ports
        self.ready = False
        # packet-in: no buffer, total_len 60, reason no-match, table 0, cookie 0,
        # match in_port (OXM 0x80000004) padded to 16, 2 pad bytes, then the frame
        self.pi_head = struct.pack("!IHBBQ", 0xFFFFFFFF, 60, 0, 0, 0)
        self.frame_tail = b"\x08\x00" + b"\x45" + b"\0" * 45

    def connection_made(self, transport):
        self.transport = transport
        transport.write(msg(OFPT_HELLO, 1, struct.pack("!HHI", 1, 8, 1 << V)))

    def packet_in(self) -> bytes:
        self.seq += 1
        n = self.seq
        port = 1 + n % self.in_ports
        src = struct.pack("!HI", self.dpid & 0xFFFF, n & 0xFFFFFFFF)
        match = struct.pack("!HHIII", 1, 12, 0x80000004, port, 0)
        frame = b"\x02\x00\x00\x00\x00\x01" + src + self.frame_tail
        body = self.pi_head + match + b"\0\0" + frame
        return HDR.pack(V, OFPT_PACKET_IN, 8 + len(body), n & 0xFFFFFFFF) + body

    def data_received(self, data: bytes):
        buf = self.buf + data
        pos = 0
        out = []
        n = len(buf)
        flow_mods = 0
        while n - pos >= 8:
            v, t, ln, xid = HDR.unpack_from(buf, pos)
            if ln < 8:
                self.transport.close()
                return
            if n - pos < ln:
                break
            if t == OFPT_FLOW_MOD:
                flow_mods += 1
            elif t == OFPT_ECHO_REQUEST:
                out.append(msg(OFPT_ECHO_REPLY, xid, buf[pos + 8:pos + ln]))
            elif t == OFPT_FEATURES_REQUEST:
                out.append(msg(OFPT_FEATURES_REPLY, xid, struct.pack("!QIBB2xII", self.dpid, 0, 254, 0, 0, 0)))
            elif t == OFPT_GET_CONFIG_REQUEST:
                out.append(msg(OFPT_GET_CONFIG_REPLY, xid, struct.pack("!HH", 0, 0xFFFF)))
            elif t == OFPT_MULTIPART_REQUEST:
                mp = struct.unpack_from("!H", buf, pos + 8)[0]
                out.append(msg(OFPT_MULTIPART_REPLY, xid, struct.pack("!HH4x", mp, 0)))
                if mp == OFPMP_PORT_DESC and not self.ready:
                    self.ready = True
                    self.stats.up += 1
                    asyncio.get_running_loop().call_later(0.3, self.start)
            elif t == OFPT_BARRIER_REQUEST:
                out.append(msg(OFPT_BARRIER_REPLY, xid))
            pos += ln
        self.buf = buf[pos:]
        if flow_mods:
            if self.stats.counting:
                self.stats.responses += flow_mods
            out.extend(self.packet_in() for _ in range(flow_mods))
        if out:
            self.transport.write(b"".join(out))

    def start(self):
        self.transport.write(b"".join(self.packet_in() for _ in range(self.window)))


async def main(args) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    conns = []
    for i in range(args.switches):
        t, p = await loop.create_connection(
            lambda i=i: FakeSwitch(0xBE00 + i, args.window, stats), args.host, args.port)
        conns.append(t)
    deadline = time.monotonic() + 30
    while stats.up < args.switches and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(args.warmup)
    stats.counting = True
    t0 = time.monotonic()
    await asyncio.sleep(args.duration)
    stats.counting = False
    dt = time.monotonic() - t0
    for t in conns:
        t.close()
    return {"responses": stats.responses, "seconds": round(dt, 3),
            "rate": round(stats.responses / dt, 1), "switches_up": stats.up}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--switches", type=int, default=16)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--duration", type=float, default=5.0)
    print(json.dumps(asyncio.run(main(ap.parse_args()))), flush=True)
