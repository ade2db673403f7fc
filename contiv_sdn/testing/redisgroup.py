"""A Redis Sentinel group on loopback: a primary, replicas and sentinels (Debian's
``redis-server``, run as ``redis-server … --sentinel`` for the sentinels).

For the HA tests, ``bench/ha.py`` and the lab: real processes, so a test can
SIGKILL the primary and watch Sentinel promote a replica.  Synchronous (plain
subprocesses, like :class:`~contiv_sdn.testing.netmaster.NetmasterProcess`).
Failure detection is tuned for a lab (``down-after-milliseconds`` 1000), not for
a WAN: production values are an operator's choice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from contiv_sdn.testing import free_tcp_port

PRIMARY_NAME = "contiv"


def _cmd(port: int, *args: str, timeout: float = 2.0, host: str = "127.0.0.1") -> str:
    """One Redis command over a raw socket (inline protocol): the reply's text."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        s.settimeout(timeout)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
    return data.decode(errors="replace")


def _complete(data: bytes) -> bool:
    if not data.endswith(b"\r\n"):
        return False
    first = data[:1]
    if first in (b"+", b"-", b":"):
        return True
    if first == b"$":
        n = int(data[1:data.index(b"\r\n")])
        return n < 0 or len(data) >= data.index(b"\r\n") + 2 + n + 2
    if first == b"*":
        n = int(data[1:data.index(b"\r\n")])
        return n <= 0 or data.count(b"\r\n") >= 1 + 2 * n  # flat arrays of bulk strings
    return True


class RedisGroup:
    """``replicas`` replicas of a primary, watched by ``sentinels`` sentinels.

    ``host``: the address every process binds and announces (the lab uses its
    underlay gateway, so the hosts' network namespaces reach the group too).
    """

    def __init__(self, replicas: int = 2, sentinels: int = 3, root: Optional[str] = None,
                 name: str = PRIMARY_NAME, down_after_ms: int = 2000,
                 host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.down_after_ms = down_after_ms
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="contiv-redisgroup-")
        self.data_ports: List[int] = [free_tcp_port() for _ in range(1 + replicas)]
        self.sentinel_ports: List[int] = [free_tcp_port() for _ in range(sentinels)]
        self.procs: Dict[int, subprocess.Popen] = {}

    # -- addresses ------------------------------------------------------------
    @property
    def url(self) -> str:
        """The ``sentinel://`` URL of the group (for --redis)."""
        hosts = ",".join(f"{self.host}:{p}" for p in self.sentinel_ports)
        return f"sentinel://{hosts}/{self.name}"

    def primary_port(self) -> Optional[int]:
        """The data port a majority of the sentinels name as the primary now."""
        votes: Dict[int, int] = {}
        for p in self.sentinel_ports:
            proc = self.procs.get(p)  # (the lab's sentinels are not this object's children)
            if proc is not None and proc.poll() is not None:
                continue
            try:
                reply = _cmd(p, "SENTINEL", "get-master-addr-by-name", self.name, host=self.host)
            except OSError:
                continue
            lines = reply.split("\r\n")
            if reply.startswith("*2") and len(lines) >= 5:
                port = int(lines[4])
                votes[port] = votes.get(port, 0) + 1
        if not votes:
            return None
        port, n = max(votes.items(), key=lambda kv: kv[1])
        return port if n * 2 > len(self.sentinel_ports) else None

    # -- life cycle -----------------------------------------------------------
    def _spawn(self, port: int, argv: List[str]) -> None:
        log = open(os.path.join(self.root, f"{port}.log"), "ab")
        try:
            self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=self.root)
        finally:
            log.close()

    def data_argv(self, port: int, replica_of: Optional[int]) -> List[str]:
        """The command line of data node ``port`` (a replica of ``replica_of`` if given)."""
        return self._data_argv(port, replica_of)

    def sentinel_argv(self, port: int, primary: int) -> List[str]:
        """The command line of sentinel ``port`` watching ``primary`` (writes its config)."""
        return self._sentinel_argv(port, primary)

    def _data_argv(self, port: int, replica_of: Optional[int]) -> List[str]:
        d = os.path.join(self.root, f"data-{port}")
        os.makedirs(d, exist_ok=True)
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(port),
                "--bind", self.host, "--dir", d, "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--daemonize", "no",
                # a replica (re)joining after a failover syncs at once, not 5 s later:
                # until one has, no write can be acknowledged (WAIT)
                "--repl-diskless-sync-delay", "0",
                "--replica-announce-ip", self.host]
        if replica_of is not None:
            argv += ["--replicaof", self.host, str(replica_of)]
        return argv

    def _sentinel_argv(self, port: int, primary: int) -> List[str]:
        conf = os.path.join(self.root, f"sentinel-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"port {port}\nbind {self.host}\ndaemonize no\ndir {self.root}\n"
                    f"sentinel announce-ip {self.host}\n"
                    f"sentinel monitor {self.name} {self.host} {primary} "
                    f"{len(self.sentinel_ports) // 2 + 1}\n"
                    f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.name} 10000\n"
                    f"sentinel parallel-syncs {self.name} 1\n")
        return [shutil.which("redis-server") or "redis-server", conf, "--sentinel"]

    def start(self, timeout: float = 30.0) -> "RedisGroup":
        primary = self.data_ports[0]
        self._spawn(primary, self._data_argv(primary, None))
        for p in self.data_ports[1:]:
            self._spawn(p, self._data_argv(p, primary))
        for p in self.sentinel_ports:
            self._spawn(p, self._sentinel_argv(p, primary))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready(primary):
                return self
            dead = [p for p, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                self.stop()
                raise RuntimeError(f"redis group: process on port {dead[0]} exited:\n"
                                   + self.log_tail(dead[0]))
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"redis group did not become ready in {timeout}s")

    def ready(self, primary: int) -> bool:
        """Whether ``primary`` has every replica online and the sentinels agree on it."""
        return self._ready(primary)

    def _ready(self, primary: int) -> bool:
        try:
            info = _cmd(primary, "INFO", "replication", host=self.host)
        except OSError:
            return False
        want = len(self.data_ports) - 1
        if info.count("state=online") < want:  # a replica still syncing acks nothing
            return False
        for p in self.sentinel_ports:
            try:
                reply = _cmd(p, "SENTINEL", "replicas", self.name, host=self.host)
            except OSError:
                return False
            if reply.count("ip") < want:
                return False
        return self.primary_port() == primary

    def kill(self, port: int) -> None:
        """SIGKILL one process (a data node or a sentinel)."""
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart_as_replica(self, port: int) -> None:
        """Start a killed data node again as a replica of the current primary (what
        its configuration says once Sentinel has rewritten it; started as a
        primary instead, it would serve its old data until Sentinel converts it)."""
        self._spawn(port, self._data_argv(port, self.primary_port()))

    def wait_failover(self, old: int, timeout: float = 30.0) -> Tuple[int, float]:
        """Wait until a majority names a primary other than ``old``: (new port, seconds)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            port = self.primary_port()
            if port is not None and port != old:
                return port, time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"no failover away from {old} in {timeout}s")

    def log_tail(self, port: int, chars: int = 3000) -> str:
        try:
            with open(os.path.join(self.root, f"{port}.log"), errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        for port, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["RedisGroup", "PRIMARY_NAME"]
