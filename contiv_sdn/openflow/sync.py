"""Bring one switch's flows to a desired set, sending only the difference, atomically.

``FlowSync`` keeps what it believes the switch holds (only flows carrying our
cookie mark; foreign flows are invisible to it and never touched).  The
belief starts *unknown*: the first converge after a (re)connect reads the
switch's flows by cookie mask instead of flushing them, so flows that are
already right stay in place and keep counting.

Diff, keyed by :attr:`Flow.identity` (table, priority, match):

* missing -> ADD;
* same identity, other actions/goto -> MODIFY_STRICT (OVS keeps counters and
  duration); other cookie -> ADD, because an OpenFlow 1.3 MODIFY never changes
  a cookie, while an ADD over an existing entry replaces it and OVS carries
  the counters over;
* extra -> DELETE_STRICT, limited to our cookie mark.

Everything goes into ONE bundle (deletes, then modifies, then adds), and the
belief changes only after the commit succeeded; after a failure the next
converge re-reads the switch.  Concurrent calls coalesce: while one bundle is
in flight, later calls wait and the newest desired set wins; there are never
two bundles interleaved on one switch.

Chunking: none.  OVS (3.1) has no limit on the number of messages in a bundle
(``ovs-ofctl --bundle`` sends whole files as one), each bundle_add is a
separate message well below 64 KiB, and its bundle idle timeout (10 s) is
reset by every message, so one bundle per converge is always possible.  We do
write the bundle in batches of ``batch`` messages and give the reactor a turn
between them, so encoding overlaps with OVS processing and other
connections are served meanwhile.

One FlowSync belongs to one connection: make a new one in
``on_switch_up`` (a reconnect is a new connection, whose first converge reads
the switch again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from contiv_sdn.openflow import codec
from contiv_sdn.openflow.protocol import SwitchDisconnected
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK, Flow

log = Logger()


@dataclass(frozen=True)
class SyncResult:
    added: int = 0
    modified: int = 0
    deleted: int = 0

    @property
    def changed(self) -> int:
        return self.added + self.modified + self.deleted


class FlowSync:
    def __init__(self, switch: Any, cookie: int = COOKIE_MARK, cookie_mask: int = COOKIE_MASK,
                 batch: int = 500, clock: Any = None):
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.switch = switch
        self.cookie = cookie
        self.cookie_mask = cookie_mask
        self.batch = batch
        self.clock = clock
        #: identity -> Flow the switch holds (our cookie only); None = unknown, read first.
        self.installed: Optional[Dict[Tuple, Flow]] = None
        self._wanted: Optional[FrozenSet[Flow]] = None
        self._waiters: List[Deferred] = []
        self._running = False
        self.bundles_sent = 0
        self.reads = 0

    def invalidate(self) -> None:
        """Forget the belief: the next converge reads the switch again."""
        self.installed = None

    async def converge(self, desired: Iterable[Flow]) -> SyncResult:
        """Make the switch hold exactly ``desired`` (among flows with our cookie).

        ``desired`` is read when its pass runs, not when called: pass something
        nobody mutates afterwards (a frozenset or tuple is kept as is; anything
        else is copied into a tuple).
        """
        d: Deferred = Deferred()
        self._wanted = desired if isinstance(desired, (frozenset, tuple)) else tuple(desired)
        self._waiters.append(d)
        if not self._running:
            self._running = True
            Deferred.fromCoroutine(self._drain())
        return await d

    async def _drain(self) -> None:
        try:
            while self._waiters:
                desired, waiters = self._wanted, self._waiters
                self._waiters = []
                try:
                    result = await self._once(desired)
                except Exception as e:
                    for w in waiters:
                        w.errback(e)
                else:
                    for w in waiters:
                        w.callback(result)
        finally:
            self._running = False

    async def _once(self, desired: Iterable[Flow]) -> SyncResult:
        sw = self.switch
        if not sw.connected:
            raise SwitchDisconnected(f"{sw!r} is not connected")
        if self.installed is None:
            flows = await sw.read_flows(self.cookie, self.cookie_mask)
            self.reads += 1
            self.installed = {f.identity: f for f in flows}
            log.debug("{sw}: read {n} flows with our cookie", sw=sw, n=len(flows))
        if not self.installed:
            return await self._push_all(desired)
        installed = self.installed
        want = _by_identity(desired, self.cookie, self.cookie_mask)
        deletes = [f for ident, f in installed.items() if ident not in want]
        modifies: List[Tuple[Flow, int]] = []
        adds: List[Flow] = []
        for ident, f in want.items():
            have = installed.get(ident)
            if have is None:
                adds.append(f)
            elif have != f:
                modifies.append((f, codec.MODIFY_STRICT if have.cookie == f.cookie else codec.ADD))
        if not (deletes or modifies or adds):
            return SyncResult()
        work: List[Tuple[Flow, int]] = [(f, codec.DELETE_STRICT) for f in deletes]
        work += modifies
        work += [(f, codec.ADD) for f in adds]
        await self._send(work)
        self.installed = want
        result = SyncResult(added=len(adds), modified=len(modifies), deleted=len(deletes))
        log.info("{sw}: converged +{r.added} ~{r.modified} -{r.deleted}", sw=sw, r=result)
        return result

    async def _push_all(self, desired: Iterable[Flow]) -> SyncResult:
        """The switch holds none of our flows (first push): stream ADDs while checking identities.

        One pass, no diff to build first: encoding starts at once and overlaps
        with the switch working through the earlier messages.
        """
        want: Dict[Tuple, Flow] = {}
        it = iter(desired)
        mask, mark = self.cookie_mask, self.cookie

        def adds():
            for f in it:
                if f.cookie & mask != mark:
                    raise ValueError(_foreign(f, mark, mask))
                ident = f.identity
                prev = want.setdefault(ident, f)
                if prev is not f:
                    if prev != f:
                        raise ValueError(f"two desired flows with the same identity: {prev} / {f}")
                    continue
                yield f, codec.ADD
        await self._send(adds(), lazy=True)
        self.installed = want
        if not want:
            return SyncResult()
        result = SyncResult(added=len(want))
        log.info("{sw}: converged +{r.added} ~0 -0 (first push)", sw=self.switch, r=result)
        return result

    async def _send(self, work: Iterable[Tuple[Flow, int]], lazy: bool = False) -> None:
        """Everything in one bundle, written in batches; the belief is reset on any failure."""
        sw = self.switch
        bundle = None
        try:
            it = iter(work)
            encode = codec.encode_flow_mod
            next_xid = sw.next_xid
            batch = self.batch
            while True:
                n = 0
                for f, cmd in it:
                    if bundle is None:
                        bundle = sw.bundle()
                        add = bundle.add_encoded
                    xid = next_xid()
                    add(xid, encode(f, cmd, xid), f)
                    n += 1
                    if n == batch:
                        break
                if bundle is None:
                    return  # nothing to send (lazy work turned out empty)
                bundle.flush()
                if n < batch:
                    break
                await deferLater(self.clock, 0, lambda: None)
                if not sw.connected:
                    raise SwitchDisconnected(f"{sw!r} disconnected while sending a bundle")
            await bundle.commit()
        except BaseException:
            self.installed = None
            if bundle is not None and not bundle.closed and sw.connected:
                await bundle.discard()
            raise
        self.bundles_sent += 1


def _foreign(f: Flow, mark: int, mask: int) -> str:
    # such a flow would be installed but never read back (reads filter by cookie),
    # so it could never be corrected or removed: refuse it
    return f"flow without our cookie mark ({mark:#x}/{mask:#x}): {f.to_ofctl()}"


def _by_identity(desired: Iterable[Flow], mark: int, mask: int) -> Dict[Tuple, Flow]:
    want: Dict[Tuple, Flow] = {}
    for f in desired:
        if f.cookie & mask != mark:
            raise ValueError(_foreign(f, mark, mask))
        prev = want.setdefault(f.identity, f)
        if prev is not f and prev != f:
            raise ValueError(f"two desired flows with the same identity: {prev} / {f}")
    return want
