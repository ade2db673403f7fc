"""The resolver: the naming rules applied to one query, and the view that follows Redis.

:class:`Resolver` turns (asker, question) into records, NXDOMAIN, or "forward
it"; it holds the current :class:`~contiv_sdn.dns.names.Directory` and the
per-name rotation counters.  :class:`Feed` keeps that directory equal to Redis:
it follows the store's change feed (``Store.subscribe``), re-reads only the
records named by notifications, re-reads everything after each
(re)subscription (pub/sub drops what is published while disconnected), and
rebuilds the directory off the query path.  While Redis is unreachable the
last directory keeps answering: running containers keep resolving through a
Redis or netmaster restart, and the first notification after it brings the
view up to date.

TTL: answers carry :data:`DEFAULT_TTL` = 1 second.  Freshness is promised
within a second, so a cache (nscd, a caching stub, Docker's resolver does not
cache) must not keep an answer longer; and 1 s, not 0, because some resolvers
treat a zero TTL as "do not use at all" and re-ask for every connection.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple

from twisted.internet import defer, task
from twisted.logger import Logger

from contiv_sdn.dns import names
from contiv_sdn.dns.names import FOREIGN, MISSING, Addresses, Asker, Directory
from contiv_sdn.dns.wire import A, AAAA, ANY, CLASS_IN, NOERROR, NXDOMAIN

log = Logger()

DEFAULT_TTL = 1
_RR = struct.Struct("!HHHIH")  # name pointer, type, class, ttl, rdlength
#: Rotation counters kept at most (one per (tenant, network, name, type) asked);
#: past this they start again from zero, which only resets the rotation.
_MAX_COUNTERS = 100_000


class Resolution(NamedTuple):
    """Our answer: an rcode and (type, rdata) records in the order to send."""

    rcode: int
    records: Tuple[Tuple[int, bytes], ...]


FORWARD = None
""":meth:`Resolver.resolve`'s value for "not ours: forward upstream"."""


class Resolver:
    """Names → records for one asker at a time; swap :attr:`directory` to update."""

    def __init__(self, directory: Optional[Directory] = None, ttl: int = DEFAULT_TTL) -> None:
        self.directory = directory if directory is not None else Directory()
        self.ttl = ttl
        self._turns: Dict[Tuple[str, str, str, int], int] = {}
        #: rdata already packed, per address text (addresses repeat across queries)
        self._packed: Dict[str, bytes] = {}
        #: (tenant, network, name, type, class) -> [rcode, v4 RRs, v6 RRs, turn] or
        #: [None] (forward), for :attr:`_cache_of` only
        self._cache: Dict[Tuple[str, str, str, int, int], list] = {}
        self._cache_of: Optional[Directory] = None

    def _rdata(self, family: int, ip: str) -> bytes:
        packed = self._packed.get(ip)
        if packed is None:
            if len(self._packed) > _MAX_COUNTERS:
                self._packed.clear()
            packed = self._packed[ip] = socket.inet_pton(family, ip)
        return packed

    def _rotate(self, key: Tuple[str, str, str, int], items: Tuple[str, ...]) -> Tuple[str, ...]:
        """``items`` starting one further along than last time (per name and type),
        so that successive queries spread the clients over a group."""
        if len(items) < 2:
            return items
        turn = self._turns.get(key, 0)
        if len(self._turns) >= _MAX_COUNTERS and key not in self._turns:
            self._turns.clear()
        self._turns[key] = turn + 1
        k = turn % len(items)
        return items[k:] + items[:k]

    def packed(self, asker: Asker, qname: str, qtype: int,
               qclass: int = CLASS_IN) -> Optional[Tuple[int, List[bytes]]]:
        """:meth:`resolve` with each record already a wire-format answer RR (name =
        a pointer to the question, class IN, :attr:`ttl`), or :data:`FORWARD`.

        The query path's form: per directory, the records of a (asker's network,
        name, type) are encoded once and only rotated afterwards."""
        directory = self.directory
        if directory is not self._cache_of or len(self._cache) > _MAX_COUNTERS:
            self._cache.clear()
            self._cache_of = directory
        key = (asker.tenant, asker.network, qname.lower(), qtype, qclass)
        entry = self._cache.get(key)
        if entry is None:
            res = self.resolve(asker, qname, qtype, qclass, rotate=False)
            if res is None:
                entry = self._cache[key] = [None]
            else:
                v4 = tuple(_RR.pack(0xC00C, t, CLASS_IN, self.ttl, len(r)) + r
                           for t, r in res.records if t == A)
                v6 = tuple(_RR.pack(0xC00C, t, CLASS_IN, self.ttl, len(r)) + r
                           for t, r in res.records if t == AAAA)
                entry = self._cache[key] = [res.rcode, v4, v6, 0]
        if entry[0] is None:
            return FORWARD
        rcode, v4, v6, turn = entry
        entry[3] = turn + 1
        out: List[bytes] = []
        for part in (v4, v6):
            if len(part) > 1:
                k = turn % len(part)
                out.extend(part[k:])
                out.extend(part[:k])
            else:
                out.extend(part)
        return rcode, out

    def resolve(self, asker: Asker, qname: str, qtype: int,
                qclass: int = CLASS_IN, rotate: bool = True) -> Optional[Resolution]:
        """Our answer to ``qname``/``qtype`` asked by ``asker``, or :data:`FORWARD`."""
        if qclass != CLASS_IN:
            return FORWARD
        found = self.directory.lookup(asker, qname)
        if found is FOREIGN:
            return FORWARD
        if found is MISSING:
            return Resolution(NXDOMAIN, ())
        assert isinstance(found, Addresses)
        key_name = qname.rstrip(".").lower()
        records: List[Tuple[int, bytes]] = []
        if qtype in (A, ANY):
            v4 = self._rotate((asker.tenant, asker.network, key_name, A), found.v4) \
                if rotate else found.v4
            for ip in v4:
                records.append((A, self._rdata(socket.AF_INET, ip)))
        if qtype in (AAAA, ANY):
            v6 = self._rotate((asker.tenant, asker.network, key_name, AAAA), found.v6) \
                if rotate else found.v6
            for ip in v6:
                records.append((AAAA, self._rdata(socket.AF_INET6, ip)))
        return Resolution(NOERROR, tuple(records))


class Feed:
    """Keeps ``resolver.directory`` equal to the store's endpoints, networks and serviceLBs.

    ``start()`` subscribes; the first full read happens on the subscription's
    resync (which also follows every reconnection).  Changes landing within
    ``debounce`` seconds share one rebuild.  ``on_update`` (tests, metrics) is
    called after each rebuild with the new directory.
    """

    def __init__(self, store: Any, resolver: Resolver, domain: str = "", reactor: Any = None,
                 debounce: float = 0.01, retry: float = 0.5) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.store = store
        self.resolver = resolver
        self.domain = domain
        self.reactor = reactor
        self.debounce = debounce
        self.retry = retry
        self.rebuilds = 0
        self.on_update: Optional[Any] = None
        self._mirror: Optional[Dict[str, Dict[str, Any]]] = None
        self._need_full = True
        self._dirty: Set[Tuple[str, str]] = set()
        self._pending: Optional[Any] = None
        self._running: Optional[defer.Deferred] = None
        self._again = False
        self._sub: Any = None
        self._stopped = False
        self._failing = False
        self._bad: Dict[Tuple[str, str], str] = {}
        self._synced: List[defer.Deferred] = []

    def start(self) -> None:
        self._stopped = False
        self._sub = self.store.subscribe(self._changed, self._resync)

    def stop(self, unsubscribe: bool = False) -> defer.Deferred:
        """Stop updating.  The subscription itself ends when the store is closed
        (``Store.close`` stops every subscription, and stopping one twice fails);
        ``unsubscribe`` ends it now, for a store that stays open."""
        self._stopped = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        sub, self._sub = self._sub, None
        waits = []
        if sub is not None and unsubscribe:
            waits.append(defer.maybeDeferred(sub.stop))
        if self._running is not None:
            waiter: defer.Deferred = defer.Deferred()
            self._running.addBoth(lambda r: (waiter.callback(None), r)[1])
            waits.append(waiter)
        return defer.DeferredList(waits, consumeErrors=True)

    def synced(self) -> defer.Deferred:
        """Fires once a full read has been applied (at once if one has)."""
        if self._mirror is not None:
            return defer.succeed(self.resolver.directory)
        d: defer.Deferred = defer.Deferred()
        self._synced.append(d)
        return d

    # -- notifications --------------------------------------------------------------
    def _changed(self, kind: str, key: str, op: str, rev: int) -> None:
        if kind in names.KINDS:
            self._dirty.add((kind, key))
            self._schedule(self.debounce)

    def _resync(self) -> None:
        self._need_full = True
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if self._running is not None:
            self._again = True
            return
        if self._pending is not None and self._pending.active():
            return
        self._pending = self.reactor.callLater(delay, self._run)

    def _run(self) -> None:
        self._pending = None
        self._again = False
        d = defer.ensureDeferred(self._update())

        def done(result: Any) -> None:
            self._running = None
            if hasattr(result, "check"):
                self._need_full = True
                if not self._failing:  # once per outage, not per retry
                    log.warn("DNS view of the store not updated ({err}); answering from the "
                             "last view and retrying", err=result.getErrorMessage())
                self._failing = True
                self._schedule(self.retry)
                return None
            if self._failing:
                log.info("DNS view of the store up to date again")
            self._failing = False
            if self._again:
                self._schedule(self.debounce)
            return None

        self._running = d
        d.addBoth(done)

    def _parse(self, kind: str, key: str, raw: str) -> Optional[Any]:
        from contiv_sdn.model.errors import DecodeError
        from contiv_sdn.model.shapes import loads
        try:
            value = loads(raw)
        except DecodeError as err:
            if self._bad.get((kind, key)) != raw:  # refusals logged once per bad record
                log.warn("DNS ignores {kind} {key}: not JSON ({err})", kind=kind, key=key,
                         err=str(err))
            self._bad[(kind, key)] = raw
            return None
        self._bad.pop((kind, key), None)
        return value

    async def _update(self) -> None:
        from contiv_sdn.store import keys as K
        started = time.perf_counter()
        if self._need_full or self._mirror is None:
            self._need_full = False
            self._dirty.clear()
            hashes = await defer.gatherResults(
                [defer.ensureDeferred(self.store.hgetall_raw(K.hash_of(kind)))
                 for kind in names.KINDS], consumeErrors=True)
            mirror: Dict[str, Dict[str, Any]] = {}
            for kind, raw in zip(names.KINDS, hashes):
                table = mirror[kind] = {}
                for key, text in raw.items():
                    value = self._parse(kind, key, text)
                    if value is not None:
                        table[key] = value
            self._mirror = mirror
        else:
            dirty, self._dirty = sorted(self._dirty), set()
            values = await defer.gatherResults(
                [defer.ensureDeferred(self.store.get_raw(kind, key)) for kind, key in dirty],
                consumeErrors=True)
            for (kind, key), raw in zip(dirty, values):
                table = self._mirror.setdefault(kind, {})
                value = None if raw is None else self._parse(kind, key, raw)
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        directory = names.build(self._mirror, self.domain)
        self.resolver.directory = directory
        self.rebuilds += 1
        log.debug("DNS view rebuilt in {ms:.1f} ms", ms=(time.perf_counter() - started) * 1e3)
        waiters, self._synced = self._synced, []
        for w in waiters:
            w.callback(directory)
        if self.on_update is not None:
            self.on_update(directory)
        # let the reactor answer queries between two rebuilds of a busy store
        await task.deferLater(self.reactor, 0, lambda: None)
