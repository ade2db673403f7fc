"""A private redis-server owned by a netmaster, so a first run needs no set-up.

It listens on a unix socket only (no TCP port to collide with anything), keeps
an append-only file in the netmaster's state directory (so allocations
survive restarts), and is stopped with SIGTERM (Redis fsyncs the AOF on
SIGTERM) when the netmaster stops.  A redis-server left behind by a netmaster
that was SIGKILLed is adopted on the next start instead of being started twice
on the same append-only file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from typing import Optional

from twisted.internet import defer, error, protocol, reactor, task
from twisted.logger import Logger

log = Logger()


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _parent_of(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_netmaster(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"netmaster" in f.read()
    except OSError:
        return False


class _RedisProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        del self.output[:-8192]

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


class EmbeddedRedis:
    """Start/stop a redis-server in ``state_dir`` (Twisted process API, no blocking)."""

    def __init__(self, state_dir: str, binary: str = "redis-server"):
        self.state_dir = state_dir
        self.socket = os.path.join(state_dir, "redis.sock")
        self.pidfile = os.path.join(state_dir, "redis.pid")
        self.binary = binary
        self._proc: Optional[_RedisProcess] = None
        self._transport = None
        self._adopted_pid: Optional[int] = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def start(self, timeout: float = 20.0) -> str:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        if os.path.exists(self.socket) and _ping(self.socket):
            pid = self._read_pid()
            parent = _parent_of(pid) if pid else None
            if pid and (parent == 1 or parent is None or not _is_netmaster(parent)):
                log.warn("adopting redis-server {pid} left running in {dir}", pid=pid,
                         dir=self.state_dir)
                self._adopted_pid = pid
                return self.url
            raise RuntimeError(f"{self.state_dir} is in use by another netmaster's redis-server")
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        exe = shutil.which(self.binary)
        if exe is None:
            raise RuntimeError(f"{self.binary} not found: install redis-server or pass --redis")
        args = [exe, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--dir", self.state_dir, "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--pidfile", self.pidfile,
                "--logfile", os.path.join(self.state_dir, "redis.log")]
        self._proc = _RedisProcess()
        self._transport = reactor.spawnProcess(self._proc, exe, args, env=None,
                                               path=self.state_dir)
        waited = 0.0
        while not _ping(self.socket):
            if self._proc.ended.called:
                raise RuntimeError("redis-server exited: " + self._log_tail())
            if waited > timeout:
                await self.stop()
                raise RuntimeError("redis-server did not start: " + self._log_tail())
            await task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
        log.info("embedded redis-server on {sock}", sock=self.socket)
        return self.url

    def _read_pid(self) -> Optional[int]:
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.state_dir, "redis.log"), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return self._proc.output.decode(errors="replace") if self._proc else ""

    async def stop(self, timeout: float = 20.0) -> None:
        if self._adopted_pid:
            pid, self._adopted_pid = self._adopted_pid, None
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                return
            waited = 0.0
            while os.path.exists(f"/proc/{pid}") and waited < timeout:
                await task.deferLater(reactor, 0.05, lambda: None)
                waited += 0.05
            return
        if self._proc is None or self._proc.ended.called:
            return
        try:
            self._transport.signalProcess("TERM")
        except error.ProcessExitedAlready:
            return
        timer = reactor.callLater(timeout, self._kill)
        await self._proc.ended
        if timer.active():
            timer.cancel()

    def _kill(self) -> None:
        try:
            self._transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
