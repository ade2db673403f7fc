"""Connection probes for policy checks: TCP, UDP, a UDP echo server, and a watcher.

Why a script of its own: a policy check asks "does a *new* connection get
through?" many times, often for several ports at once, and a deny rule shows up
only as a connection that never completes.  Spawning one busybox ``nc`` per
port and waiting out each timeout in turn is slow; this script runs all of a
batch's attempts side by side in one process with one deadline, inside the
client's network namespace (``ip netns exec NS python3 probe.py …``).  It uses
the standard library only and imports nothing of the project, so it starts fast
and runs with any Python 3.

Busybox ``nc`` (Debian 1.35) has no ``-u``: UDP needs this script on both ends.

Command line (all output is one JSON document on stdout)::

    probe.py tcp [--timeout S] [--send TEXT] IP:PORT ...   -> [{"target", "connected", "reply", "error"}]
    probe.py udp [--timeout S] [--send TEXT] IP:PORT ...   -> [{"target", "reply", "error"}]
    probe.py udp-echo PORT [--tag TEXT]    serve forever: answer each datagram with TAG + datagram
    probe.py tcp-sink PORT                 serve forever: accept each connection and close it
    probe.py watch                         read "open|closed IP PORT" lines, see the module's end

From Python: :func:`tcp`, :func:`udp` (and ``*_many``), :func:`start_udp_echo`,
:func:`start_tcp_sink`, :class:`Watcher`.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

SCRIPT = os.path.abspath(__file__)


# ---------------------------------------------------------------------------
# Inside the namespace (the script's own side)
# ---------------------------------------------------------------------------

def _split(target: str) -> Tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def _tcp_batch(targets: Sequence[str], timeout: float, send: str) -> List[Dict[str, Any]]:
    """Connect to every target at once; for those that connect, send ``send`` and read the answer."""
    socks: Dict[int, Tuple[str, socket.socket]] = {}
    results: Dict[str, Dict[str, Any]] = {t: {"target": t, "connected": False, "reply": "",
                                              "error": ""} for t in targets}
    for t in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(_split(t))
        if err not in (0, errno.EINPROGRESS):
            results[t]["error"] = os.strerror(err)
            s.close()
            continue
        socks[s.fileno()] = (t, s)
    deadline = time.monotonic() + timeout
    connecting = dict(socks)
    reading: Dict[int, Tuple[str, socket.socket]] = {}
    while (connecting or reading) and time.monotonic() < deadline:
        left = max(0.0, deadline - time.monotonic())
        w = [s for _, s in connecting.values()]
        r = [s for _, s in reading.values()]
        rr, ww, _ = select.select(r, w, [], min(left, 0.05))
        for s in ww:
            t, _ = connecting.pop(s.fileno())
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                results[t]["error"] = os.strerror(err)
                continue
            results[t]["connected"] = True
            try:
                s.send(send.encode())
            except OSError as e:
                results[t]["error"] = str(e)
                continue
            reading[s.fileno()] = (t, s)
        for s in rr:
            t, _ = reading[s.fileno()]
            try:
                data = s.recv(65536)
            except OSError as e:
                results[t]["error"] = str(e)
                data = b""
            if data:
                results[t]["reply"] += data.decode(errors="replace")
            else:
                reading.pop(s.fileno())
    for t, _ in connecting.values():
        results[t]["error"] = "no answer (timed out)"
    for _, s in socks.values():
        s.close()
    return [results[t] for t in targets]


def _udp_batch(targets: Sequence[str], timeout: float, send: str) -> List[Dict[str, Any]]:
    """One datagram to every target from its own socket; collect the first answer of each."""
    results = {t: {"target": t, "reply": "", "error": ""} for t in targets}
    socks: Dict[int, Tuple[str, socket.socket]] = {}
    for t in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.connect(_split(t))
            s.send(send.encode())
        except OSError as e:
            results[t]["error"] = str(e)
            s.close()
            continue
        socks[s.fileno()] = (t, s)
    deadline = time.monotonic() + timeout
    waiting = dict(socks)
    while waiting and time.monotonic() < deadline:
        rr, _, _ = select.select([s for _, s in waiting.values()], [], [],
                                 max(0.0, min(0.05, deadline - time.monotonic())))
        for s in rr:
            t, _ = waiting.pop(s.fileno())
            try:
                results[t]["reply"] = s.recv(65536).decode(errors="replace")
            except OSError as e:  # ICMP port unreachable arrives as ECONNREFUSED
                results[t]["error"] = str(e)
    for t, _ in waiting.values():
        results[t]["error"] = "no answer (timed out)"
    for _, s in socks.values():
        s.close()
    return [results[t] for t in targets]


def _udp_echo(port: int, tag: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(tag.encode() + data, peer)


def _tcp_sink(port: int) -> None:
    """Accept and close, as fast as connections come (the watcher's server: no fork per
    connection like busybox httpd, and a full accept queue would drop SYNs and look like a
    deny)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.close()


_LINGER0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"   # struct linger {1, 0}: close sends RST


def _watch() -> None:
    """Serve "open|closed IP PORT [INTERVAL_MS] [WINDOW_MS]" requests from stdin, one at a time.

    For "open": start a fresh TCP connection every INTERVAL_MS until one
    completes; print ``open T`` with T the ``time.monotonic()`` at which the
    successful attempt was *sent* (same clock in every process of the machine).
    For "closed": the same stream of attempts, each given WINDOW_MS to
    complete; print ``closed T`` with T the send time of the first attempt of a
    run of 10 that all failed.  A new connection per attempt means a new
    conntrack entry each time: each attempt is judged by the policy afresh.
    """
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            return
        want, ip, port = parts[0], parts[1], int(parts[2])
        print("probing", flush=True)
        interval = (float(parts[3]) if len(parts) > 3 else 2.0) / 1000
        window = (float(parts[4]) if len(parts) > 4 else 30.0) / 1000
        give_up = time.monotonic() + 30
        pending: List[Tuple[float, socket.socket]] = []
        outcomes: List[Tuple[float, bool]] = []   # (sent at, connected), in send order
        answer: Optional[float] = None
        next_at = time.monotonic()
        while answer is None and time.monotonic() < give_up:
            now = time.monotonic()
            if now >= next_at:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((ip, port))
                pending.append((now, s))
                next_at = now + interval
            _, ww, _ = select.select([], [s for _, s in pending], [],
                                     max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            done = set(ww)
            still = []
            for sent, s in pending:
                if s in done:
                    ok = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    outcomes.append((sent, ok))
                    if ok:  # no TIME_WAIT left behind at hundreds of attempts a second
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                    s.close()
                elif now - sent > window:
                    outcomes.append((sent, False))
                    s.close()
                else:
                    still.append((sent, s))
            pending = still
            outcomes.sort()
            if want == "open":
                hits = [t for t, ok in outcomes if ok]
                answer = hits[0] if hits else None
            else:
                # the first of 10 consecutive failures with nothing pending before them
                oldest_pending = min((t for t, _ in pending), default=float("inf"))
                run: List[float] = []
                for t, ok in outcomes:
                    if t > oldest_pending:
                        break
                    run = run + [t] if not ok else []
                    if len(run) >= 10:
                        answer = run[0]
                        break
        for _, s in pending:
            s.close()
        print(f"{want} {answer if answer is not None else 'timeout'}", flush=True)


def main(argv: Sequence[str]) -> int:
    cmd, rest = argv[0], list(argv[1:])
    timeout, send, tag = 2.0, "GET / HTTP/1.0\r\n\r\n", "echo:"
    while rest and rest[0].startswith("--"):
        opt = rest.pop(0)
        if opt == "--timeout":
            timeout = float(rest.pop(0))
        elif opt == "--send":
            send = rest.pop(0)
        elif opt == "--tag":
            tag = rest.pop(0)
        else:
            raise SystemExit(f"probe.py: unknown option {opt}")
    if cmd == "tcp":
        print(json.dumps(_tcp_batch(rest, timeout, send)))
    elif cmd == "udp":
        print(json.dumps(_udp_batch(rest, timeout, send)))
    elif cmd == "udp-echo":
        port = int(rest.pop(0))
        if rest and rest[0] == "--tag":
            tag = rest[1]
        _udp_echo(port, tag)
    elif cmd == "tcp-sink":
        _tcp_sink(int(rest.pop(0)))
    elif cmd == "watch":
        _watch()
    else:
        raise SystemExit(f"probe.py: unknown command {cmd}: tcp, udp, udp-echo or watch")
    return 0


# ---------------------------------------------------------------------------
# The caller's side (tests, benchmarks): run the script in a namespace
# ---------------------------------------------------------------------------

def _argv(netns: str, *args: str) -> List[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-S", SCRIPT, *args]


def _run(netns: str, args: Sequence[str], timeout: float) -> List[Dict[str, Any]]:
    proc = subprocess.run(_argv(netns, *args), capture_output=True, text=True,
                          timeout=timeout + 20)
    if proc.returncode != 0:
        raise RuntimeError(f"probe in {netns} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def tcp(netns: str, targets: Sequence[str], timeout: float = 2.0,
        send: str = "GET / HTTP/1.0\r\n\r\n") -> Dict[str, Dict[str, Any]]:
    """New TCP connections from ``netns`` to every ``IP:PORT`` at once: ``target -> result``.

    ``connected`` says the handshake completed; ``reply`` is what the server
    sent back before closing (busybox httpd answers the default request).
    """
    return {r["target"]: r for r in _run(netns, ["tcp", "--timeout", str(timeout),
                                                 "--send", send, *targets], timeout)}


def udp(netns: str, targets: Sequence[str], timeout: float = 2.0,
        send: str = "hello") -> Dict[str, Dict[str, Any]]:
    """One datagram from ``netns`` to every ``IP:PORT`` at once: ``target -> result`` (``reply``)."""
    return {r["target"]: r for r in _run(netns, ["udp", "--timeout", str(timeout),
                                                 "--send", send, *targets], timeout)}


def _many(kind: str, batches: Dict[str, Sequence[str]], timeout: float,
          send: str) -> Dict[Tuple[str, str], Dict[str, Any]]:
    procs = {ns: subprocess.Popen(_argv(ns, kind, "--timeout", str(timeout), "--send", send,
                                        *targets), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
             for ns, targets in batches.items() if targets}
    out: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for ns, p in procs.items():
        try:
            so, se = p.communicate(timeout=timeout + 20)
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{kind} probe in {ns} failed ({p.returncode}): {se.strip()}")
        for r in json.loads(so):
            out[(ns, r["target"])] = r
    return out


def tcp_many(batches: Dict[str, Sequence[str]], timeout: float = 1.5,
             send: str = "GET / HTTP/1.0\r\n\r\n") -> Dict[Tuple[str, str], Dict[str, Any]]:
    """:func:`tcp` from several namespaces side by side: ``(netns, target) -> result``."""
    return _many("tcp", batches, timeout, send)


def udp_many(batches: Dict[str, Sequence[str]], timeout: float = 1.5,
             send: str = "hello") -> Dict[Tuple[str, str], Dict[str, Any]]:
    """:func:`udp` from several namespaces side by side: ``(netns, target) -> result``."""
    return _many("udp", batches, timeout, send)


def _start_server(netns: str, args: Sequence[str], what: str,
                  timeout: float) -> subprocess.Popen:
    proc = subprocess.Popen(_argv(netns, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready or proc.stdout.readline().strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise RuntimeError(f"{what} in {netns} did not start: {err.strip()}")
    return proc


def start_udp_echo(netns: str, port: int, tag: str = "echo:",
                   timeout: float = 10.0) -> subprocess.Popen:
    """A UDP echo server in ``netns`` (answers ``tag`` + datagram); returned once it listens."""
    return _start_server(netns, ["udp-echo", str(port), "--tag", tag], "UDP echo server",
                         timeout)


def start_tcp_sink(netns: str, port: int, timeout: float = 10.0) -> subprocess.Popen:
    """A TCP server in ``netns`` that accepts and closes (for :class:`Watcher`); once it listens."""
    return _start_server(netns, ["tcp-sink", str(port)], "TCP sink", timeout)


class Watcher:
    """A long-lived prober in a namespace that times when a port becomes open or closed.

    ``until("open"|"closed", ip, port)`` returns the monotonic time of the first
    attempt that saw the new state (comparable with ``time.monotonic()`` here:
    one clock for the machine), or ``None`` if it never did within 30 s.
    """

    def __init__(self, netns: str):
        self.netns = netns
        self.proc = subprocess.Popen(_argv(netns, "watch"), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def start(self, want: str, ip: str, port: int, interval_ms: float = 2.0,
              window_ms: float = 30.0) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{want} {ip} {port} {interval_ms} {window_ms}\n")
        self.proc.stdin.flush()
        if self._line(30.0) != ["probing"]:   # its first attempt is on its way now
            raise RuntimeError(f"prober in {self.netns} did not start probing")

    def _line(self, timeout: float) -> List[str]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"prober in {self.netns} gave no answer in {timeout:g} s")
        return self.proc.stdout.readline().split()

    def result(self, timeout: float = 40.0) -> Optional[float]:
        line = self._line(timeout)
        if len(line) != 2:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"prober in {self.netns} stopped: {err.strip()}")
        return None if line[1] == "timeout" else float(line[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


def attach_docker_netns(docker: "Any", name: str, netns: str) -> str:
    """Give a running Docker container's network namespace the name ``netns`` (``ip netns attach``).

    Why: every traffic helper of the lab works on named namespaces; with the
    name, a container that dockerd made through our plugin is probed exactly
    like a lab container.  ``docker`` is a callable running the docker CLI of
    the container's engine and returning a CompletedProcess (``lab.docker``
    bound to a host).  ``ip netns delete NAME`` later removes only the name.
    """
    pid = docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    if not pid.isdigit() or pid == "0":
        raise RuntimeError(f"container {name} is not running (pid {pid!r})")
    subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
    proc = subprocess.run(["ip", "netns", "attach", netns, pid], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip netns attach {netns} {pid} failed: {proc.stderr.strip()}")
    return netns


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
