"""Count what crosses the lab's underlay, to prove what does *not* cross it.

The claim "no ARP request for a known address leaves the host" is checked by
watching the underlay bridge in the root namespace with a raw packet socket and
looking inside every VXLAN packet (and every frame on the VLAN trunk) for an
ARP payload.  A background thread does the reading; it only listens, never sends.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from typing import Optional

ETH_P_ALL = 0x0003
VXLAN_PORT = 4789


def _inner_ethertype(frame: bytes) -> Optional[int]:
    """Ethertype of the payload frame, looking through 802.1Q and VXLAN-in-UDP."""
    if len(frame) < 14:
        return None
    etype = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    if etype == 0x8100:
        if len(frame) < 18:
            return None
        etype = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    if etype != 0x0800:
        return etype
    if len(frame) < off + 20:
        return etype
    ihl = (frame[off] & 0x0F) * 4
    proto = frame[off + 9]
    if proto != 17 or len(frame) < off + ihl + 8:
        return etype
    dport = struct.unpack_from("!H", frame, off + ihl + 2)[0]
    if dport != VXLAN_PORT:
        return etype
    inner = frame[off + ihl + 8 + 8:]
    return _inner_ethertype(inner) if len(inner) >= 14 else None


class UnderlaySniffer:
    """Counts frames on one interface: ``arp`` (bare or inside VXLAN/VLAN) and ``total``."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.counts: Counter = Counter()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sock: Optional[socket.socket] = None

    def start(self) -> "UnderlaySniffer":
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((self.ifname, 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._loop, name=f"sniff-{self.ifname}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.counts["total"] += 1
            if _inner_ethertype(frame) == 0x0806:
                self.counts["arp"] += 1

    def stop(self) -> Counter:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
        return self.counts
