"""Transactions: what one atomic mutation checks, allocates and writes.

A :class:`Txn` is a plain program for the ``APPLY`` Lua script.  It has four
parts, run by Redis in this order without anything else interleaving:

1. *guards* — "the value I read is still the one I read" (a hash field or the
   version of a whole kind).  A failed guard raises :class:`Conflict`; the
   caller re-reads and tries again (optimistic concurrency, so two netmasters
   on one Redis never act on a stale read);
2. *checks* — conditions on allocation bitmaps that refuse with a message;
3. *allocations* — lowest-free (or next-fit, or a requested value) bits in
   Redis bit strings, IPv6 host ids in a hash; all or none;
4. *writes* — records (whose JSON may contain ``$$name$$`` placeholders
   filled with an allocation result), bit ranges, raw index fields, and
   *link* edits: one member added to or removed from a record's link-set by
   the script itself (:mod:`contiv_sdn.store.links`), so that a create does
   not read, guard and re-send its parent (a tenant listing every network).
   A link edit the script cannot prove answers :class:`LinksNeedRead`
   before anything is written; :func:`transact` then re-runs the attempt
   with ``view.server_links`` off (read, edit and write the parent).

:class:`View` records guards automatically for whatever the semantics layer
reads, so a piece of semantics is written as a plain function of what it read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from typing import (
    Any, Awaitable, Callable, Dict, Generic, List, Optional, TYPE_CHECKING, Tuple, TypeVar,
    Union,
)

from twisted.internet import defer, reactor, task

from contiv_sdn.store import links as L
from contiv_sdn.store.keys import hash_of

if TYPE_CHECKING:  # pragma: no cover
    from contiv_sdn.store.store import CachedKind, Store

T = TypeVar("T")


def _sha1(raw: Optional[str]) -> Optional[str]:
    return None if raw is None else hashlib.sha1(raw.encode("utf-8")).hexdigest()


class StoreError(Exception):
    """A refusal from the store (allocation exhausted, address taken...).

    ``str(err)`` is the user-facing message, without any stack trace.
    """


class StoreUnavailable(StoreError):
    """Redis did not answer in time or is not connected.

    A subclass of :class:`StoreError` so the semantics layer refuses the request
    with this message instead of hanging; the REST layer answers it promptly
    (503) and the client may retry.
    """

    def __init__(self, message: str = "the state store (Redis) is unavailable; "
                                      "retry shortly or check the redis-server") -> None:
        super().__init__(message)


class Conflict(Exception):
    """Something read for a transaction changed before it committed."""


class LinksNeedRead(Conflict):
    """A server-side link edit could not be proven on the stored text (see
    :mod:`contiv_sdn.store.links`): nothing was written; redo the attempt
    reading the record."""


class TxnResult:
    """What a committed transaction produced."""

    def __init__(self, rev: int, allocs: Dict[str, int], vers: Dict[str, int],
                 written: Optional[Dict[Tuple[str, str], str]] = None):
        self.rev = rev
        self.allocs = allocs
        self.vers = vers
        #: (kind, key) -> the text the script wrote, for puts made with ``answer=True``
        self.written: Dict[Tuple[str, str], str] = written or {}

    def __repr__(self) -> str:
        return f"TxnResult(rev={self.rev}, allocs={self.allocs})"


class Finish(Generic[T]):
    """What a transaction function returns when its answer needs the commit's
    result (allocated numbers): ``then(result)`` builds the answer once the
    transaction has committed.  Returned rather than stored on the view, so
    the answer of the attempt that committed is the one used."""

    __slots__ = ("then",)

    def __init__(self, then: Callable[[TxnResult], T]) -> None:
        self.then = then


def placeholder(name: str, fmt: Optional[str] = None) -> str:
    """The text to put in a record where an allocation result belongs.

    Without ``fmt`` the whole JSON string ``"$$name$$"`` becomes a number;
    with ``fmt`` ("ip", "mac", "ip6", "int") it is replaced inside a string.
    """
    return f"$${name}$$" if fmt is None else f"$${name}:{fmt}$$"


class Txn:
    """A transaction program; see the module docstring."""

    def __init__(self) -> None:
        self._guards: List[dict] = []
        self._checks: List[dict] = []
        self._allocs: List[dict] = []
        self._ops: List[dict] = []
        self._values: List[str] = []  # ARGV[2:] of the script
        self._guarded: set = set()

    def _value(self, raw: str) -> int:
        self._values.append(raw)
        return len(self._values) + 1  # Lua's ARGV index (ARGV[1] is the program)

    # -- guards -----------------------------------------------------------
    def guard_eq(self, kind: str, key: str, raw: Optional[str]) -> None:
        """Commit only if ``kind[key]`` still has the raw JSON ``raw`` (None = absent)."""
        ident = ("eq", kind, key)
        if ident in self._guarded:
            return
        self._guarded.add(ident)
        self._guards.append({"t": "eq", "h": hash_of(kind), "f": key, "s": _sha1(raw)})

    def guard_raw(self, hashkey: str, field: str, value: Optional[str]) -> None:
        """Commit only if a field of a non-record hash (an index) still reads ``value``."""
        ident = ("raw", hashkey, field)
        if ident in self._guarded:
            return
        self._guarded.add(ident)
        self._guards.append({"t": "eq", "h": hashkey, "f": field, "s": _sha1(value)})

    def guard_exists(self, kind: str, key: str, exists: bool) -> None:
        """Commit only if ``kind[key]`` is still there (or still absent), whatever it holds."""
        ident = ("ex", kind, key)
        if ident in self._guarded or ("eq", kind, key) in self._guarded:
            return
        self._guarded.add(ident)
        self._guards.append({"t": "ex", "h": hash_of(kind), "f": key, "e": bool(exists)})

    def guard_ver(self, kind: str, ver: int) -> None:
        """Commit only if nothing in ``kind`` changed since version ``ver``."""
        ident = ("ver", kind)
        if ident in self._guarded:
            return
        self._guarded.add(ident)
        self._guards.append({"t": "ver", "k": kind, "v": int(ver)})

    # -- checks -----------------------------------------------------------
    def check_clear(self, bitmap: str, lo: int, hi: int, err: str, fmt: str = "int",
                    base: int = 0) -> None:
        """Refuse with ``err`` (``{}`` = the first set position, rendered) unless lo..hi are clear."""
        self._checks.append({"t": "clear", "b": bitmap, "lo": lo, "hi": hi, "err": err,
                             "fmt": fmt, "base": base})

    def check_fail(self, err: str) -> None:
        """Refuse with ``err`` if the checks before it passed (orders messages like Contiv)."""
        self._checks.append({"t": "fail", "err": err})

    # -- allocations ------------------------------------------------------
    def alloc(self, name: str, bitmap: str, lo: int, hi: int, *, want: Optional[int] = None,
              full: str = "allocation failed", taken: str = "{} is not available",
              cursor: Optional[str] = None, fmt: str = "int", base: int = 0,
              shared: bool = False) -> None:
        """Take the lowest clear bit in lo..hi (or ``want``), bound to ``name``.

        ``cursor`` makes it next-fit (start after the previous allocation,
        wrapping), ``shared`` accepts a wanted bit that is already set (an
        address reserved earlier by the IPAM call for the same endpoint).
        """
        a: Dict[str, Any] = {"t": "bit", "name": name, "b": bitmap, "lo": lo, "hi": hi,
                             "full": full, "taken": taken, "fmt": fmt, "base": base}
        if want is not None:
            a["want"] = int(want)
        if cursor:
            a["cursor"] = cursor
        if shared:
            a["shared"] = True
        self._allocs.append(a)

    def alloc_v6(self, name: str, hashkey: str, groups: List[int], max_host: int, *,
                 want: Optional[int] = None, full: str = "allocation failed",
                 taken: str = "{} is not available", shared: bool = False) -> None:
        """Take the next free IPv6 host id after the last one (wrapping), like Contiv."""
        a: Dict[str, Any] = {"t": "v6", "name": name, "h": hashkey, "groups": list(groups),
                             "max": max_host, "full": full, "taken": taken, "fmt": "ip6"}
        if want is not None:
            a["want"] = int(want)
        if shared:
            a["shared"] = True
        self._allocs.append(a)

    # -- writes -----------------------------------------------------------
    def put(self, kind: str, key: str, value: Any, *, subs: bool = False,
            answer: bool = False) -> None:
        """Write a record (dict → JSON); ``subs`` fills ``$$name$$`` placeholders;
        ``answer``: the commit's result carries the text written
        (:attr:`TxnResult.written`), so the caller need not read it back."""
        raw = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"),
                                                              allow_nan=False)
        op = {"t": "put", "k": kind, "h": hash_of(kind), "f": key, "vi": self._value(raw)}
        if subs:
            op["subs"] = True
        if answer:
            op["ret"] = True
        self._ops.append(op)

    def delete(self, kind: str, key: str) -> None:
        self._ops.append({"t": "del", "k": kind, "h": hash_of(kind), "f": key})

    def incr_field(self, kind: str, key: str, field: str, by: int) -> None:
        """Add ``by`` to a numeric field of a record of scalars, server-side.

        Server-side so that concurrent endpoint creations in one network do
        not conflict on the network's counter.  Only for records whose values
        are all scalars (Redis' cjson cannot tell ``[]`` from ``{}``).
        """
        self._ops.append({"t": "jincr", "k": kind, "h": hash_of(kind), "f": key,
                          "field": field, "by": by})

    def link(self, kind: str, key: str, set_name: str, member_key: str,
             link: Optional[Tuple[str, str]]) -> bool:
        """Add (``link`` = (type, key)) or remove (None) one member of the
        link-set ``set_name`` of record ``kind[key]``, server-side; nothing
        if the record is absent (as a read-edit-write of an absent parent).

        False (and nothing added) when the names cannot be spliced (see
        :mod:`contiv_sdn.store.links`): the caller edits the record itself.
        A record may not also be put or deleted by the same transaction.
        """
        mk = L.key_text(member_key)
        if mk is None or not L.SET_NAME.fullmatch(set_name):
            return False
        op: Dict[str, Any] = {"t": "link", "k": kind, "h": hash_of(kind), "f": key,
                              "s": set_name, "mk": mk}
        if link is not None:
            value = L.link_text(*link)
            if value is None:
                return False
            op["vi"] = self._value(value)
        self._ops.append(op)
        return True

    def setbit(self, bitmap: str, pos: int, value: int) -> None:
        self._ops.append({"t": "setbit", "b": bitmap, "pos": int(pos), "v": 1 if value else 0})

    def setrange(self, bitmap: str, lo: int, hi: int, value: int) -> None:
        self._ops.append({"t": "setrange", "b": bitmap, "lo": int(lo), "hi": int(hi),
                          "v": 1 if value else 0})

    def raw_set(self, hashkey: str, field: str, value: str, *, subs: bool = False) -> None:
        """Set a field of a non-record hash (an index); ``subs`` fills field and value."""
        op = {"t": "rset", "h": hashkey, "f": field, "vi": self._value(value)}
        if subs:
            op["subs"] = True
        self._ops.append(op)

    def raw_del(self, hashkey: str, field: str) -> None:
        self._ops.append({"t": "rdel", "h": hashkey, "f": field})

    def delete_key(self, key: str) -> None:
        self._ops.append({"t": "delkey", "key": key})

    def kinds_written(self) -> List[str]:
        """The kinds whose records this transaction writes, in first-write order."""
        seen: Dict[str, None] = {}
        for op in self._ops:
            if "k" in op:
                seen.setdefault(op["k"], None)
        return list(seen)

    def empty(self) -> bool:
        return not (self._allocs or self._ops)

    def apply_to(self, kind: str, items: Dict[str, dict]) -> bool:
        """Replay this (committed) transaction's writes of ``kind`` on ``items``.

        For the store's cache of whole kinds, so that our own commit does not
        cost the next read of the kind a full re-read.  Returns False when some
        write of ``kind`` is only known to Redis (placeholders filled with
        allocations, server-side increments): ``items`` is then not what Redis
        holds and the caller must drop it.
        """
        writes = self.raw_writes(kind)
        if writes is None:
            return False
        for key, raw in writes:
            if raw is None:
                items.pop(key, None)
            else:
                items[key] = json.loads(raw)
        return True

    def raw_writes(self, kind: str, current: Optional[Callable[[str], Optional[str]]] = None
                   ) -> Optional[List[Tuple[str, Optional[str]]]]:
        """This transaction's writes of ``kind`` as (key, JSON text or None
        for a delete), in order; None when some write of ``kind`` is only
        known to Redis (see :meth:`apply_to`).  Link edits are worked out
        on ``current(key)`` (the record's text before the transaction; None
        = absent) the way the script did (:func:`contiv_sdn.store.links.splice`);
        without ``current`` they too are only known to Redis."""
        out: List[Tuple[str, Optional[str]]] = []
        texts: Dict[str, Optional[str]] = {}
        for op in self._ops:
            if op.get("k") != kind:
                continue
            if op["t"] == "put" and not op.get("subs"):
                out.append((op["f"], self._values[op["vi"] - 2]))
            elif op["t"] == "del":
                out.append((op["f"], None))
            elif op["t"] == "link" and current is not None:
                key = op["f"]
                text = texts[key] if key in texts else current(key)
                if text is None:
                    continue  # the script leaves an absent record alone
                value = self._values[op["vi"] - 2] if "vi" in op else None
                edited = L.splice(text, op["s"], op["mk"], value)
                if edited is L.SLOW:
                    return None  # the script would have refused: not committed this way
                if isinstance(edited, str):
                    texts[key] = edited
                    out.append((key, edited))
            else:
                return None
        return out

    def argv(self) -> List[str]:
        """The ``ARGV`` of the APPLY script: the program, then the record values."""
        # allow_nan=False: a NaN key or number is a bug upstream; refuse before Redis
        program = json.dumps({"guards": self._guards, "checks": self._checks,
                              "allocs": self._allocs, "ops": self._ops},
                             separators=(",", ":"), allow_nan=False)
        return [program] + self._values


class View:
    """Reads for one transaction attempt, each recorded as a guard.

    With ``speculate`` (the first attempt of :func:`transact`), intent
    objects (``obj:*`` kinds, written only through transactions) are read
    from the store's cache of whole kinds without a round trip to Redis:
    the guard records exactly what was read, so a commit on a stale cache
    is a :class:`Conflict` like any other and the retry reads Redis.  An
    answer that commits nothing (a refusal, a no-op) is checked by
    :meth:`current` before it is given.
    """

    def __init__(self, store: "Store", speculate: bool = False, server_links: bool = True):
        self.store = store
        self.txn = Txn()
        #: whether link-set edits may be left to the script (Txn.link); off
        #: after the script could not prove one (LinksNeedRead)
        self.server_links = server_links
        self._lists: Dict[str, Dict[str, dict]] = {}
        self.speculate = speculate
        #: kind -> cached version, for every kind read from the cache
        self.speculated: Dict[str, int] = {}
        #: whether this attempt holds transact's ``serialize`` lock
        self.holding = False
        #: the guards of records presumed absent without a read (:meth:`presume_absent`),
        #: as the script names a failed guard ("hash field")
        self.presumed: set = set()

    async def _cached(self, kind: str) -> "Optional[CachedKind]":
        """The cached intent kind (loaded once if absent), or None."""
        if not (self.speculate and kind.startswith("obj:")):
            return None
        cached = self.store.cached_kind(kind)
        if cached is None:
            await self.store.list_versioned(kind)
            cached = self.store.cached_kind(kind)
            if cached is None:
                return None
        self.speculated.setdefault(kind, cached.ver)
        if self.speculated[kind] != cached.ver:
            # our own commit moved the cache during this attempt: only Redis knows
            raise Conflict(f"kind {kind} moved during the attempt")
        return cached

    async def get(self, kind: str, key: str) -> Optional[dict]:
        """Read a record (a private copy); the commit fails with Conflict if it changes meanwhile."""
        if kind in self._lists:
            found = self._lists[kind].get(key)
            return copy.deepcopy(found) if found is not None else None
        cached = await self._cached(kind)
        if cached is not None:
            raw = cached.raw(key)
        else:
            raw = await self.store.get_raw(kind, key)
        self.txn.guard_eq(kind, key, raw)
        return None if raw is None else json.loads(raw)

    async def presume_absent(self, kind: str, key: str) -> Optional[dict]:
        """:meth:`get` for a record that is almost always absent (a create's own
        record, there only when the create is retried): the first attempt reads
        nothing and guards that it is absent; a record that is there fails the
        commit, and the retry reads it.  One round trip to Redis less per create."""
        if not self.speculate or kind in self._lists:
            return await self.get(kind, key)
        self.txn.guard_exists(kind, key, False)
        self.presumed.add(f"{hash_of(kind)} {key}")
        return None

    async def exists(self, kind: str, key: str) -> bool:
        """Whether a record is there, guarded only on that (not on its content),
        without parsing it: for a parent whose children are linked server-side."""
        if kind in self._lists:
            found = key in self._lists[kind]
        else:
            cached = await self._cached(kind)
            if cached is not None:
                found = cached.has(key)
            else:
                found = await self.store.exists(kind, key)
        self.txn.guard_exists(kind, key, found)
        return found

    async def peek(self, kind: str, key: str) -> Optional[dict]:
        """Read without a guard: for data that cannot change under us."""
        if kind in self._lists:
            found = self._lists[kind].get(key)
            return copy.deepcopy(found) if found is not None else None
        return await self.store.get(kind, key)

    async def list(self, kind: str) -> Dict[str, dict]:
        """Read a whole kind; any change to that kind fails the commit."""
        if kind not in self._lists:
            cached = await self._cached(kind)
            if cached is not None:
                ver, items = cached.ver, cached.records()
            else:
                ver, items = await self.store.list_versioned(kind)
            self.txn.guard_ver(kind, ver)
            self._lists[kind] = items
        return self._lists[kind]

    async def derived(self, kind: str, name: str, build: Callable[[Dict[str, dict]], Any],
                      update: Callable[[Any, List[str], Dict[str, dict]], Any]) -> Any:
        """A value derived from the whole kind as this view lists it (see
        ``CachedKind.derived``), guarded like :meth:`list`; built afresh when
        the kind was not read from the cache."""
        items = await self.list(kind)
        cached = self.store.cached_kind(kind) if kind in self.speculated else None
        if cached is not None and cached.ver == self.speculated[kind]:
            return cached.derived(name, build, update)
        return build(items)

    async def current(self) -> bool:
        """Whether every kind read from the cache is still at the version read
        (one round trip; true at once when nothing was read from the cache)."""
        if not self.speculated:
            return True
        kinds = sorted(self.speculated)
        vers = await self.store.kind_versions(kinds)
        stale = [k for k in kinds if vers.get(k) != self.speculated[k]]
        for kind in stale:
            self.store.forget_kind(kind)
        return not stale


async def transact(store: "Store", fn: Callable[[View], Awaitable[Union[T, Finish[T]]]],
                   attempts: int = 400, serialize: Optional[defer.DeferredLock] = None) -> T:
    """Run ``fn(view)`` and commit what it built, retrying on Conflict.

    ``fn`` reads through the view, adds writes to ``view.txn`` and returns the
    answer; it may raise (a refusal) before anything is written.  An answer
    that depends on what the commit allocated is returned as a
    :class:`Finish`, whose ``then(result)`` becomes the answer after the
    commit.  A Finish with nothing to commit is a bug: there is no result.

    The first attempt reads intent objects from the store's cache (see
    :class:`View`), so a warm transaction costs Redis one call (the commit);
    after a conflict the attempts read Redis.

    ``serialize``: a lock held while an attempt reads and builds its program,
    released once the commit is *sent* — not when Redis answers — so that
    transactions of one process that would conflict with each other run one
    after the other without each waiting out the previous one's round trip
    (the store's cache already holds the sent commit: see ``Store._predict``).
    """
    delay = 0.001
    speculate = True
    server_links = True
    for attempt in range(attempts):
        view = View(store, speculate=speculate, server_links=server_links)
        if serialize is not None:
            await serialize.acquire()
        try:
            outcome = await _attempt(store, fn, view, serialize)
        finally:
            if serialize is not None and serialize.locked and view.holding:
                serialize.release()
        if outcome is _RETRY_SPECULATE:
            speculate = False
        elif outcome is _RETRY_LINKS:
            server_links = False
        elif outcome is _RETRY_BACKOFF:
            speculate = False
            await task.deferLater(reactor, random.uniform(0, delay), lambda: None)
            delay = min(delay * 2, 0.05)
        else:
            return outcome.value
    raise StoreError("too much contention, try again")


class _Done:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_RETRY_SPECULATE, _RETRY_LINKS, _RETRY_BACKOFF = object(), object(), object()


async def _attempt(store: "Store", fn: Callable[[View], Awaitable[Any]], view: View,
                   serialize: Optional[defer.DeferredLock]) -> Any:
    """One attempt of :func:`transact`: a :class:`_Done` or what to retry."""
    view.holding = serialize is not None
    speculate = view.speculate
    try:
        value = await fn(view)
    except LinksNeedRead:
        return _RETRY_LINKS
    except Conflict:
        return _RETRY_SPECULATE  # the cache moved under the attempt: read Redis
    except Exception:
        # a refusal read from the cache must hold for what Redis holds, and one made
        # on a presumption (View.presume_absent) is made again on what Redis holds
        if view.presumed or (view.speculated and not await view.current()):
            return _RETRY_SPECULATE
        raise
    if view.txn.empty():
        if isinstance(value, Finish):
            raise TypeError("a transaction that writes nothing has no result to finish")
        if view.presumed or (view.speculated and not await view.current()):
            return _RETRY_SPECULATE
        return _Done(value)
    sent = defer.ensureDeferred(store.apply(view.txn))  # sent before this returns
    if view.holding:
        view.holding = False
        assert serialize is not None
        serialize.release()
    try:
        result = await sent
    except LinksNeedRead:
        return _RETRY_LINKS  # nothing was written: redo it reading the parents
    except Conflict as err:
        if str(err) not in view.presumed:  # (a presumption failed: the cache may be right)
            for kind in view.speculated:
                store.forget_kind(kind)
        if speculate:
            return _RETRY_SPECULATE  # a stale cache is not contention: retry at once
        return _RETRY_BACKOFF
    return _Done(value.then(result) if isinstance(value, Finish) else value)

