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

Deltas: :meth:`FlowSync.apply` takes only what changed (``identity -> Flow``,
``None`` to delete), as the incremental compiler produces it, and diffs just
those entries against the belief: a change of 3 flows costs 3 look-ups, not a
scan of the 30k the switch holds.  When the belief is unknown (first pass after
a connect, after a failed bundle, after an audit found a discrepancy) a delta
cannot be applied: the pass asks the caller's ``full`` callable for the whole
desired set (evaluated then, so it is the newest) and converges to it.
:meth:`FlowSync.converge` with a full set stays for (re)connects and tests.

Cheap audit: :meth:`FlowSync.audit` asks the switch how many of our flows it
holds (OFPMP_AGGREGATE, 24 bytes) and compares with the belief; only a
mismatch costs a full read, at the next pass.  A full check requested by the
caller (in rotation) reads the flows and compares them with the belief while
passes go on (:meth:`FlowSync.check`); only a difference costs the read-back.

Count first on a new connection: the first pass asks the switch for flow counts
(OFPMP_AGGREGATE, all asked at once): all of our flows, each cookie kind of the
desired set (bits 32..47 of the cookie: base, network, endpoint, group,
Kubernetes, service), and the flows matching ``in_port=P`` for every port P the
desired set matches on.  When every count agrees with the desired set, the belief
*becomes* the desired set and nothing is read or sent (a reconnect storm of 500
switches × 30k flows reads 15M flows otherwise).  The ``in_port`` counts make a
port renumbered while nobody was connected (a re-plugged veth, a recreated
tunnel port) a disagreement: every port the pipeline uses has flows matching
it.  A count cannot see a flow modified in place, or one replaced by another of
the same kind and port (a remote host's VTEP address changed while no
netmaster ran): the belief is marked unverified (:attr:`FlowSync.verified`) and
the controller reads such switches back in full soon after, one at a time
(:meth:`FlowSync.verify`), repairing them then.  Where a count disagrees, the
switch is read back in full at once.  A pass after our own failure (a refused
bundle), after an audit mismatch, a full audit check or a verification never
takes the count shortcut: there the desired set may differ from what the switch
holds by more than a count shows.

Groups (service load balancing, ``pipeline/servicelb.py``): a pass may also bring
the switch's OpenFlow groups to a desired set (``groups``, a callable evaluated at
the pass, like ``full``).  OVS 3.1 refuses group_mod inside an ONF bundle, so a
group ADD or MODIFY is sent on its own and confirmed by a barrier *before* the
flow bundle (a flow may only point at a group that exists), and a DELETE only
*after* it committed (OVS deletes the flows pointing at a group with it; ours
are gone by then).  The groups' belief starts unknown too: the first pass reads
them back (``group_desc``) and sends nothing for groups that are right, so a
netmaster restart re-sends nothing.  Only our groups are considered
(``servicelb.is_ours``: select groups of our DNAT buckets marked with their own
id); a group another tool put on br-int is never touched.  A MODIFY replaces a
group's buckets in place: established connections follow conntrack, not the
group, so they are not disturbed.  The audit compares the read-back groups with
the belief too.  A pass looks at the groups only when the caller says they
changed (an :meth:`FlowSync.apply` with ``groups``), when their belief is
unknown, or after a pass that failed: building and diffing the desired groups of
every switch at every endpoint change was a few per cent of a change's CPU, for
nothing where no service changed.

Held back while not MASTER (:meth:`FlowSync.hold`): with several netmasters (or
a lone one whose lease lapsed under load) the controller may not write while it
is SLAVE, yet the compiler keeps producing deltas.  If the same netmaster becomes
MASTER again with nobody else in between (``Lease.continued``), the switch still
holds exactly what we believe, so instead of forgetting the belief (a full read
of every switch: the storm a busy netmaster would cause itself at each lapse)
the skipped deltas are merged here (the later value of an identity wins) and
sent with the next delta.  Chosen over recomputing the delta from the engine's
whole desired set against the belief: that costs a diff of every flow of every
switch (15M at 500 switches x 30k) where a lapse of a few hundred ms holds a
handful of entries.  Bounded: past :attr:`FlowSync.HOLD_MIN` entries and the
size of the belief, the held entries give way to a full diff of the desired set
against the belief (``flows(host)`` and a diff cost about as much as that many
entries; below it, sending the held entries is the cheaper path, and they only
refer to the engine's flow objects).  The belief is kept: with nobody in between
the switch still holds it.  Dropping it instead (the earlier rule) made
one lapse during a 1000x20k fill, where every switch had more changes held than
flows installed, a read-back of all 1000 switches.  At 500x10k a fill compiles
~3k changed flows per switch in one run while the switches hold ~5-10k: a bound
of a quarter of the belief turned every lapse into 500 read-backs.  A pass refused locally with
:class:`NotMaster` (demoted between the controller's check and the pass) sent
nothing that the switch applied (an open bundle is discarded, never committed):
its work is held the same way and the belief kept.  A full pass so refused is
held as "diff the whole desired set against the belief" (no read).  If another
netmaster held the lease meanwhile, the controller calls :meth:`invalidate`:
everything is read back as on any takeover.

A belief that follows the engine (:class:`Following`): a switch that holds what
the controller's engine desires for it needs no map of its own.  Once a pass has
brought it to the desired set taken from the engine (``full()``), the belief is
"what the engine desires now, except ``diff``": the engine tells the sync, just
before a pass first changes a flow of that switch, what it was
(:meth:`FlowSync.changing`), and the sync keeps it in ``diff`` until the delta is
sent; it forgets it when what it sent is what the engine desires.  Before the
engine forgets what a switch had (built again from empty...), the belief is
copied out of it (:meth:`FlowSync.stop_following`).  Why: the belief was an
identity -> flow map per switch, 10M entries at 500 switches × 20k flows (29 KiB
per endpoint); the engine already keeps those flows, shared between switches.

One FlowSync belongs to one connection: the switch registry makes a new one
for each connection (a reconnect is a new connection, whose first pass reads
the switch again).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Cooperator
from twisted.logger import Logger

from contiv_sdn.openflow import codec
from contiv_sdn.openflow.protocol import NotMaster, OpenFlowError, SwitchDisconnected
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK, Flow
from contiv_sdn.pipeline.servicelb import Group, is_ours

log = Logger()


class Following:
    """A belief kept as the engine's desired flows for the switch except ``diff``
    (identity -> the flow the switch holds there instead, None: none); see the
    module doc.  ``view`` gives the engine's side: ``flow_at(identity)`` and
    ``table()`` (identity -> flow, each once; None when the engine has nothing).
    Reads and writes are those of a dict; ``items()`` builds one."""

    __slots__ = ("view", "diff", "_n")

    def __init__(self, view: Any, n: int) -> None:
        self.view = view
        self.diff: Dict[Tuple, Optional[Flow]] = {}
        self._n = n  # how many flows the switch holds (followed as they are written)

    def note(self, ident: Tuple, old: Optional[Flow]) -> None:
        """The engine is about to change what it desires at ``ident`` (now ``old``)."""
        if ident not in self.diff:
            self.diff[ident] = old

    def settled(self, idents: Iterable[Tuple]) -> None:
        """The engine ended a pass desiring at ``idents`` what it desired before: an
        entry kept for one that is what the engine desires is no longer a difference."""
        diff, flow_at = self.diff, self.view.flow_at
        if not diff:
            return
        for ident in idents:
            if ident in diff:
                v, now = diff[ident], flow_at(ident)
                if v is now or v == now:
                    del diff[ident]
        if not diff:
            self.diff = {}  # (see _drop)

    def _drop(self, ident: Tuple) -> None:
        """No difference at ``ident`` any more.  A dict never gives back the table it
        grew to, so an emptied ``diff`` is replaced: at 200x4k the diffs a fill had
        grown and emptied held 28 MiB (7 KiB per endpoint), for nothing."""
        diff = self.diff
        if ident in diff:
            del diff[ident]
            if not diff:
                self.diff = {}

    def get(self, ident: Tuple, default: Any = None) -> Any:
        diff = self.diff
        if ident in diff:
            v = diff[ident]
        else:
            v = self.view.flow_at(ident)
        return default if v is None else v

    def __getitem__(self, ident: Tuple) -> Flow:
        v = self.get(ident)
        if v is None:
            raise KeyError(ident)
        return v

    def __contains__(self, ident: object) -> bool:
        return self.get(ident) is not None

    def __setitem__(self, ident: Tuple, f: Flow) -> None:
        if self.get(ident) is None:
            self._n += 1
        now = self.view.flow_at(ident)
        if now is f or now == f:
            self._drop(ident)
        else:
            self.diff[ident] = f

    def pop(self, ident: Tuple, default: Any = None) -> Any:
        old = self.get(ident)
        if old is None:
            return default
        self._n -= 1
        if self.view.flow_at(ident) is None:
            self._drop(ident)
        else:
            self.diff[ident] = None
        return old

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def table(self) -> Dict[Tuple, Flow]:
        out = dict(self.view.table() or {})
        for ident, v in self.diff.items():
            if v is None:
                out.pop(ident, None)
            else:
                out[ident] = v
        return out

    def items(self) -> Any:
        return self.table().items()

    def __iter__(self) -> Any:
        return iter(self.table())


@dataclass(frozen=True)
class SyncResult:
    added: int = 0
    modified: int = 0
    deleted: int = 0
    #: group_mods sent (ADD, MODIFY and DELETE)
    groups: int = 0

    @property
    def changed(self) -> int:
        return self.added + self.modified + self.deleted


class FlowSync:
    def __init__(self, switch: Any, cookie: int = COOKIE_MARK, cookie_mask: int = COOKIE_MASK,
                 batch: int = 500, clock: Any = None, follow: Optional[Callable[[], Any]] = None):
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.switch = switch
        self.cookie = cookie
        self.cookie_mask = cookie_mask
        self.batch = batch
        self.clock = clock
        #: identity -> Flow the switch holds (our cookie only); None = unknown, read first.
        #: A dict, or a :class:`Following` once a pass brought the switch to ``full()``
        self.installed: Optional[Dict[Tuple, Flow]] = None
        #: gives a view of the engine's desired flows for this switch (see
        #: :class:`Following`), or None: the belief is then a dict of its own
        self.follow = follow
        #: the belief a pass in flight will leave if it succeeds, following the engine
        #: from the moment its desired set was taken
        self._pending: Optional[Following] = None
        #: the pending full set (or the callable that gives it), None when only a delta is pending
        self._wanted: Union[None, FrozenSet[Flow], Tuple[Flow, ...], Callable[[], Any]] = None
        #: the pending delta (identity -> Flow, None = delete), merged across calls
        self._delta: Dict[Tuple, Optional[Flow]] = {}
        #: how to get the whole desired set when a delta cannot be applied
        self._full: Optional[Callable[[], Any]] = None
        self._waiters: List[Deferred] = []
        self._running = False
        self.bundles_sent = 0
        #: bundles that failed (refused by the switch, or the switch went away)
        self.bundles_failed = 0
        #: audits that found the switch holding a different number of our flows
        self.audit_repairs = 0
        self.reads = 0
        #: group id -> Group the switch holds (ours only); None = unknown, read first
        self.groups_installed: Optional[Dict[int, Group]] = None
        #: gives the desired groups at each pass (None from it: leave the groups alone)
        self._groups: Optional[Callable[[], Optional[Iterable[Group]]]] = None
        #: the next pass brings the groups to ``_groups()`` (else only when their
        #: belief is unknown): set by a caller's ``groups``, kept after a failed pass
        self._groups_due = True
        self.group_mods_sent = 0
        #: take the count-first shortcut when the belief is unknown (see the module doc)
        self.count_first = True
        #: False while the belief was adopted from matching counts and not yet read back
        self.verified = True
        #: first passes settled by matching counts (no read), for tests and tools
        self.count_adoptions = 0
        #: the next pass with an unknown belief reads the switch in full (no count shortcut)
        self._must_read = False
        #: deltas held back while we may not write (:meth:`hold`), merged
        self._held: Dict[Tuple, Optional[Flow]] = {}
        #: held back: a full diff against the belief, and the groups
        self._held_full = False
        self._held_groups = False
        #: while :meth:`check` reads: the identities passes sent meanwhile
        self._touched: Optional[set] = None
        #: a bundle is being written or awaits its commit (:meth:`_send`)
        self._sending = False
        #: gives the counts of what ``_full`` gives (see :meth:`apply`), and those counts
        #: for the pass about to run
        self._counts: Optional[Callable[[], Any]] = None
        self._desired_counts: Optional[Tuple[Mapping[int, int], Mapping[int, int]]] = None

    @property
    def busy(self) -> bool:
        """A pass is in flight or queued."""
        return self._running

    #: the fewest held-back entries that may drop the belief (see :meth:`hold`)
    HOLD_MIN = 4096

    @property
    def held_back(self) -> bool:
        """Work was held back while we could not write (:meth:`hold`): the next
        :meth:`apply` sends it, even with an empty delta."""
        return bool(self._held) or self._held_full or self._held_groups

    def hold(self, delta: Optional[Mapping[Tuple, Optional[Flow]]] = None, full: bool = False,
             groups: bool = False) -> None:
        """Keep work that may not be sent now (we are not MASTER of the switch) for a
        return as MASTER with nobody else in between (see the module doc).

        ``delta``: entries as for :meth:`apply`; ``full``: the whole desired set must be
        diffed against the belief; ``groups``: the desired groups changed.  Nothing is
        kept while the belief is unknown (its next pass reads the switch anyway), and
        once the held entries exceed :attr:`HOLD_MIN` and the belief's size they are
        replaced by a full diff against the belief (still no read of the switch)."""
        if self.installed is None:
            return
        self._held_groups = self._held_groups or groups
        if full:
            self._held_full = True
            self._held = {}
        elif delta and not self._held_full:
            self._held = _merged(self._held, delta)
            if len(self._held) > max(self.HOLD_MIN, len(self.installed)):
                log.debug("{sw}: {n} flow changes held back while not MASTER: a full diff "
                          "against the belief instead", sw=self.switch, n=len(self._held))
                self._held_full, self._held = True, {}

    def changing(self, ident: Tuple, old: Optional[Flow]) -> None:
        """The engine is about to change the flow it desires at ``ident`` (``old``)."""
        installed = self.installed
        if type(installed) is Following:
            installed.note(ident, old)
        if self._pending is not None:
            self._pending.note(ident, old)

    def settled(self, idents: List[Tuple]) -> None:
        """See :meth:`Following.settled`."""
        installed = self.installed
        if type(installed) is Following:
            installed.settled(idents)
        if self._pending is not None:
            self._pending.settled(idents)

    def stop_following(self) -> None:
        """The engine is about to forget what it desired for this switch: the belief
        becomes a dict of its own (and a pass in flight leaves one)."""
        if type(self.installed) is Following:
            self.installed = self.installed.table()
        self._pending = None

    def _begin_following(self, desired: Any) -> None:
        """``desired`` was just taken from the engine (``full()``): follow it from now.
        Taken in the middle of an engine pass, the identities the pass changed already
        are held apart at once: the engine is not told of them again in this pass, and
        their flow may still change in it (the delta then names them)."""
        self._pending = None
        if self.follow is not None and isinstance(desired, Mapping):
            view = self.follow()
            if view is not None:
                pending = self._pending = Following(view, len(desired))
                for ident in view.touched():
                    pending.diff[ident] = desired.get(ident)

    def _adopt(self, table: Dict[Tuple, Flow]) -> None:
        """The switch now holds ``table``, the desired set of this pass."""
        pending, self._pending = self._pending, None
        self.installed = pending if pending is not None else table

    def invalidate(self) -> None:
        """Forget the belief: the next converge reads the switch again."""
        self.installed = None
        self._pending = None
        self.groups_installed = None
        self._held = {}
        self._held_full = False
        self._held_groups = False

    async def converge(self, desired: Iterable[Flow],
                       groups: Optional[Callable[[], Optional[Iterable[Group]]]] = None) -> SyncResult:
        """Make the switch hold exactly ``desired`` (among flows with our cookie).

        ``desired`` is read when its pass runs, not when called: pass something
        nobody mutates afterwards (a frozenset or tuple is kept as is; anything
        else is copied into a tuple).
        """
        self._wanted = desired if isinstance(desired, (frozenset, tuple)) else tuple(desired)
        self._delta = {}
        if groups is not None:
            self._groups = groups
        self._groups_due = True
        return await self._enqueue()

    async def apply(self, delta: Mapping[Tuple, Optional[Flow]], full: Callable[[], Any],
                    groups: Optional[Callable[[], Optional[Iterable[Group]]]] = None,
                    counts: Optional[Callable[[], Optional[Tuple[Mapping[int, int], Mapping[int, int]]]]] = None
                    ) -> SyncResult:
        """Apply a delta (``identity -> Flow``, ``None`` = delete); ``full()`` gives the
        whole desired set when the belief is unknown (``None``: leave the switch alone) —
        flows, or a mapping ``identity -> Flow`` holding each identity once, which is
        taken as the belief without a duplicate check per flow;
        ``groups()`` the whole desired group set (see the module doc), read at the pass;
        pass it when the groups may have changed (``None``: they did not — the pass
        leaves them alone unless their belief is unknown or held-back work needs them);
        ``counts()`` the flow counts of what ``full()`` gives, as (cookie kind, bits
        32..47 -> flows; port -> flows matching ``in_port`` on it), asked in the same
        turn as ``full()``: a reconnect's count comparison then needs no walk over the
        desired flows (the engine keeps both counts as its flows change; the walk was
        a tenth of a 500-switch restart).

        Deltas queued while a bundle is in flight are merged (the later value of an
        identity wins) and sent together by the next pass.  A ``dict`` delta becomes
        the sync's own (later deltas are merged into it): the caller lets go of it.
        """
        self._full = full
        self._counts = counts
        if groups is not None:
            self._groups = groups
            self._groups_due = True
        if self._held_groups:
            self._groups_due = True
        self._held_groups = False  # the pass brings the groups to the desired set
        if self._held_full:
            self._held_full, self._held = False, {}
            if self._wanted is None:
                self._wanted = full  # diffed against the belief, which is known: no read
        elif self._held:
            held, self._held = self._held, {}
            held.update(delta)  # the newer value of an identity wins
            delta = held
        wanted = self._wanted
        if wanted is None:
            self._delta = _merged(self._delta, delta)
        elif not callable(wanted) and delta:  # a concrete full set is pending: fold the delta in
            table = {f.identity: f for f in wanted}
            for ident, f in delta.items():
                if f is None:
                    table.pop(ident, None)
                else:
                    table[ident] = f
            self._wanted = tuple(table.values())
        return await self._enqueue()

    def _enqueue(self) -> Deferred:
        d: Deferred = Deferred()
        self._waiters.append(d)
        if not self._running:
            self._running = True
            Deferred.fromCoroutine(self._drain())
        return d

    async def audit(self, full: bool = False, pause: Optional[Callable[[], Deferred]] = None) -> bool:
        """True if the switch holds as many of our flows as we believe; otherwise forget
        the belief so the next pass reads the switch back and repairs it.  With ``full``
        the flows are read back and compared one by one (:meth:`check`) instead of
        counted.  A switch with a pass in flight is not counted (its count is moving):
        True, and so is a full check that could not tell (it is done again at a later
        audit)."""
        if self._running:
            return True
        if self.installed is None:
            return False  # the next pass reads the switch anyway
        if full:
            same = await self.check(pause)
            if same is False:
                self.audit_repairs += 1
                return False
        else:
            expected = len(self.installed)
            count = await self.switch.flow_count(self.cookie, self.cookie_mask)
            if self._running or self.installed is None or len(self.installed) != expected:
                return True  # a pass started meanwhile: it will be counted next time
            if count != expected:
                log.warn("{sw}: holds {count} of our flows, {expected} expected; reading them back",
                         sw=self.switch, count=count, expected=expected)
                self.audit_repairs += 1
                self._must_read = True
                self.invalidate()
                return False
        believed = self.groups_installed
        if believed is not None and (believed or self._groups is not None):
            have = await self._read_groups()
            if self._running or self.groups_installed is not believed:
                return True
            if have != believed:
                log.warn("{sw}: holds {n} of our groups, {m} expected or different; reading them back",
                         sw=self.switch, n=len(have), m=len(believed))
                self.audit_repairs += 1
                self.invalidate()  # the flows too: a pass then runs for this switch
                return False
        return True

    async def check(self, pause: Optional[Callable[[], Deferred]] = None) -> Optional[bool]:
        """Read our flows back and compare them with the belief one by one, *without*
        holding up passes: True if they agree, False if not (the belief is then
        forgotten: the next pass reads the switch back and repairs it), None if this
        could not tell (a pass was in flight at the start, the belief was replaced
        meanwhile, another check runs): ask again later.

        Why not a pass of its own: a full read of 20k flows takes a few hundred ms of
        reactor and switch time, and a pass holds every delta for that switch behind
        it; the audit's full checks inside the controller's runs made every change
        that arrived meanwhile wait for them (the tail of the scale bench's latency).
        Passes go on during the read; the identities they send (:attr:`_touched`)
        are left out of the comparison, since the read may have seen them either way.
        The switch answers the flow-stats request after everything sent before it,
        and every flow sent after it is recorded, so the rest must agree exactly; the
        check starts only while no bundle is in flight (one committed after the
        switch answered the read would look like a difference).

        ``pause``: what to wait for between two slices of the decode and the
        comparison (default: the next turn shared by every sync); the controller lets
        its runs go first."""
        if self.installed is None or self._sending or self._touched is not None:
            return None  # (a bundle in flight may commit after the switch answers the read)
        if not self.switch.connected:
            raise SwitchDisconnected(f"{self.switch!r} is not connected")
        belief = self.installed
        touched: set = set()
        self._touched = touched
        try:
            raw = getattr(self.switch, "read_flows_raw", None)
            read: Dict[Tuple, Flow] = {}
            if raw is not None:
                async for chunk in self._paced(codec.flows_from_raw(await raw(self.cookie, self.cookie_mask),
                                                                    belief), pause):
                    for f in chunk:
                        read[f.identity] = f
            else:
                read = {f.identity: f for f in await self.switch.read_flows(self.cookie, self.cookie_mask)}
        finally:
            self._touched = None
        self.reads += 1
        if self.installed is not belief:
            return None  # replaced or forgotten meanwhile: its next pass decides
        # (a copy: passes may change it while the comparison yields)
        believed = belief.table() if type(belief) is Following else dict(belief)
        differ = 0
        async for chunk in self._paced(believed.items(), pause):
            for ident, f in chunk:
                if ident in touched:
                    continue
                have = read.pop(ident, None)
                if have is None or (have is not f and have != f):
                    differ += 1
                    if differ == 1:
                        log.warn("{sw}: holds {have} where we believe {f}; reading it back",
                                 sw=self.switch, have=have.to_ofctl() if have is not None else "nothing",
                                 f=f.to_ofctl())
        extra = [f for ident, f in read.items() if ident not in touched and ident not in believed]
        if extra:
            log.warn("{sw}: holds {n} flows of ours we do not believe it has (e.g. {f}); reading it back",
                     sw=self.switch, n=len(extra), f=extra[0].to_ofctl())
        if not (differ or extra):
            self.verified = True
            return True
        if self.installed is belief:
            self._must_read = True
            self.invalidate()
        return False

    def verify(self, pause: Optional[Callable[[], Deferred]] = None) -> Deferred:
        """Read the switch back in full (:meth:`check`, which holds up no pass) for a
        belief adopted from matching counts (:attr:`verified` False); if it differs,
        read it back and repair it at once, in a pass of its own.  Uses the ``full``
        callable of the last :meth:`apply`; without one, nothing to do.  A check that
        could not tell leaves :attr:`verified` False: the caller asks again later."""
        if self.installed is None or self._full is None:
            self.verified = True  # unknown: its next pass reads it anyway; no full: nothing to verify against
            d: Deferred = Deferred()
            d.callback(SyncResult())
            return d
        return Deferred.fromCoroutine(self._verify(pause))

    async def _verify(self, pause: Optional[Callable[[], Deferred]]) -> SyncResult:
        same = await self.check(pause)
        if same is not False:
            return SyncResult()
        return await self._enqueue()  # the belief is unknown: the pass reads and repairs

    async def _read_groups(self) -> Dict[int, Group]:
        """Our groups as the switch holds them (``servicelb.is_ours``)."""
        entries = await self.switch.group_desc()
        return {g.group_id: g for g in codec.groups_from_desc(entries) if is_ours(g)}

    async def _groups_before(self, desired: Iterable[Group]) -> Tuple[int, List[Group]]:
        """Send the group ADDs and MODIFYs ``desired`` needs, each confirmed, before the
        flows; (how many, the groups to DELETE after the flows)."""
        want = {g.group_id: g for g in desired}
        if self.groups_installed is None:
            try:
                self.groups_installed = await self._read_groups()
            except OpenFlowError as err:
                if want:
                    raise
                # a switch without groups (a simulated one) that needs none: nothing to do
                log.debug("{sw}: no group read-back ({err}); none wanted", sw=self.switch, err=err)
                self.groups_installed = {}
        have = self.groups_installed
        sends = []
        for gid in sorted(want):
            g, old = want[gid], have.get(gid)
            if old != g:
                sends.append((g, codec.GROUP_ADD if old is None else codec.GROUP_MODIFY))
        await self._send_groups(sends)
        return len(sends), [have[gid] for gid in sorted(have) if gid not in want]

    async def _send_groups(self, sends: List[Tuple[Group, int]]) -> None:
        """group_mods outside any bundle (OVS refuses them inside), all written at once
        and each confirmed by the barrier behind it; the belief follows what was
        confirmed, and is forgotten on any failure."""
        if not sends:
            return
        sw = self.switch
        try:
            waits = []
            for g, cmd in sends:
                xid = sw.next_xid()
                waits.append(sw.send_checked(codec.encode_group_mod(g, cmd, xid)))
            for d in waits:
                await d
        except BaseException:
            self.groups_installed = None
            raise
        have = self.groups_installed
        assert have is not None
        for g, cmd in sends:
            if cmd == codec.GROUP_DELETE:
                have.pop(g.group_id, None)
            else:
                have[g.group_id] = g
        self.group_mods_sent += len(sends)

    async def _drain(self) -> None:
        try:
            while self._waiters:
                waiters, self._waiters = self._waiters, []
                desired, delta = self._wanted, self._delta
                self._wanted, self._delta = None, {}
                try:
                    if desired is None and self.installed is None:
                        desired = self._full  # the belief is unknown: a delta cannot be applied
                    leave_alone = False
                    if callable(desired):
                        desired = desired()
                        self._begin_following(desired)
                        leave_alone = desired is None  # nothing to converge to: leave the switch alone
                        if self._counts is not None and isinstance(desired, Mapping):
                            self._desired_counts = self._counts()  # (the same turn: the same state)
                    if leave_alone:
                        result = SyncResult()
                    else:
                        result = await self._pass(desired, delta)
                except NotMaster as e:
                    # refused here, before the switch applied anything (see the module
                    # doc): the belief holds; keep the work for a return as MASTER
                    self._pending = None
                    if self.installed is not None:
                        self.hold(delta, full=desired is not None, groups=True)
                    for w in waiters:
                        w.errback(e)
                except Exception as e:
                    self.installed = None  # what was asked is lost: the next pass reads the switch
                    self._pending = None
                    self._must_read = True
                    for w in waiters:
                        w.errback(e)
                else:
                    for w in waiters:
                        w.callback(result)
        finally:
            self._running = False

    async def _pass(self, desired: Optional[Iterable[Flow]], delta: Mapping[Tuple, Optional[Flow]]) -> SyncResult:
        """One pass: groups to add or modify, then the flows (a full set or a delta),
        then groups to delete (see the module doc)."""
        due = self._groups_due or self.groups_installed is None or desired is not None
        self._groups_due = False
        try:
            gwant = self._groups() if due and self._groups is not None else None
            n, late = 0, []
            if gwant is not None:
                if not self.switch.connected:
                    raise SwitchDisconnected(f"{self.switch!r} is not connected")
                n, late = await self._groups_before(gwant)
            result = await (self._once(desired) if desired is not None else self._apply(delta))
            if late:
                await self._send_groups([(g, codec.GROUP_DELETE) for g in late])
        except BaseException:
            self._groups_due = self._groups_due or due  # not done: the next pass does them
            raise
        if n or late:
            log.info("{sw}: groups: {n} added or modified, {d} deleted", sw=self.switch, n=n, d=len(late))
            result = SyncResult(result.added, result.modified, result.deleted, n + len(late))
        return result

    async def _once(self, desired: Union[Iterable[Flow], Mapping[Tuple, Flow]]) -> SyncResult:
        sw = self.switch
        if not sw.connected:
            raise SwitchDisconnected(f"{sw!r} is not connected")
        table: Optional[Dict[Tuple, Flow]] = None
        keyed: Optional[Mapping[Tuple, Flow]] = None
        if isinstance(desired, Mapping):
            # identity -> Flow, each identity once by construction (the engine's
            # table(host)): no duplicate check per flow, and a copy is the whole table
            keyed, desired = desired, desired.values()
        given, self._desired_counts = self._desired_counts, None
        if self.installed is None:
            must_read, self._must_read = self._must_read, False
            if self.count_first and not must_read and hasattr(sw, "flow_count"):
                if keyed is not None and given is not None:
                    # the caller's counts of this very table (its flows were checked when
                    # built: tables.check_flow refuses a flow without our mark)
                    table, kinds = dict(keyed), self._counts_of(given)
                else:
                    table, kinds = await self._desired_table(desired, keyed)
                held = await self._held_counts(kinds)
                if held is not None and held == (len(table), kinds):
                    self._adopt(table)
                    self.verified = False
                    self.count_adoptions += 1
                    log.debug("{sw}: holds as many flows of each kind and port as desired ({n}); "
                              "adopted without a read, verified later", sw=sw, n=len(table))
                    return SyncResult()
        if self.installed is None:
            raw = getattr(sw, "read_flows_raw", None)
            if raw is not None:
                read: Dict[Tuple, Flow] = {}
                expected = table if table is not None else keyed
                async for chunk in self._paced(codec.flows_from_raw(await raw(self.cookie, self.cookie_mask),
                                                                    expected)):
                    for f in chunk:
                        read[f.identity] = f
            else:
                read = {f.identity: f for f in await sw.read_flows(self.cookie, self.cookie_mask)}
            self.reads += 1
            self.installed = read
            self.verified = True
            log.debug("{sw}: read {n} flows with our cookie", sw=sw, n=len(read))
        if not self.installed:
            return await self._push_all(table.values() if table is not None else desired)
        installed = self.installed
        want: Dict[Tuple, Flow] = {}
        mask, mark = self.cookie_mask, self.cookie
        modifies: List[Tuple[Flow, int]] = []
        adds: List[Flow] = []
        if table is None and keyed is not None:
            table = dict(keyed)
            _check_marks(table.values(), mark, mask)
        if table is not None:
            want, desired = table, table.values()  # already checked
        async for chunk in self._paced(desired):
            for f in chunk:
                if table is None and not _first(f, want, mark, mask):
                    continue
                have = installed.get(f.identity)
                if have is None:
                    adds.append(f)
                elif have is not f and have != f:
                    modifies.append((f, codec.MODIFY_STRICT if have.cookie == f.cookie else codec.ADD))
        deletes = [f for ident, f in installed.items() if ident not in want]
        if not (deletes or modifies or adds):
            self._adopt(want)
            return SyncResult()
        await self._send(_in_order(deletes, modifies, adds))
        self._adopt(want)
        result = SyncResult(added=len(adds), modified=len(modifies), deleted=len(deletes))
        log.info("{sw}: converged +{r.added} ~{r.modified} -{r.deleted}", sw=sw, r=result)
        return result

    #: entries handled between two turns given to the reactor in long loops (reads, diffs)
    PACE = 2000

    async def _desired_table(self, desired: Iterable[Flow], keyed: Optional[Mapping[Tuple, Flow]] = None
                             ) -> Tuple[Dict[Tuple, Flow], Dict[Tuple, int]]:
        """``desired`` as ``identity -> Flow`` (checked as :func:`_first` does; ``keyed``:
        the same already keyed, each identity once) and its flow counts: ``("kind", k)``
        per cookie kind (the bits 32..47 outside our cookie mask) and ``("in_port", p)``
        per port matched on."""
        want: Dict[Tuple, Flow] = {}
        counts: Dict[Tuple, int] = {}
        mask, mark = self.cookie_mask, self.cookie
        kind_bits = (0xFFFF << 32) & ~mask
        if keyed is not None:
            want = dict(keyed)
            desired = want.values()
        async for chunk in self._paced(desired):
            for f in chunk:
                if keyed is not None:
                    if f.cookie & mask != mark:
                        raise ValueError(_foreign(f, mark, mask))
                elif not _first(f, want, mark, mask):
                    continue
                k = ("kind", f.cookie & kind_bits)
                counts[k] = counts.get(k, 0) + 1
                for name, value in f.match:
                    if name == "in_port":
                        k = ("in_port", value)
                        counts[k] = counts.get(k, 0) + 1
                        break
        return want, counts

    def _counts_of(self, given: Tuple[Mapping[int, int], Mapping[int, int]]) -> Dict[Tuple, int]:
        """The caller's counts (see :meth:`apply`) keyed as :meth:`_desired_table` keys them."""
        kinds, ports = given
        kind_bits = (0xFFFF << 32) & ~self.cookie_mask
        counts: Dict[Tuple, int] = {}
        for k, n in kinds.items():
            if n:
                key = ("kind", (k << 32) & kind_bits)
                counts[key] = counts.get(key, 0) + n
        for p, n in ports.items():
            if n:
                counts[("in_port", p)] = n
        return counts

    async def _held_counts(self, counts: Mapping[Tuple, int]) -> Optional[Tuple[int, Dict[Tuple, int]]]:
        """How many of our flows the switch holds, in all and for each key of ``counts``
        (OFPMP_AGGREGATE, asked all at once); None when the switch cannot answer."""
        sw = self.switch
        mask, mark = self.cookie_mask, self.cookie
        kind_mask = mask | ((0xFFFF << 32) & ~mask)
        order = sorted(counts)
        asks = [sw.flow_count(mark, mask)]
        for what, v in order:
            asks.append(sw.flow_count(mark | v, kind_mask) if what == "kind"
                        else sw.flow_count(mark, mask, match={"in_port": v}))
        results = await DeferredList(asks, consumeErrors=True)
        for ok, value in results:
            if not ok:
                if value.check(SwitchDisconnected):
                    value.raiseException()
                log.debug("{sw}: no flow counts ({e}); reading back", sw=sw, e=value.getErrorMessage())
                return None
        return results[0][1], {k: n for k, (_ok, n) in zip(order, results[1:])}

    async def _paced(self, items: Iterable[Any], pause: Optional[Callable[[], Deferred]] = None):
        """``items`` in lists of :attr:`PACE`, giving the reactor a turn between two: a
        read-back or diff of 30k flows is ~100 ms of work that echo replies must not
        wait for.  Lists, not single items: an async generator step per flow was a
        good part of a reconnect storm's diffing.  The turn is shared by every sync
        (:func:`_turn`)."""
        it = iter(items)
        pace = self.PACE
        first = True
        while True:
            chunk = list(islice(it, pace))
            if not chunk:
                return
            if not first:
                await (pause() if pause is not None else _turn(self.clock))
            first = False
            yield chunk
            if len(chunk) < pace:
                return

    async def _apply(self, delta: Mapping[Tuple, Optional[Flow]]) -> SyncResult:
        """Send only the entries of ``delta`` that differ from the belief (known here)."""
        sw = self.switch
        if not sw.connected:
            raise SwitchDisconnected(f"{sw!r} is not connected")
        installed = self.installed
        assert installed is not None
        mask, mark = self.cookie_mask, self.cookie
        deletes: List[Flow] = []
        modifies: List[Tuple[Flow, int]] = []
        adds: List[Flow] = []
        for ident, f in delta.items():
            have = installed.get(ident)
            if f is None:
                if have is not None:
                    deletes.append(have)
                continue
            if f.cookie & mask != mark:
                raise ValueError(_foreign(f, mark, mask))
            if have is None:
                adds.append(f)
            elif have != f:
                modifies.append((f, codec.MODIFY_STRICT if have.cookie == f.cookie else codec.ADD))
        if not (deletes or modifies or adds):
            return SyncResult()
        await self._send(_in_order(deletes, modifies, adds))
        installed = self.installed  # (stop_following may have replaced it by a copy meanwhile)
        if installed is None:
            return SyncResult(added=len(adds), modified=len(modifies), deleted=len(deletes))
        for f in deletes:
            installed.pop(f.identity, None)
        for f, _cmd in modifies:
            installed[f.identity] = f
        for f in adds:
            installed[f.identity] = f
        # logged by the caller, once per run (a line per switch per change was the bulk of
        # the log and a tenth of the CPU at 100 switches)
        return SyncResult(added=len(adds), modified=len(modifies), deleted=len(deletes))

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
                if _first(f, want, mark, mask):
                    yield f, codec.ADD
        await self._send(adds(), lazy=True)
        self._adopt(want)
        if not want:
            return SyncResult()
        result = SyncResult(added=len(want))
        log.info("{sw}: converged +{r.added} ~0 -0 (first push)", sw=self.switch, r=result)
        return result

    async def _send(self, work: Iterable[Tuple[Flow, int]], lazy: bool = False) -> None:
        """Everything in one bundle, written in batches; the belief is reset on any failure."""
        sw = self.switch
        bundle = None
        self._sending = True
        try:
            it = iter(work)
            encode = RECENT.encode  # (the flows another switch was just sent: bytes copied)
            next_xid = sw.next_xid
            batch = self.batch
            check = getattr(sw, "check_writable", None)
            touched = self._touched  # a check() is reading: it leaves these out
            while True:
                n = 0
                for f, cmd in it:
                    if bundle is None:
                        bundle = sw.bundle()
                        add = bundle.add_encoded
                    xid = next_xid()
                    add(xid, encode(f, cmd, xid), f)
                    if touched is not None:
                        touched.add(f.identity)
                    n += 1
                    if n == batch:
                        break
                if bundle is None:
                    return  # nothing to send (lazy work turned out empty)
                if check is not None:
                    # demoted since the last batch: the switch (told SLAVE already) would
                    # refuse every message of this batch, one error each; stop here and
                    # discard what it holds (nothing was committed: NotMaster keeps the belief)
                    check()
                bundle.flush()
                if n < batch:
                    break
                # the shared turn (_turn), not "the next reactor turn": a fill of 1000
                # switches sends thousands of flows to each, and the reactor then ran
                # every switch's next batch back to back (seconds) before reading a
                # socket again: Redis replies queued behind that timed out (creates
                # answered 503 at 1000x20k)
                await _turn(self.clock)
                if not sw.connected:
                    raise SwitchDisconnected(f"{sw!r} disconnected while sending a bundle")
            await bundle.commit()
        except BaseException as e:
            if not isinstance(e, NotMaster):  # (NotMaster: nothing committed, see _drain)
                self.installed = None
                self._must_read = True
            self.bundles_failed += 1
            if bundle is not None and not bundle.closed and sw.connected:
                await bundle.discard()
            raise
        finally:
            self._sending = False
        self.bundles_sent += 1


#: the flow_mods sent last, shared by every switch's sync (see RecentEncodings)
RECENT = codec.RecentEncodings()


def _in_order(deletes: List[Flow], modifies: List[Tuple[Flow, int]], adds: List[Flow]
              ) -> Iterator[Tuple[Flow, int]]:
    """A bundle's messages, deletes first, then modifies, then adds, each (flow,
    command) pair made as it is sent: made all at once, a catch-up's pairs (500
    switches with thousands of flows each in flight) were 64 bytes per flow per
    switch, alive together, and what they took stayed with the process."""
    for f in deletes:
        yield f, codec.DELETE_STRICT
    yield from modifies
    for f in adds:
        yield f, codec.ADD


def _merged(pending: Dict[Tuple, Optional[Flow]], delta: Mapping[Tuple, Optional[Flow]]
            ) -> Dict[Tuple, Optional[Flow]]:
    """``delta`` merged into ``pending`` (its values win).  With nothing pending, a
    ``dict`` delta is taken as it is, not copied: a fill's deltas were held twice."""
    if pending or type(delta) is not dict:
        pending.update(delta)
        return pending
    return delta  # type: ignore[return-value]


def _first(f: Flow, want: Dict[Tuple, Flow], mark: int, mask: int) -> bool:
    """Add a desired flow to ``want``: True the first time its identity is seen, False
    for an equal repeat; a flow without our cookie mark, or a different flow with the
    same identity, is a compiler bug and raises."""
    if f.cookie & mask != mark:
        raise ValueError(_foreign(f, mark, mask))
    prev = want.setdefault(f.identity, f)
    if prev is f:
        return True
    if prev != f:
        raise ValueError(f"two desired flows with the same identity: {prev} / {f}")
    return False


#: one cooperator per clock (the reactor; a test's Clock)
_cooperators: Dict[Any, Cooperator] = {}


def _turn(clock: Any) -> Deferred:
    """Fires at this sync's next turn, in a time budget shared by every sync.

    Why not ``deferLater(clock, 0)``: at a reconnect storm 500 syncs pace their loops
    at once, each waiting for "the next reactor turn" — and the reactor runs every
    call that is due in one go, 500 chunks of work without reading a socket in
    between (a 256 ms stall at 200 switches).  A :class:`Cooperator` runs the waiting
    syncs' continuations one after the other inside its own tick and ends the tick
    after 10 ms, so the others wait for the next tick, after the reactor has polled."""
    coop = _cooperators.get(clock)
    if coop is None:
        coop = _cooperators[clock] = Cooperator(scheduler=lambda step: clock.callLater(0, step))
    return coop.cooperate(iter((None,))).whenDone()


def _check_marks(flows: Iterable[Flow], mark: int, mask: int) -> None:
    for f in flows:
        if f.cookie & mask != mark:
            raise ValueError(_foreign(f, mark, mask))


def _foreign(f: Flow, mark: int, mask: int) -> str:
    # such a flow would be installed but never read back (reads filter by cookie),
    # so it could never be corrected or removed: refuse it
    return f"flow without our cookie mark ({mark:#x}/{mask:#x}): {f.to_ofctl()}"

