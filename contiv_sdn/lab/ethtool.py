"""Turn TX checksum offload off on an interface, in any network namespace.

OVS's userspace datapath forwards packets as the kernel hands them; with TX
checksum offload on, a veth hands over TCP packets whose checksum is not filled
in yet and the receiver drops them: ping works, TCP silently does not
(``shared/notes/lab.md``).  The ``ethtool`` binary is not installed everywhere,
so this uses the ethtool ioctl directly.  A socket belongs to the namespace it
was created in, so a short-lived thread joins the target namespace (``setns``
only affects the calling thread), creates the socket there and does the ioctl;
the caller's namespace is never touched.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
import threading
from typing import Optional

from contiv_sdn.lab.sh import LabError

SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _ethtool_value(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    buf = array.array("B", struct.pack("II", cmd, data))
    addr, _ = buf.buffer_info()
    ifr = struct.pack("16sP", ifname.encode()[:15], addr).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return struct.unpack("II", buf.tobytes())[1]


def _in_netns(netns: Optional[str], fn):
    """Run ``fn()`` with the calling thread inside ``netns`` (a name or a path)."""
    if netns is None:
        return fn()
    path = netns if "/" in netns else f"/run/netns/{netns}"
    result: dict = {}

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    t = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join(10)
    if "error" in result:
        raise result["error"]
    if "value" not in result:
        raise LabError(f"ethtool in {netns}: no answer")
    return result["value"]


def set_tx_checksum(ifname: str, enabled: bool, netns: Optional[str] = None) -> None:
    """Set TX checksum offload of ``ifname`` (``ethtool -K IF tx on|off``) and verify it."""
    def do() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            _ethtool_value(s, ifname, ETHTOOL_STXCSUM, 1 if enabled else 0)
            return _ethtool_value(s, ifname, ETHTOOL_GTXCSUM)

    try:
        now = _in_netns(netns, do)
    except OSError as e:
        raise LabError(f"tx offload {'on' if enabled else 'off'} for {ifname}"
                       f"{' in ' + netns if netns else ''}: {e}") from e
    if bool(now) != enabled:
        raise LabError(f"tx checksum offload of {ifname} is still {'on' if now else 'off'}")


def tx_checksum(ifname: str, netns: Optional[str] = None) -> bool:
    """Whether TX checksum offload is on (for status output and tests)."""
    def do() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return _ethtool_value(s, ifname, ETHTOOL_GTXCSUM)

    return bool(_in_netns(netns, do))
