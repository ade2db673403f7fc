"""Finding the Redis primary through Redis Sentinel, before every connection.

Why this shape: Sentinel (a proven engine, not ours) decides which Redis is the
primary; all we must do is ask before each connection attempt, so that after a
failover the connection pool's normal reconnect lands on the new primary, the
change feed's resubscription triggers its usual full resync (level-triggered),
and nothing else in the product knows Sentinel exists.  The endpoint is a plain
:class:`~twisted.internet.interfaces.IStreamClientEndpoint`, so the store's
pools and its change-feed subscriber use it unchanged.

Every sentinel is asked (short-lived connections, bounded) and a majority must
agree (see :func:`ask_sentinels`).  A primary that is named but not promoted yet
refuses writes with ``READONLY``: :class:`~contiv_sdn.store.store.Store` treats
that as "primary moved" and reconnects (see ``Store._call``).  Writes are
acknowledged only once a replica has them (``WAIT`` in ``Store.apply``), so a
primary that is cut off from its replicas cannot acknowledge anything that a
failover would then lose.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

#: Seconds to wait for one sentinel's answer (connection included).
ASK_TIMEOUT = 2.0


class PrimaryNotFound(ConnectionError):
    """No sentinel named a primary (all unreachable, or none knows the name)."""


async def ask_sentinels(sentinels: Tuple[Tuple[str, int], ...], primary: str,
                        timeout: float = ASK_TIMEOUT) -> Tuple[str, int]:
    """The primary's (host, port) as a **majority** of the sentinels name it.

    One sentinel may lag behind a failover (it learns the new configuration from
    the others within a second) and name the old primary, which may be back up
    with its old data; trusting a majority — the same majority Sentinel needs to
    authorize a failover — never picks a primary that has been replaced."""
    answers = await defer.DeferredList(
        [defer.Deferred.fromCoroutine(_ask_one(host, port, primary, timeout))
         for host, port in sentinels], consumeErrors=True)
    votes: Dict[Tuple[str, int], int] = {}
    why: List[str] = []
    for (host, port), (ok, value) in zip(sentinels, answers):
        if ok and isinstance(value, tuple):
            votes[value] = votes.get(value, 0) + 1
        else:
            why.append(f"{host}:{port}: " + (value if ok else
                                               (str(value.value) or type(value.value).__name__)))
    need = len(sentinels) // 2 + 1
    for addr, n in votes.items():
        if n >= need:
            return addr
    seen = ", ".join(f"{h}:{p} by {n}" for (h, p), n in votes.items()) or "none"
    raise PrimaryNotFound(f"no majority of the {len(sentinels)} sentinels names a primary for "
                          f"{primary!r} (named: {seen}" + ("; " + "; ".join(why) if why else "")
                          + ")")


class _AskPrimary(Protocol):
    """One ``SENTINEL get-master-addr-by-name`` over a fresh connection.

    A few lines of RESP instead of a txredisapi connection: its reconnecting
    machinery cannot be cancelled mid-attempt, and a shutdown (or a test's end)
    must leave no connection attempt behind."""

    def __init__(self, primary: str) -> None:
        self.primary = primary
        self.done: Deferred = Deferred()
        self._buf = b""

    def connectionMade(self) -> None:
        args = [b"SENTINEL", b"get-master-addr-by-name", self.primary.encode()]
        self.transport.write(b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in args))

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 4096:
            self._finish(ValueError("oversized reply"))
            return
        lines = self._buf.split(b"\r\n")
        if self._buf.startswith(b"*-1") or self._buf.startswith(b"$-1"):
            self._finish(f"does not know {self.primary!r}")
        elif self._buf.startswith(b"-"):
            self._finish(ValueError(lines[0][1:].decode(errors="replace")))
        elif self._buf.startswith(b"*2\r\n") and len(lines) >= 6:
            try:
                self._finish((lines[2].decode(), int(lines[4])))
            except (UnicodeDecodeError, ValueError):
                self._finish(ValueError("malformed reply"))
        elif not self._buf.startswith(b"*"):
            self._finish(ValueError("malformed reply"))

    def _finish(self, result: Any) -> None:
        self.transport.loseConnection()
        if not self.done.called:
            if isinstance(result, Exception):
                self.done.errback(result)
            else:
                self.done.callback(result)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(ConnectionError("connection closed before the answer"))


async def _ask_one(host: str, port: int, primary: str, timeout: float) -> Any:
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    proto = _AskPrimary(primary)
    d = endpoint.connect(_OneShot(proto))
    d.addTimeout(timeout, reactor)
    await d
    answer = proto.done
    answer.addTimeout(timeout, reactor)
    try:
        return await answer
    finally:
        if proto.transport is not None:
            proto.transport.loseConnection()


class _OneShot(Factory):
    def __init__(self, proto: Protocol) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.proto



@implementer(IStreamClientEndpoint)
class PrimaryEndpoint:
    """Connects to whatever the sentinels name as the primary, at each attempt."""

    def __init__(self, sentinels: Tuple[Tuple[str, int], ...], primary: str,
                 timeout: float = 10.0, clock: Any = None) -> None:
        self.sentinels = sentinels
        self.primary = primary
        self.timeout = timeout
        self.clock = clock if clock is not None else reactor
        #: the address of the last connection made (the primary as we last knew it)
        self.current: Optional[Tuple[str, int]] = None

    def connect(self, protocol_factory: Any) -> Deferred:
        async def run() -> Any:
            addr = await ask_sentinels(self.sentinels, self.primary)
            if self.current is not None and addr != self.current:
                log.info("redis sentinel: primary {name} is now {host}:{port} (was {old})",
                         name=self.primary, host=addr[0], port=addr[1],
                         old=f"{self.current[0]}:{self.current[1]}")
            self.current = addr
            endpoint = HostnameEndpoint(self.clock, addr[0], addr[1], timeout=self.timeout)
            return await endpoint.connect(protocol_factory)
        return defer.Deferred.fromCoroutine(run())


__all__ = ["PrimaryEndpoint", "PrimaryNotFound", "ask_sentinels"]
