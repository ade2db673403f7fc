"""Helpers shared by the trial tests and the benchmarks.

They start *real* services (redis-server, netmaster) in private directories, and
decide what a test that needs root or Open vSwitch does when it cannot run: skip
on a developer's laptop, fail in CI (``CI=true``), so nothing is skipped silently
where it matters.

Why these live in the product package and not in ``tests/``: the benchmarks
(``bench/*.py``, ``make bench``) start the same real services (``RedisServer``,
``netmaster.NetmasterProcess``, ``free_tcp_port``) and ``bench/`` does not import
from ``tests/``.  ``wait`` is here so every test and these helpers wait the same
way.  Helpers only the tests use belong in ``tests/`` (``test_*_fixtures.py``,
``test_fnd_helpers.py``); nothing in netmaster or netplugin imports this package.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

from twisted.trial.unittest import SkipTest


def in_ci() -> bool:
    """True when running under CI, where a missing prerequisite is a failure."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip (outside CI) or fail (in CI) a test whose prerequisite is missing."""
    if condition:
        return
    if in_ci():
        raise AssertionError(f"prerequisite missing in CI: {why}")
    raise SkipTest(why)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, OVS)")


def require_binary(*names: str) -> None:
    for name in names:
        require(shutil.which(name) is not None, f"needs {name} on PATH")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on every address.

    Chosen below the kernel's ephemeral range (``ip_local_port_range``): a port
    the kernel hands out for listening is also what it hands out to outgoing
    connections, so between this call and the listen a Redis or HTTP client could
    take it ("Address already in use", seen in CI).  Ports below the range are only
    ever taken by someone listening on purpose.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(500 if low > 10001 else 0):
        port = rng.randrange(10000, low)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                a.bind(("", port))
                if host not in ("", "0.0.0.0"):
                    a.close()
                    b.bind((host, port))
            return port
        except OSError:
            continue
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # the kernel's choice
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server on a unix socket in its own directory.

    Started synchronously (it takes a few milliseconds) so that tests can use it
    in ``setUp``; ``stop`` removes the process and its directory.
    """

    def __init__(self, directory: Optional[str] = None, appendonly: bool = True):
        require_binary("redis-server")
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="contiv-redis-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.appendonly = appendonly
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", "0", "--unixsocket", self.socket,
                "--unixsocketperm", "700", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--dir", self.dir, "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(self.socket):
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(self.socket)
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            return self
                except OSError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self, remove: bool = True) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if remove and self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
