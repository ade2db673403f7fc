"""Shared set-up of the end-to-end tests on the lab (no tests here; ``tests/test_e2e_*.py``).

Test-only, so it lives with the tests (it was ``contiv_sdn/testing/e2e.py``): the
lab, ``make demo`` and the benchmarks use none of it.

A lab takes seconds to build, so one lab serves every test of a class: the
first test brings it up, the class's last test (by name, trial's order) takes it
down, and an ``atexit`` hook removes whatever a partial run (``trial
tests.test_e2e_x.C.test_y``) left.  Only one e2e lab runs at a time: acquiring
one takes the previous one down, which keeps this 2-core machine usable.

Lab names are fixed per class (host prefix ``e2e<letter>``, link prefix
``cte<letter>``, underlay ``192.168.6x.0/24``) rather than per process, so a
crashed run's leftovers are removed by the next ``up`` instead of leaving a
second bridge with the same gateway address behind.  The price: two processes
must not run the same e2e class at the same time.

Everything here is synchronous (subprocesses with timeouts, sniffing in a plain
thread): the tests using it are ``SynchronousTestCase`` s and never run a reactor.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from contiv_sdn.lab import Container, Host, Lab
from contiv_sdn.lab import http
from contiv_sdn.lab.core import ping_argv
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK
from contiv_sdn.testing import free_tcp_port, require_binary, require_root
from contiv_sdn.testing.wait import wait_until

log = Logger()

# --------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------


def ping(src: Container, dst_ip: str, count: int = 1, wait: int = 1) -> subprocess.CompletedProcess:
    """One short ping from a container; the result, never an exception."""
    return src.exec(*ping_argv(), "-c", str(count), "-W", str(wait), dst_ip,
                    timeout=count + wait + 10)


def wait_ping(src: Container, dst: Container | str, timeout: float = 30.0) -> None:
    """Wait until ``src`` gets an echo reply from ``dst`` (flows may still be on their way)."""
    ip = dst if isinstance(dst, str) else dst.ip
    name = ip if isinstance(dst, str) else f"{dst.netns} ({dst.ip})"
    last: List[subprocess.CompletedProcess] = []

    def ok() -> bool:
        res = ping(src, ip)
        last[:] = [res]
        return res.returncode == 0

    wait_until(ok, f"{src.netns} ({src.ip}) never got a reply from {name}", timeout,
               interval=0.1, detail=lambda: (last[0].stdout + last[0].stderr) if last else "")


def assert_no_ping(src: Container, dst_ip: str) -> None:
    """``src`` gets no reply from ``dst_ip`` (call it after a positive control succeeded)."""
    assert_no_pings([(src, dst_ip)])


def assert_no_pings(pairs: Sequence[Tuple[Container, str]], count: int = 3) -> None:
    """No ``src`` gets a reply from its ``dst_ip``; the pings run side by side.

    ``count`` requests 0.2 s apart, then a second for late replies: a negative
    check costs about 1.5 s however many pairs it covers.
    """
    procs = [(src, ip, subprocess.Popen(
        ["ip", "netns", "exec", src.netns, *ping_argv(), "-c", str(count), "-i", "0.2",
         "-W", "1", ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for src, ip in pairs]
    reached = []
    for src, ip, p in procs:
        try:
            out, _ = p.communicate(timeout=count + 15)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        if p.returncode == 0 or "bytes from" in out:
            reached.append(f"{src.netns} ({src.ip}) -> {ip}:\n{out}")
    if reached:
        raise AssertionError("reached what must be unreachable:\n" + "\n".join(reached))


def _listening(c: Container, port: int) -> bool:
    res = c.exec("ss", "-Hltn", f"sport = :{port}", timeout=10)
    return f":{port}" in res.stdout


def tcp_exchange(server: Container, client: Container, ip: Optional[str] = None,
                 port: int = 5001, request: str = "ping-from-client",
                 reply: str = "pong-from-server", timeout: float = 15.0) -> Tuple[str, str]:
    """Open one TCP connection with busybox ``nc``; return (what the server got, what the client got).

    Proves TCP, not only ICMP, crosses the datapath: with TX checksum offload on,
    OVS's userspace datapath forwards pings but the receiver drops every TCP
    segment (``shared/notes/lab.md``).  Both ends are bounded by timeouts.
    """
    require_binary("ss")
    ip = ip or server.ip
    argv = ["ip", "netns", "exec", server.netns, "busybox", "nc", "-l", "-p", str(port)]
    srv = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        # the listener sends its reply after accepting, then half-closes on stdin EOF
        assert srv.stdin is not None
        srv.stdin.write(reply + "\n")
        srv.stdin.close()
        srv.stdin = None  # communicate() below must not touch it again
        wait_until(lambda: srv.poll() is not None or _listening(server, port),
                   f"nc never listened on {server.netns}:{port}", timeout=10, interval=0.05)
        if srv.poll() is not None:
            raise AssertionError(f"nc -l on {server.netns} exited: {srv.stderr.read()}")
        cli = client.exec("busybox", "nc", "-w", "5", ip, str(port), input=request + "\n",
                          timeout=timeout)
        try:
            got, _ = srv.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            got = ""  # nothing arrived: the caller's comparison says so
        log.info("tcp {src} -> {dst}:{port}: client rc {rc} got {cgot!r}, server got {sgot!r}",
                 src=client.netns, dst=ip, port=port, rc=cli.returncode, cgot=cli.stdout,
                 sgot=got)
        return got.strip(), cli.stdout.strip()
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(5)


class ContinuousPing:
    """A ping running in the background at a short interval, with every reply time-stamped.

    ``stop`` interrupts it right after a reply arrived, so no request is in flight
    and "transmitted == received" is an exact check of "no packet lost".
    """

    SEQ = re.compile(r"(?:icmp_)?seq=(\d+)")
    SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")

    def __init__(self, src: Container, dst_ip: str, interval: float = 0.2):
        self.src, self.dst_ip = src, dst_ip
        argv = ["ip", "netns", "exec", src.netns, *ping_argv(), "-i", str(interval), dst_ip]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.replies: List[Tuple[float, int]] = []   # (monotonic time, seq)
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"ping-{src.netns}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                m = self.SEQ.search(line)
                if m and "bytes from" in line:
                    self.replies.append((time.monotonic(), int(m.group(1))))
                self._cond.notify_all()

    def _count_after(self, t: float) -> int:
        """Replies received after monotonic time ``t`` (caller holds the condition)."""
        return sum(1 for ts, _ in self.replies if ts > t)

    def wait_replies(self, n: int, after: float, timeout: float = 15.0) -> None:
        """Wait until ``n`` replies arrived after time ``after`` (traffic flows at that point)."""
        with self._cond:
            self._cond.wait_for(lambda: self._count_after(after) >= n
                                or self.proc.poll() is not None, timeout)
            got = self._count_after(after)
        if got < n:
            raise AssertionError(f"ping {self.src.netns} -> {self.dst_ip}: {got} of {n} "
                                 f"replies after the mark:\n" + "\n".join(self.lines[-10:]))

    def stop(self, timeout: float = 10.0) -> Tuple[int, int, List[int]]:
        """Interrupt right after the next reply; return (transmitted, received, seqs received)."""
        if self.proc.poll() is None:
            now = time.monotonic()
            with self._cond:
                self._cond.wait_for(lambda: self._count_after(now) >= 1, 5)
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        text = "\n".join(self.lines)
        m = self.SUMMARY.search(text)
        if not m:
            raise AssertionError(f"ping {self.src.netns} -> {self.dst_ip} printed no summary:\n"
                                 + text[-2000:])
        seqs = sorted({s for _, s in self.replies})
        log.info("ping {src} -> {dst}: {tx} transmitted, {rx} received, seq {first}..{last}",
                 src=self.src.netns, dst=self.dst_ip, tx=m.group(1), rx=m.group(2),
                 first=seqs[0] if seqs else None, last=seqs[-1] if seqs else None)
        return int(m.group(1)), int(m.group(2)), seqs

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# --------------------------------------------------------------------------
# Flows
# --------------------------------------------------------------------------

_STATS = re.compile(r"duration=[0-9.]+s, |n_packets=\d+, |n_bytes=\d+, |idle_age=\d+, "
                    r"|hard_age=\d+, ")
_COOKIE = re.compile(r"cookie=(0x[0-9a-f]+)")
_DURATION = re.compile(r"duration=([0-9.]+)s")


def our_flows(host: Host, bridge: str = "br-int") -> List[str]:
    """The bridge's flows carrying the controller's cookie mark, with their statistics."""
    out = host.ovs.ofctl("dump-flows", bridge)
    flows = []
    for line in out.splitlines():
        m = _COOKIE.search(line)
        if m and int(m.group(1), 16) & COOKIE_MASK == COOKIE_MARK:
            flows.append(line.strip())
    return flows


def flow_key(line: str) -> str:
    """A flow without its statistics: equal keys are the same rule (match, priority, actions)."""
    return _STATS.sub("", line).strip()


def flow_durations(lines: Iterable[str]) -> Dict[str, float]:
    """``flow key -> age in seconds``: a flow deleted and re-added comes back younger."""
    out: Dict[str, float] = {}
    for line in lines:
        m = _DURATION.search(line)
        if m:
            out[flow_key(line)] = float(m.group(1))
    return out


def flows_mentioning(lines: Iterable[str], *needles: str) -> List[str]:
    """Flows naming any of ``needles`` (IPs, MACs, ``0x…`` cookies) as a whole token."""
    pats = [re.compile(rf"(?<![0-9a-fA-Fx.]){re.escape(n)}(?![0-9a-fA-F:.])") for n in needles]
    return [l for l in lines if any(p.search(l) for p in pats)]


def stable_flows(host: Host, settle: float = 0.5, timeout: float = 20.0) -> List[str]:
    """The host's flows once two dumps ``settle`` seconds apart have the same rules.

    Taking a "before" picture while the controller still converges would blame
    the restart for a change it did not make.
    """
    state: Dict[str, Any] = {"prev": None, "flows": []}

    def same() -> bool:
        flows = our_flows(host)
        keys = sorted(flow_key(f) for f in flows)
        if keys == state["prev"]:
            state["flows"] = flows
            return True
        state["prev"] = keys
        return False

    wait_until(same, f"the flows on {host.name} never settled", timeout, interval=settle)
    return state["flows"]


# --------------------------------------------------------------------------
# Underlay watching
# --------------------------------------------------------------------------

VXLAN_PORT = 4789
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_AUX = struct.Struct("=IIIHHHH")


def _with_vlan_tag(data: bytes, ancillary: list) -> bytes:
    """Put back the 802.1Q tag the kernel took off (veths hand it over out of band).

    A packet socket on a veth sees tagged frames *without* their tag: the tag
    travels in ``PACKET_AUXDATA``.  Without this, VLAN traffic on the trunk looks
    untagged and a test could not tell which VLAN carried it.
    """
    for level, kind, raw in ancillary:
        if level != SOL_PACKET or kind != PACKET_AUXDATA or len(raw) < _AUX.size:
            continue
        status, _l, _s, _m, _n, tci, tpid = _AUX.unpack_from(raw)
        if status & TP_STATUS_VLAN_VALID and len(data) >= 12:
            if not status & TP_STATUS_VLAN_TPID_VALID:
                tpid = 0x8100
            return data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
    return data


@dataclass(frozen=True)
class Frame:
    """What crossed the underlay: where, how it was carried, and what was inside."""

    ifname: str
    carrier: str               # "vxlan" (tag = VNI), "vlan" (tag = VID) or "plain"
    tag: int
    ethertype: Optional[int]   # of the payload frame
    arp: Optional[Tuple[int, str, str]] = None   # (op, sender IP, target IP)


def _eth(frame: bytes) -> Optional[Tuple[int, int, int]]:
    """(ethertype, payload offset, VLAN id or -1), looking through one 802.1Q tag."""
    if len(frame) < 14:
        return None
    etype, off, vid = struct.unpack_from("!H", frame, 12)[0], 14, -1
    if etype == 0x8100:
        if len(frame) < 18:
            return None
        vid = struct.unpack_from("!H", frame, 14)[0] & 0x0FFF
        etype, off = struct.unpack_from("!H", frame, 16)[0], 18
    return etype, off, vid


def _arp(frame: bytes, off: int) -> Optional[Tuple[int, str, str]]:
    if len(frame) < off + 28:
        return None
    op = struct.unpack_from("!H", frame, off + 6)[0]
    spa = socket.inet_ntoa(frame[off + 14:off + 18])
    tpa = socket.inet_ntoa(frame[off + 24:off + 28])
    return op, spa, tpa


def decode_frame(ifname: str, frame: bytes) -> Optional[Frame]:
    """Classify one underlay frame, looking inside VXLAN (UDP 4789) and 802.1Q."""
    head = _eth(frame)
    if head is None:
        return None
    etype, off, vid = head
    if etype == 0x0800 and len(frame) >= off + 20 and frame[off + 9] == 17:
        ihl = (frame[off] & 0x0F) * 4
        udp = off + ihl
        if len(frame) >= udp + 16 and struct.unpack_from("!H", frame, udp + 2)[0] == VXLAN_PORT:
            vni = struct.unpack_from("!I", frame, udp + 12)[0] >> 8
            inner = frame[udp + 16:]
            ih = _eth(inner)
            if ih is None:
                return Frame(ifname, "vxlan", vni, None)
            ietype, ioff, _ = ih
            return Frame(ifname, "vxlan", vni, ietype,
                         _arp(inner, ioff) if ietype == 0x0806 else None)
    carrier, tag = ("vlan", vid) if vid >= 0 else ("plain", 0)
    return Frame(ifname, carrier, tag, etype, _arp(frame, off) if etype == 0x0806 else None)


class UnderlayWatch:
    """Records every frame on the lab's per-host underlay and trunk links (root-namespace ends).

    It watches each host's veth, not the Linux bridges: a packet socket on a
    bridge device sees only what the bridge delivers to itself (broadcasts,
    frames for its own MAC), never the unicast VXLAN or tagged frames it
    forwards between two hosts, so counting there would prove nothing.
    """

    def __init__(self, lab: Lab):
        self.ifnames = [n for h in lab.hosts
                        for n in (lab.names.host_underlay_link(h.name),
                                  lab.names.host_trunk_link(h.name))]
        self.frames: List[Frame] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: List[socket.socket] = []
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "UnderlayWatch":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "UnderlayWatch":
        for name in self.ifnames:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            s.bind((name, 0))
            s.setblocking(False)
            self._socks.append(s)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="e2e-underlay")
        self._thread.start()
        return self

    def _loop(self) -> None:
        names = {s.fileno(): n for s, n in zip(self._socks, self.ifnames)}
        while not self._stop.is_set():
            ready, _, _ = select.select(self._socks, [], [], 0.1)
            for s in ready:
                try:
                    data, anc, _flags, _addr = s.recvmsg(65535, socket.CMSG_SPACE(_AUX.size))
                except (BlockingIOError, OSError):
                    continue
                f = decode_frame(names[s.fileno()], _with_vlan_tag(data, anc))
                if f is not None:
                    with self._lock:
                        self.frames.append(f)

    def stop(self) -> List[Frame]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks:
            s.close()
        self._socks = []
        return self.snapshot()

    def snapshot(self) -> List[Frame]:
        with self._lock:
            return list(self.frames)

    def count(self, carrier: str, tag: Optional[int] = None, ethertype: Optional[int] = None) -> int:
        return sum(1 for f in self.snapshot() if f.carrier == carrier
                   and (tag is None or f.tag == tag)
                   and (ethertype is None or f.ethertype == ethertype))

    def overlay_arp(self, underlay: str) -> List[Frame]:
        """ARP frames that belong to the overlay: inside VXLAN, VLAN-tagged, or for
        addresses outside the underlay subnet (the hosts' own VTEP/gateway ARP is not)."""
        net = ipaddress.ip_network(underlay)
        out = []
        for f in self.snapshot():
            if f.ethertype != 0x0806:
                continue
            if f.carrier != "plain" or f.arp is None:
                out.append(f)
            elif not (ipaddress.ip_address(f.arp[1]) in net
                      and ipaddress.ip_address(f.arp[2]) in net):
                out.append(f)
        return out


# --------------------------------------------------------------------------
# The per-class lab
# --------------------------------------------------------------------------

_labs: Dict[str, Lab] = {}
_broken: Dict[str, BaseException] = {}


def _say(msg: str) -> None:
    log.info("lab: {msg}", msg=msg)


def _release(key: str) -> None:
    lab = _labs.pop(key, None)
    if lab is not None:
        try:
            lab.down(all=True)
        except Exception as e:  # leave it for the next up, which cleans the same names
            log.failure("e2e lab {key} did not come down: {e}", key=key, e=e)


def _release_all() -> None:
    for key in list(_labs):
        _release(key)


atexit.register(_release_all)


def netctl_argv() -> List[str]:
    """The ``netctl`` of this Python's environment (the console script, else the module)."""
    script = os.path.join(os.path.dirname(sys.executable), "netctl")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "import sys; from contiv_sdn.netctl.main import main; "
            "sys.exit(main())"]


class E2ETestCase(SynchronousTestCase):
    """A test class sharing one lab: ``lab_letter`` names it, ``lab_subnet`` is its underlay."""

    lab_letter = "x"
    lab_hosts = 2
    lab_subnet = "192.168.69.0/24"
    lab_docker = False   # one dockerd per host, driving each host's netplugin
    lab_secure = False   # lab up --secure: HTTPS + --auth, node users, OpenFlow TLS, Redis ACL
    lab_swarm = False    # lab up --swarm: the dockerds form a swarm (needs lab_docker)
    lab_kubernetes = False  # lab up --kubernetes: API stand-in, netmaster's watcher, kubelets
    lab_netmasters = 1   # lab up --netmasters N: N netmasters, one MASTER (contiv_sdn/lab/ha.py)
    lab_redis_sentinel = False  # lab up --redis-sentinel: primary + 2 replicas + 3 sentinels
    lab_host_access = False  # lab up --host-access: netplugin --host-access on every host
    lab_aci = False      # ACI mode: netmaster --infra aci and the stand-in APIC on a free port

    lab: Lab

    # -- fixture --------------------------------------------------------------
    @classmethod
    def lab_key(cls) -> str:
        return f"{cls.__module__}.{cls.__name__}"

    def prepare_lab(self, lab: Lab) -> None:
        """Called once after ``up``, before any test (e.g. the global forwarding mode)."""

    @classmethod
    def _last_test(cls) -> str:
        return max(n for n in dir(cls) if n.startswith("test") and callable(getattr(cls, n)))

    def _acquire(self) -> Lab:
        key = self.lab_key()
        if key in _broken:
            raise AssertionError(f"the lab for {key} did not come up: {_broken[key]}")
        if key in _labs:
            return _labs[key]
        for other in list(_labs):
            _release(other)
        lab = Lab(hosts=self.lab_hosts, root=f"/run/contiv-e2e-{self.lab_letter}",
                  prefix=f"e2e{self.lab_letter}", link_prefix=f"cte{self.lab_letter}",
                  subnet=self.lab_subnet, netmaster_port=free_tcp_port(),
                  ofp_port=free_tcp_port(), progress=_say, docker=self.lab_docker,
                  secure=self.lab_secure, swarm=self.lab_swarm,
                  kubernetes=self.lab_kubernetes,
                  kubeapi_port=free_tcp_port() if self.lab_kubernetes else 6443,
                  aci=self.lab_aci, apic_port=free_tcp_port(),
                  netmasters=self.lab_netmasters, redis_sentinel=self.lab_redis_sentinel,
                  host_access=self.lab_host_access)
        _labs[key] = lab
        try:
            lab.up()
            self.prepare_lab(lab)
        except BaseException as e:
            _broken[key] = e
            _release(key)
            raise
        return lab

    def setUp(self) -> None:
        require_root()
        require_binary("ovs-vswitchd", "redis-server", "busybox", "ip")
        if self._testMethodName == self._last_test():
            self.addCleanup(_release, self.lab_key())
        self.lab = self._acquire()

    # -- objects, removed again by the test's cleanup ------------------------
    def netctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, **self.lab.netctl_env())
        res = subprocess.run(netctl_argv() + list(args), env=env, capture_output=True,
                             text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"netctl {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}{res.stderr}")
        return res

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return http.call(method, path, body, timeout=30, **self.lab.netmaster_http())

    def tenant(self, name: str) -> str:
        self.netctl("tenant", "create", name)
        self.addCleanup(self._quietly, "DELETE", f"/api/v1/tenants/{name}/")
        return name

    def network(self, name: str, subnet: str, encap: str = "vxlan", tag: int = 0,
                tenant: str = "default") -> str:
        """Create a network with netctl (the user's way); its gateway is the subnet's last address."""
        gw = str(list(ipaddress.ip_network(subnet).hosts())[-1])
        self.netctl("net", "create", "-t", tenant, "-e", encap, "-p", str(tag), "-s", subnet,
                    "-g", gw, name)
        self.addCleanup(self._quietly, "DELETE", f"/api/v1/networks/{tenant}:{name}/")
        return name

    def container(self, host: int, name: str, network: str, tenant: str = "default",
                  ip: Optional[str] = None) -> Container:
        """A container on host number ``host`` (1-based), removed at cleanup."""
        c = self.lab.add_container(self.lab.hosts[host - 1].name, name, network, tenant=tenant,
                                   ip=ip)
        self.addCleanup(self._remove_container, c)
        return c

    def docker_network(self, host: int, name: str, timeout: float = 30.0) -> str:
        """Wait until the host's dockerd knows the network (netplugin creates it from the
        Contiv network or group, a moment after the REST call)."""
        h = self.lab.hosts[host - 1].name

        def known() -> bool:
            out = self.lab.docker(h, "network", "ls", "--format", "{{.Name}}", check=False)
            return name in out.stdout.split()

        wait_until(known, f"docker network {name} never appeared on {h}", timeout, interval=0.2)
        return name

    def docker_container(self, host: int, name: str, network: str, *cmd: str,
                         ip: Optional[str] = None) -> Container:
        """``docker run -d --net NETWORK busybox:local CMD`` on host number ``host``.

        The container's network namespace gets the name ``<host>-dk-<name>``
        (``ip netns attach``), so every traffic helper here works on it as on a
        lab container.  Removed (container and name) at cleanup.
        """
        from contiv_sdn.lab.probe import attach_docker_netns
        h = self.lab.hosts[host - 1].name
        self.docker_network(host, network)
        argv = ["run", "-d", "--name", name, f"--net={network}"]
        if ip:
            argv.append(f"--ip={ip}")
        self.lab.docker(h, *argv, "busybox:local", *(cmd or ("sleep", "3600")), timeout=120)
        netns = self.lab.names.container_netns(h, f"dk-{name}")
        self.addCleanup(self._remove_docker_container, h, name, netns)

        def docker(*args: str) -> subprocess.CompletedProcess:
            return self.lab.docker(h, *args, check=False, timeout=60)

        attach_docker_netns(docker, name, netns)
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.MacAddress}}{{end}}"
        addr, mac = docker("inspect", "-f", fmt, name).stdout.split()
        return Container(host=h, name=name, netns=netns, id=name, network=network, ip=addr,
                         mac=mac)

    def _remove_docker_container(self, host: str, name: str, netns: str) -> None:
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
        res = self.lab.docker(host, "rm", "-f", name, check=False, timeout=60)
        if res.returncode != 0:
            log.warn("could not remove container {n} on {h}: {e}", n=name, h=host,
                     e=res.stderr.strip())

    def _remove_container(self, c: Container) -> None:
        try:
            self.lab.remove_container(c.netns)
        except Exception as e:
            log.warn("could not remove {c}: {e}", c=c.netns, e=e)

    def _quietly(self, method: str, path: str) -> None:
        try:
            self.api(method, path)
        except Exception as e:
            log.warn("{m} {p}: {e}", m=method, p=path, e=e)

    # -- diagnostics -----------------------------------------------------------
    def describe(self) -> str:
        """Flow counts and service liveness, for failure messages."""
        try:
            st = self.lab.status()
        except Exception as e:
            return f"(no lab status: {e})"
        parts = [f"{k}: alive={v['alive']}" for k, v in st["services"].items()]
        parts += [f"{h['name']}: {h['br_int_flows']} flows, controllers {h.get('controllers')}"
                  for h in st["hosts"]]
        return "; ".join(parts)


def wait_connected(lab: Lab, timeout: float = 30.0) -> None:
    """Every host's br-int has all its controllers connected."""
    def ok() -> bool:
        return all((c := h.controllers()) and all(c.values()) for h in lab.hosts)

    wait_until(ok, "not every br-int reconnected to the controller", timeout,
               detail=lambda: str({h.name: h.controllers() for h in lab.hosts}))
