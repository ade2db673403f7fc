"""A private redis-server owned by a netmaster, so a first run needs no set-up.

It listens on a unix socket only (no TCP port to collide with anything), keeps
an append-only file in the netmaster's state directory (so allocations
survive restarts), and is stopped with SIGTERM (Redis fsyncs the AOF on
SIGTERM) when the netmaster stops.

Ownership: a netmaster holds an exclusive ``flock`` on ``netmaster.lock`` in
the state directory for as long as it runs, so two netmasters can never share
(and then kill) one redis-server.  The kernel drops the lock when its holder
dies, even by SIGKILL; a redis-server left behind by such a netmaster is then
adopted by the next one to take the lock, instead of being started twice on
the same append-only file.

Supervision: if the redis-server exits while the netmaster runs, it is
started again after an exponential back-off (capped) and counts as up only
once it answers ``PING``; the :class:`~contiv_sdn.store.Store` reconnects by
itself and the controller's change feed resyncs on reconnection.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import time
from typing import Dict, Optional, Tuple
from urllib.parse import quote

from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

LOCK_FILE = "netmaster.lock"
#: Generated Redis credentials (JSON ``{"netmaster": pw, "agent": pw}``, 0600).
AUTH_FILE = "redis.auth"
#: The ACL file the redis-server loads with ``auth`` on (0600; hashes only).
ACL_FILE = "redis.acl"
#: ACL users with ``auth`` on.  The netmaster may do everything; ``agent`` may
#: only read (scripts run with the caller's rights in Redis 7, so a read-only
#: user cannot write through EVAL either) and follow the change feed; the
#: ``default`` user (no password) is off.
NETMASTER_USER = "netmaster"
AGENT_USER = "agent"
_ACL = ("user default off\n"
        "user {nm} on #{nm_hash} ~* &* +@all\n"
        "user {ag} on #{ag_hash} ~* &* -@all +@read +@connection +@pubsub +eval +evalsha "
        "+eval_ro +evalsha_ro +script|load +script|exists +select +time\n")


class StateDirLocked(RuntimeError):
    """Another live netmaster holds the state directory."""


def _bulk(*words: str) -> bytes:
    """One command in RESP (any bytes in a word, a password included)."""
    out = [b"*%d\r\n" % len(words)]
    for w in words:
        b = w.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Ping(protocol.Protocol):
    """``[AUTH user password] PING``; answers the reply line to PING (None if the
    connection closed first)."""

    def __init__(self, auth: Optional[Tuple[str, str]] = None) -> None:
        self.answer: defer.Deferred = defer.Deferred()
        self._buf = b""
        self._auth = auth

    def connectionMade(self) -> None:
        head = _bulk("AUTH", *self._auth) if self._auth else b""
        self.transport.write(head + b"PING\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        lines = self._buf.split(b"\r\n")
        want = 2 if self._auth else 1
        if len(lines) > want and not self.answer.called:
            self.answer.callback(lines[want - 1])
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if not self.answer.called:
            self.answer.callback(None)


async def ping(path: str, timeout: float = 1.0,
               auth: Optional[Tuple[str, str]] = None) -> bool:
    """Whether a Redis answers ``PING`` on the unix socket ``path`` (no blocking:
    a hung redis-server would otherwise freeze the reactor)."""
    line = await probe(path, timeout, auth)
    return line is not None and line.startswith(b"+PONG")


async def probe(path: str, timeout: float = 1.0,
                auth: Optional[Tuple[str, str]] = None) -> Optional[bytes]:
    """The reply line of a Redis on ``path`` to ``PING`` (after ``AUTH`` if
    given): ``+PONG``, an error such as ``-NOAUTH ...``, or None (nobody)."""
    if not os.path.exists(path):
        return None
    p = _Ping(auth)
    factory = protocol.Factory()
    factory.noisy = False  # no "Starting factory" line per ping in the log
    factory.buildProtocol = lambda addr: p
    try:
        d = UNIXClientEndpoint(reactor, path, timeout=max(1, int(timeout))).connect(factory)
        await d.addTimeout(timeout, reactor)
        return await p.answer.addTimeout(timeout, reactor)
    except Exception:
        return None
    finally:
        if p.transport is not None and p.transport.connected:
            p.transport.abortConnection()


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _is_redis(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"redis-server" in f.read()
    except OSError:
        return False


class _RedisProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()
        self.output = bytearray()
        self.reason = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        del self.output[:-8192]

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.reason = reason
        self.ended.callback(None)


class EmbeddedRedis:
    """Lock ``state_dir``, start (or adopt) and supervise its redis-server.

    Twisted process API and async pings only: nothing here blocks the reactor.
    ``backoff``/``max_backoff`` shape the restart delays; a server that stayed
    up ``stable`` seconds resets the back-off.
    """

    def __init__(self, state_dir: str, binary: str = "redis-server", backoff: float = 0.5,
                 max_backoff: float = 30.0, stable: float = 30.0, check_interval: float = 1.0,
                 auth: bool = False):
        self.state_dir = state_dir
        #: whether the server refuses clients without a password (ACL users,
        #: credentials generated once into ``redis.auth``)
        self.auth = auth
        self.authfile = os.path.join(state_dir, AUTH_FILE)
        self.aclfile = os.path.join(state_dir, ACL_FILE)
        self._passwords: Dict[str, str] = {}
        self.socket = os.path.join(state_dir, "redis.sock")
        self.pidfile = os.path.join(state_dir, "redis.pid")
        self.lockfile = os.path.join(state_dir, LOCK_FILE)
        self.binary = binary
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stable = stable
        self.check_interval = check_interval
        #: restarts done by the supervisor (for logs and tests)
        self.restarts = 0
        self._proc: Optional[_RedisProcess] = None
        self._transport = None
        self._adopted_pid: Optional[int] = None
        self._lock_fd: Optional[int] = None
        self._stopping = False
        self._supervising = False
        self._failures = 0
        self._up_since = 0.0
        self._pending = None          # the DelayedCall of a scheduled restart
        self._restarting: Optional[defer.Deferred] = None
        self._watch: Optional[task.LoopingCall] = None

    @property
    def url(self) -> str:
        """The netmaster's URL, credentials included when ``auth`` is on (log
        it through :class:`~contiv_sdn.store.RedisURL`, which hides them)."""
        return self.url_for(NETMASTER_USER)

    def url_for(self, user: str) -> str:
        if not self.auth:
            return f"unix://{self.socket}"
        return f"unix://{user}:{quote(self._passwords[user], safe='')}@{self.socket}"

    @property
    def _login(self) -> Optional[Tuple[str, str]]:
        return (NETMASTER_USER, self._passwords[NETMASTER_USER]) if self.auth else None

    def _credentials(self) -> None:
        """Read the generated passwords, or make them on the first run; write the
        ACL file the server loads.  Both files are 0600 in the 0700 state dir."""
        try:
            with open(self.authfile, encoding="utf-8") as f:
                data = json.load(f)
            if not all(isinstance(data.get(u), str) and data[u]
                       for u in (NETMASTER_USER, AGENT_USER)):
                raise ValueError("a user is missing")
        except FileNotFoundError:
            data = {u: secrets.token_urlsafe(24) for u in (NETMASTER_USER, AGENT_USER)}
            _write_private(self.authfile, json.dumps(data) + "\n")
            log.info("generated Redis passwords in {path}", path=self.authfile)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"cannot use the Redis credentials in {self.authfile} ({e}); "
                               f"remove the file to have new ones generated") from None
        self._passwords = data
        digest = {u: hashlib.sha256(p.encode()).hexdigest() for u, p in data.items()}
        _write_private(self.aclfile, _ACL.format(nm=NETMASTER_USER, ag=AGENT_USER,
                                                 nm_hash=digest[NETMASTER_USER],
                                                 ag_hash=digest[AGENT_USER]))

    # -- the state-dir lock -----------------------------------------------
    def lock(self) -> None:
        """Take the state directory or raise :class:`StateDirLocked`.

        ``flock`` rather than a pid file: the kernel releases it when the
        holder dies however it dies, so there is no stale lock to clean up.
        """
        if self._lock_fd is not None:
            return
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirLocked(
                f"state dir {self.state_dir} is in use by another netmaster (pid {holder}); "
                f"stop that one first or give this one another --state-dir") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    # -- start --------------------------------------------------------------
    async def start(self, timeout: float = 30.0) -> str:
        """Lock the state dir, adopt or spawn the redis-server, wait until it
        answers PING, then supervise it.  Returns its URL."""
        self.lock()
        self._stopping = False
        try:
            if self.auth:
                self._credentials()
            line = await probe(self.socket, auth=self._login)
            if line is not None and line.startswith(b"+PONG"):
                self._adopt()
            elif line is not None and not line.startswith(b"-LOADING"):
                raise RuntimeError(
                    f"a Redis answers on {self.socket} but refuses the netmaster "
                    f"({line.decode(errors='replace')[:120]}): it runs with other "
                    f"credentials (--redis-auth changed?); stop it (pid in {self.pidfile}), "
                    f"then start the netmaster again")
            else:
                await self._spawn(timeout)
        except BaseException:
            self.unlock()
            raise
        self._supervising = True
        self._watch = task.LoopingCall(self._check)
        self._watch.start(self.check_interval, now=False)
        return self.url

    def _adopt(self) -> None:
        """Take over the redis-server a dead netmaster left running: we hold the
        lock, so nobody else owns it."""
        pid = self._read_pid()
        if not pid or not _alive(pid) or not _is_redis(pid):
            raise RuntimeError(
                f"a Redis answers on {self.socket} but {self.pidfile} does not name its "
                f"process; stop that redis-server, then start the netmaster again")
        log.warn("adopting redis-server {pid} left running in {dir}", pid=pid, dir=self.state_dir)
        self._adopted_pid = pid
        self._up_since = time.monotonic()

    async def _spawn(self, timeout: float) -> None:
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        exe = shutil.which(self.binary)
        if exe is None:
            raise RuntimeError(f"{self.binary} not found: install redis-server or pass --redis")
        args = [exe, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--dir", self.state_dir, "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--pidfile", self.pidfile,
                "--logfile", os.path.join(self.state_dir, "redis.log")]
        if self.auth:
            args += ["--aclfile", self.aclfile]
        proc = _RedisProcess()
        self._proc = proc
        self._transport = reactor.spawnProcess(proc, exe, args, env=None, path=self.state_dir)
        proc.ended.addCallback(lambda _: self._ended(proc))
        deadline = time.monotonic() + timeout
        while not await ping(self.socket, auth=self._login):
            if proc.ended.called:
                raise RuntimeError("redis-server exited: " + self._log_tail())
            if self._stopping:
                raise RuntimeError("stopped while redis-server was starting")
            if time.monotonic() > deadline:
                self._signal(proc, "KILL")
                raise RuntimeError(f"redis-server did not answer PING within {timeout:g}s: "
                                   + self._log_tail())
            await task.deferLater(reactor, 0.05, lambda: None)
        self._up_since = time.monotonic()
        log.info("embedded redis-server {pid} on {sock}", pid=self._transport.pid,
                 sock=self.socket)

    # -- supervision --------------------------------------------------------
    def _ended(self, proc: _RedisProcess) -> None:
        if proc is not self._proc or self._stopping or not self._supervising:
            return
        self._proc = None
        why = proc.reason.getErrorMessage() if proc.reason is not None else "exited"
        self._lost(f"redis-server exited ({why})")

    def _check(self) -> None:
        """An adopted redis-server is not our child: poll whether it still lives."""
        pid = self._adopted_pid
        if pid and self._supervising and not self._stopping and not _alive(pid):
            self._adopted_pid = None
            self._lost(f"adopted redis-server {pid} is gone")

    def _lost(self, what: str) -> None:
        if self._pending is not None or self._restarting is not None:
            return
        if time.monotonic() - self._up_since >= self.stable:
            self._failures = 0
        delay = min(self.max_backoff, self.backoff * (2 ** self._failures))
        self._failures += 1
        log.warn("{what}; restarting it in {delay:.1f}s (attempt {n})", what=what, delay=delay,
                 n=self._failures)
        self._pending = reactor.callLater(delay, self._restart)

    def _restart(self) -> None:
        self._pending = None
        if self._stopping:
            return
        self._restarting = defer.ensureDeferred(self._spawn(30.0))

        def done(result):
            self._restarting = None
            if self._stopping:
                return None
            if isinstance(result, Failure):
                msg = result.getErrorMessage()
                self._proc = None
                self._lost(f"redis-server restart failed: {msg.strip()[-500:]}")
            else:
                self.restarts += 1
                log.info("embedded redis-server restarted and ready (restart {n})",
                         n=self.restarts)
            return None

        self._restarting.addBoth(done)

    # -- helpers --------------------------------------------------------------
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

    @staticmethod
    def _signal(proc: _RedisProcess, sig: str) -> None:
        try:
            if sig == "CONT":  # not a name Twisted's signalProcess knows
                if proc.transport.pid:
                    os.kill(proc.transport.pid, signal.SIGCONT)
            else:
                proc.transport.signalProcess(sig)
        except (error.ProcessExitedAlready, AttributeError, OSError):
            pass

    # -- stop -----------------------------------------------------------------
    async def stop(self, timeout: float = 10.0) -> None:
        """Stop supervising, stop the redis-server (SIGTERM, SIGKILL after
        ``timeout``), release the lock.  Bounded whatever Redis does: a
        SIGSTOPped server is sent SIGCONT so that it can act on the SIGTERM."""
        self._stopping = True
        self._supervising = False
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        self._watch = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        try:
            if self._adopted_pid:
                await self._stop_pid(self._adopted_pid, timeout)
                self._adopted_pid = None
            proc, self._proc = self._proc, None
            if proc is not None and not proc.ended.called:
                self._signal(proc, "TERM")
                self._signal(proc, "CONT")
                timer = reactor.callLater(timeout, self._signal, proc, "KILL")
                try:
                    await proc.ended.addTimeout(timeout + 5.0, reactor)
                except defer.TimeoutError:
                    log.error("redis-server did not exit even after SIGKILL")
                finally:
                    if timer.active():
                        timer.cancel()
        finally:
            self.unlock()

    @staticmethod
    async def _stop_pid(pid: int, timeout: float) -> None:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except OSError:
                return
        if await _gone(pid, timeout):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
        if not await _gone(pid, 5.0):
            log.error("redis-server {pid} did not exit even after SIGKILL", pid=pid)


def _write_private(path: str, text: str) -> None:
    """Write ``path`` readable by its owner only (created 0600, never wider)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def _gone(pid: int, timeout: float) -> bool:
    """Wait (polling, without blocking) until ``pid`` is gone; False on timeout."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        await task.deferLater(reactor, 0.05, lambda: None)
    return True
