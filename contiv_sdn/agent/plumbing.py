"""Endpoint plumbing with pyroute2: the veth pair, its addresses, route, MTU and offloads.

A container's interface is one end of a veth pair; the other end stays in the
host namespace (the agent's own, or ``host_netns``) and becomes an OVS port.
The peer is created directly *inside* the container namespace under its final
name, so a failure (name taken, namespace gone) leaves nothing in the host, and
nothing is ever half-moved.

Namespaces are addressed by path (``/var/run/netns/NAME`` or
``/proc/PID/ns/net``).  To talk to one we create the netlink/ioctl sockets in a
short-lived helper thread that ``setns()``-es into it: a socket stays bound to
the namespace it was created in, ``setns(CLONE_NEWNET)`` affects only the
calling thread, and a throwaway thread can never leak a wrong namespace into
the reactor's thread pool.  (pyroute2's own netns support forks a child per
socket, which we avoid in a threaded Twisted process.)

TX checksum offload is turned off on both veth ends (SIOCETHTOOL,
ETHTOOL_STXCSUM): in the OVS userspace datapath packets with unfinished
checksums are forwarded as they are, so ping works while TCP silently fails
(``shared/notes/lab.md``).

Everything here is blocking; :class:`Plumber` runs it in threads.
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from twisted.internet import defer, threads
from twisted.logger import Logger

log = Logger()

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
IFNAMSIZ = 16

_libc = ctypes.CDLL(None, use_errno=True)


class PlumbingError(RuntimeError):
    """A plumbing step failed; the text says what and what to check."""


class NetnsNotFound(PlumbingError):
    """The container's network namespace does not exist (any more)."""


class InterfaceExists(PlumbingError):
    """The name asked for is already taken in the target namespace."""


# -- namespaces ---------------------------------------------------------------
def netns_id(path: str) -> Optional[str]:
    """A stable identity of the namespace behind ``path`` (``dev:inode``), or None if gone.

    Stored with an endpoint so a later check can tell "same namespace" from
    "path reused by another one" (``/proc/PID`` paths are recycled).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_sockets(path: Optional[str],
                  specs: Sequence[Tuple[int, int, int]]) -> List[socket.socket]:
    """Create sockets that belong to the namespace at ``path`` (None: this one)."""
    if path is None:
        return [socket.socket(*spec) for spec in specs]
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        except OSError as e:
            box["error"] = e
            return
        try:
            try:
                target = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                box["error"] = NetnsNotFound(f"network namespace {path} does not exist")
                return
            try:
                _setns(target)
            except OSError as e:
                box["error"] = NetnsNotFound(f"{path} is not a network namespace ({e.strerror})")
                return
            finally:
                os.close(target)
            try:
                box["sockets"] = [socket.socket(*spec) for spec in specs]
            except OSError as e:
                box["error"] = e
            finally:
                # The thread ends right after; restoring is hygiene, not a necessity.
                try:
                    _setns(own)
                except OSError:
                    pass
        finally:
            os.close(own)

    t = threading.Thread(target=run, name=f"netns {path}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sockets"]


def iproute(path: Optional[str]) -> IPRoute:
    """An RTNL socket in the namespace at ``path`` (None: the current one), no multicast."""
    if path is None:
        return IPRoute(groups=0)
    (sock,) = netns_sockets(path, [(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)])
    return IPRoute(use_socket=sock, groups=0)


# -- ethtool ------------------------------------------------------------------
def _ethtool_value(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    buf = array.array("B", struct.pack("II", cmd, data))
    addr, _ = buf.buffer_info()
    ifr = struct.pack(f"{IFNAMSIZ}sP", ifname.encode(), addr)
    ifr += b"\0" * (40 - len(ifr))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return struct.unpack("II", buf.tobytes())[1]


def set_tx_checksum(sock: socket.socket, ifname: str, on: bool) -> None:
    """``ethtool -K IFNAME tx on|off`` through the ioctl, in ``sock``'s namespace."""
    _ethtool_value(sock, ifname, ETHTOOL_STXCSUM, 1 if on else 0)


def get_tx_checksum(sock: socket.socket, ifname: str) -> bool:
    return bool(_ethtool_value(sock, ifname, ETHTOOL_GTXCSUM))


def tx_checksum_in(path: Optional[str], ifname: str) -> bool:
    """Whether TX checksum offload is on for ``ifname`` in the namespace at ``path``."""
    (sock,) = netns_sockets(path, [(socket.AF_INET, socket.SOCK_DGRAM, 0)])
    with sock:
        return get_tx_checksum(sock, ifname)


# -- the veth pair ---------------------------------------------------------------
@dataclass(frozen=True)
class VethRequest:
    host_ifname: str
    netns: str
    ifname: str = "eth0"
    mac: Optional[str] = None
    ipv4: Optional[str] = None
    prefix_len: Optional[int] = None
    gateway: Optional[str] = None
    mtu: Optional[int] = None


def _check_ifname(name: str, what: str) -> None:
    if not name or len(name) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise PlumbingError(f"{what} {name!r} is not a valid interface name "
                            f"(1-{IFNAMSIZ - 1} characters, no '/' or spaces)")


def _lookup(ipr: IPRoute, name: str) -> Optional[int]:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def create_veth(req: VethRequest, host_netns: Optional[str] = None,
                remove_first: Sequence[str] = ()) -> Dict[str, Any]:
    """Create and configure the pair; on any failure remove what was made and raise.

    Fires nothing on the reactor: call it from a thread.  Returns the facts the
    caller records: ``{"hostIfname", "ifname", "macAddress", "mtu"}``.
    ``remove_first`` names host-side links to delete before (stale leftovers).
    """
    create_host_end(req, host_netns, remove_first)
    try:
        result = configure_container_end(req)
    except BaseException:
        _remove_after_failure(req.host_ifname, host_netns)
        raise
    result["hostIfname"] = req.host_ifname
    return result


def _remove_after_failure(host_ifname: str, host_netns: Optional[str]) -> None:
    try:
        delete_veth(host_ifname, host_netns)
    except Exception as cleanup:  # report the first error, log the second
        log.error("could not remove veth {ifname} after a failure: {err}",
                  ifname=host_ifname, err=cleanup)


def create_host_end(req: VethRequest, host_netns: Optional[str] = None,
                    remove_first: Sequence[str] = ()) -> None:
    """Make the pair (peer straight into the container namespace, MAC and MTU set), host end up
    with TX offload off; on failure nothing is left.  The container end stays down and
    unaddressed: :func:`configure_container_end` does that, so the caller may attach the host
    end to OVS meanwhile.  One RTNL socket, and no lookups on the normal path: each pyroute2
    request costs about a millisecond of Python."""
    _check_ifname(req.host_ifname, "host interface name")
    _check_ifname(req.ifname, "container interface name")
    if req.ipv4 is not None:
        ipaddress.IPv4Address(req.ipv4)
    try:
        nsfd = os.open(req.netns, os.O_RDONLY)
    except FileNotFoundError:
        raise NetnsNotFound(f"network namespace {req.netns} does not exist "
                            "(is the container still running?)") from None
    except OSError as e:
        raise PlumbingError(f"cannot open network namespace {req.netns}: {e.strerror}") from None
    host_sock: Optional[socket.socket] = None
    created = False
    try:
        with iproute(host_netns) as host:
            for stale in remove_first:
                _delete_link(host, stale)
            peer: Dict[str, Any] = {"ifname": req.ifname, "net_ns_fd": nsfd}
            if req.mtu:
                peer["mtu"] = req.mtu
            if req.mac:
                peer["address"] = req.mac
            # state=up sets IFF_UP in the same request (as "ip link add ... up" does)
            add: Dict[str, Any] = {"ifname": req.host_ifname, "kind": "veth", "peer": peer,
                                   "state": "up"}
            if req.mtu:
                add["mtu"] = req.mtu
            try:
                host.link("add", **add)
            except NetlinkError as e:
                if e.code == errno.EEXIST:
                    if _lookup(host, req.host_ifname) is not None:
                        raise InterfaceExists(
                            f"interface {req.host_ifname} already exists on the host") from None
                    raise InterfaceExists(
                        f"interface {req.ifname} already exists in namespace {req.netns}") from None
                raise PlumbingError(f"creating veth {req.host_ifname}/{req.ifname}: "
                                    f"{e.args[1] if len(e.args) > 1 else e}") from None
            created = True
            (host_sock,) = netns_sockets(host_netns, [(socket.AF_INET, socket.SOCK_DGRAM, 0)])
            set_tx_checksum(host_sock, req.host_ifname, False)
    except BaseException as exc:
        if created:
            _remove_after_failure(req.host_ifname, host_netns)
        if isinstance(exc, NetlinkError):
            raise PlumbingError(f"plumbing {req.ifname} in {req.netns}: {exc}") from None
        if isinstance(exc, OSError) and not isinstance(exc, PlumbingError):
            raise PlumbingError(f"veth {req.host_ifname}: {exc}") from None
        raise
    finally:
        os.close(nsfd)
        if host_sock is not None:
            host_sock.close()


def configure_container_end(req: VethRequest) -> Dict[str, Any]:
    """TX offload off, address, up, default route on the container end; its MAC and MTU.

    Leaves the pair in place on failure (the caller removes it by its host end)."""
    try:
        nl_sock, io_sock = netns_sockets(req.netns, [(socket.AF_NETLINK, socket.SOCK_DGRAM, 0),
                                                     (socket.AF_INET, socket.SOCK_DGRAM, 0)])
    except NetnsNotFound:
        raise
    except OSError as e:
        raise PlumbingError(f"cannot enter network namespace {req.netns}: {e}") from None
    try:
        with io_sock, IPRoute(use_socket=nl_sock, groups=0) as ns:
            try:
                link = ns.link("get", ifname=req.ifname)[0]
            except NetlinkError as e:
                if e.code == errno.ENODEV:
                    raise PlumbingError(f"{req.ifname} did not appear in namespace "
                                        f"{req.netns}") from None
                raise
            idx = link["index"]
            set_tx_checksum(io_sock, req.ifname, False)
            if req.ipv4:
                if req.prefix_len is None:
                    raise PlumbingError(f"address {req.ipv4} given without a prefix length")
                ns.addr("add", index=idx, address=req.ipv4, prefixlen=int(req.prefix_len))
            ns.link("set", index=idx, state="up")
            if req.gateway and req.ipv4:
                try:
                    ns.route("add", dst="0.0.0.0/0", gateway=req.gateway, oif=idx)
                except NetlinkError as e:
                    raise PlumbingError(
                        f"default route via {req.gateway} in {req.netns}: {e.args[-1]} "
                        "(is the gateway inside the network's subnet?)") from None
            # MAC and MTU were read before "up": neither changes with it
            return {"ifname": req.ifname, "macAddress": link.get_attr("IFLA_ADDRESS"),
                    "mtu": link.get_attr("IFLA_MTU")}
    except NetlinkError as e:
        raise PlumbingError(f"plumbing {req.ifname} in {req.netns}: {e}") from None


def _delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete one link by name in ``ipr``'s namespace; False if there was none."""
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return False
        raise PlumbingError(f"deleting {name}: {e}") from None
    return True


def delete_veth(host_ifname: str, host_netns: Optional[str] = None,
                also: Sequence[str] = ()) -> bool:
    """Delete the pair by its host end; True if it existed (idempotent).

    ``also``: further host-side links to remove if present (one socket, one thread
    hop for all); the answer is about ``host_ifname`` only.
    """
    with iproute(host_netns) as host:
        existed = _delete_link(host, host_ifname)
        for name in also:
            _delete_link(host, name)
        return existed


def link_exists(ifname: str, netns: Optional[str] = None) -> bool:
    """Whether ``ifname`` exists in the namespace at ``netns`` (None: the host's)."""
    with iproute(netns) as ipr:
        return _lookup(ipr, ifname) is not None


def default_route_source() -> Optional[str]:
    """The source address the kernel uses on the default route, or None if there is none."""
    with IPRoute(groups=0) as ipr:
        for default in ipr.get_default_routes(family=socket.AF_INET):
            src = default.get_attr("RTA_PREFSRC")
            if src:
                return src
            gateway = default.get_attr("RTA_GATEWAY")
            if not gateway:
                continue
            try:
                routes = ipr.route("get", dst=gateway)
            except NetlinkError:
                continue
            for route in routes:
                src = route.get_attr("RTA_PREFSRC")
                if src:
                    return src
    return None


class Plumber:
    """Runs the blocking plumbing in the reactor's thread pool."""

    def __init__(self, host_netns: Optional[str] = None):
        #: The namespace that holds the host ends (None: the agent's own).
        self.host_netns = host_netns

    def create(self, req: VethRequest, remove_first: Sequence[str] = ()) -> defer.Deferred:
        """Both ends in one thread hop; fires with the facts of :func:`create_veth`."""
        return threads.deferToThread(create_veth, req, self.host_netns, tuple(remove_first))

    def create_host_end(self, req: VethRequest,
                        remove_first: Sequence[str] = ()) -> defer.Deferred:
        """First half of :meth:`create` (see :func:`create_host_end`)."""
        return threads.deferToThread(create_host_end, req, self.host_netns, tuple(remove_first))

    def configure_container_end(self, req: VethRequest) -> defer.Deferred:
        """Second half of :meth:`create`; on failure the caller removes the pair."""
        return threads.deferToThread(configure_container_end, req)

    def delete(self, host_ifname: str, also: Sequence[str] = ()) -> defer.Deferred:
        return threads.deferToThread(delete_veth, host_ifname, self.host_netns, tuple(also))

    def host_link_exists(self, host_ifname: str) -> defer.Deferred:
        return threads.deferToThread(link_exists, host_ifname, self.host_netns)
