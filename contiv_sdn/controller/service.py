"""The central controller: keeps every switch's flows equal to the compiled state.

Level-triggered (architecture principle 3): any change notification, a
(re)subscription, a switch connecting or its ports changing only *schedules* a
run; a run reads the changed records from Redis into its mirror, and only if a
change is visible to the compiler (:func:`read_view`: a host's refresh time or
a network's ``epCount`` is not) builds the snapshot and hands it to the
:class:`IncrementalCompiler`, which recomputes the owners whose inputs changed
and gives each affected switch only its flow delta; the switch's
:class:`FlowSync` (owned by the switch registry) sends it.  A switch whose
belief is unknown (new connection, failed bundle, audit mismatch) gets the
whole set instead.  Runs never overlap; changes that arrive during a run cause
exactly one more run, so a burst of a thousand changes costs a couple of
passes, and an endpoint record and its port's status landing close together
are one pass.  Long passes yield to the reactor every :attr:`Controller.SLICE`.

The audit every :attr:`Controller.AUDIT_INTERVAL` asks each switch for its flow
count (OFPMP_AGGREGATE) and reads back in full only the switches whose count
differs, plus a few in rotation (a modified flow keeps the count), compared
while changes go on (:meth:`FlowSync.check`); it compares the Redis mirror with
the store as text, off any run too.

A (re)connecting switch is not read back when its flow counts (per cookie kind
and per port matched on) agree with its desired set (:class:`FlowSync`): a
reconnect storm sends and reads nothing but a few counts per switch.  Such a
switch's belief is unverified; after the runs, the controller reads those
switches back in full one at a time (:meth:`Controller._verify_next`), so a flow
changed behind our back while we were away is repaired within seconds without
the storm reading every switch at once.

The blast radius of bad state is one owner.  A stored record that is not JSON or
has a field of the wrong type is refused by :func:`build_checked`; an owner
(endpoint, network, host) whose compilation raises anyway is left out by the
compiler; both are logged once, briefly (kind, key, reason), and logged again
only if the record changes and is still bad.  Everything else keeps being
programmed.  A switch whose own flows cannot be compiled is left as it is (an
empty flow set would wipe it), a switch whose sync fails is retried alone, and
a run waits for no switch longer than :attr:`Controller.CONVERGE_WAIT`.

Several netmasters (``lease``, :mod:`contiv_sdn.controller.lease`): every
netmaster connects to every switch and compiles everything, but only the holder
of the switch lease writes.  Each switch connection is asked for SLAVE at once,
and for MASTER (with the lease's generation as the fencing token) while the lease
is held; a switch counts as ours only once it confirmed MASTER.  A standby keeps
its compiled state warm and its switches' beliefs unknown, so on taking over
each switch's first pass reads the flows back and sends nothing when they are
already right.  Losing the lease (not renewed in time) demotes every switch to
SLAVE locally at once, before the switch even answers.

A lapse is not a takeover.  A netmaster busy enough to miss its renewal deadline
(a lone one included: it always runs the lease) gets the lease back with the
same or the next generation (``Lease.continued``): nobody else wrote to any
switch meanwhile, so each switch keeps its belief, and the deltas the compiler
produced while we were SLAVE are held by its FlowSync (``FlowSync.hold``) and
sent with the next pass once MASTER is confirmed.  Invalidating instead would
make every lapse a read-back of every switch (at 500 switches x 30k flows a
storm long enough to cause the next lapse).  Only when another holder was seen
(``Lease.interrupted``) or the new generation is not ours to continue are the
beliefs forgotten, and each switch read back as on any takeover.
"""

from __future__ import annotations

import gc
import hashlib
import time
from typing import Any, Dict, Generator, Iterable, List, Optional, Set, Tuple

from os_ken.ofproto import ofproto_v1_3 as ofp
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python import failure

from contiv_sdn.controller.snapshot import SNAPSHOT_KINDS, SnapshotBuilder, mirrored, parse_record, read_view
from contiv_sdn.openflow.protocol import NotMaster, OpenFlowError, RefusalLog, SwitchDisconnected
from contiv_sdn.ops import metrics
from contiv_sdn.pipeline.incremental import IncrementalCompiler, Update
from contiv_sdn.store import keys as K

_ABSENT = object()


def _digest(raw: str) -> bytes:
    """What the audit compares a stored record's text by: 16 bytes of BLAKE2b, not
    the text itself (a chance collision, 2**-128, would hide one change from one
    audit)."""
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).digest()


log = Logger()


class ReportOnce:
    """Remembers which problems were reported, so each is logged once while it lasts.

    Items are ``(kind, key, reason, fingerprint)``; an item is new when its (kind,
    key) was not reported in the previous round or its fingerprint changed (the
    record changed and is still bad).  An owner that is fine again is forgotten,
    so breaking it again is reported again.
    """

    def __init__(self) -> None:
        self._seen: Dict[Tuple[str, str], str] = {}

    def update(self, items: Iterable[Tuple[str, str, str, str]]) -> Tuple[List[Tuple[str, str, str]],
                                                                           List[Tuple[str, str]]]:
        """The problems to log now (kind, key, reason) and the owners that recovered."""
        current: Dict[Tuple[str, str], str] = {}
        new: List[Tuple[str, str, str]] = []
        for kind, key, reason, fingerprint in items:
            if (kind, key) in current:
                continue  # one line per owner: its first reason
            current[(kind, key)] = fingerprint
            if self._seen.get((kind, key)) != fingerprint:
                new.append((kind, key, reason))
        recovered = [k for k in self._seen if k not in current]
        self._seen = current
        return new, recovered


def _log_applied(host: str, rev: int, result: Any) -> None:
    log.info("{host}: rev {rev}: +{a} ~{m} -{d} flows, {g} group changes", host=host, rev=rev,
             a=result.added, m=result.modified, d=result.deleted, g=getattr(result, "groups", 0))


class _Applied:
    """What one run changed on its switches, logged as one line when it touched many.

    Why: a change on a network of 500 hosts is a small delta on each of 500 switches;
    a line per switch per change was a tenth of the netmaster's CPU (formatting and
    writing the log) and buried everything else in the log."""

    #: up to this many switches get a line each
    EACH = 3

    def __init__(self) -> None:
        self.items: Optional[List[Tuple[str, Any]]] = []

    def add(self, host: str, result: Any) -> bool:
        """Kept for the run's line; False once the run is over (the caller logs it)."""
        if self.items is None:
            return False
        self.items.append((host, result))
        return True

    def close(self, rev: int) -> None:
        items, self.items = self.items or [], None
        if len(items) <= self.EACH:
            for host, result in items:
                _log_applied(host, rev, result)
            return
        total = {k: sum(getattr(r, k, 0) for _, r in items)
                 for k in ("added", "modified", "deleted", "groups")}
        hosts = sorted(h for h, _ in items)
        log.info("rev {rev}: {n} switches: +{a} ~{m} -{d} flows, {g} group changes "
                 "({first}, ...)", rev=rev, n=len(items), a=total["added"], m=total["modified"],
                 d=total["deleted"], g=total["groups"], first=", ".join(hosts[:self.EACH]))


class _EngineView:
    """The engine's desired flows for one host, as a following belief reads them."""

    __slots__ = ("ctl", "host")

    def __init__(self, ctl: "Controller", host: str) -> None:
        self.ctl, self.host = ctl, host

    def flow_at(self, ident: Tuple) -> Any:
        return self.ctl.engine.flow_at(self.host, ident)

    def table(self) -> Any:
        return self.ctl.engine.table(self.host)

    def touched(self) -> Any:
        return self.ctl.engine.touched(self.host)


class Controller(Service):
    #: Coalescing delay: changes that land within this window share one run.
    DEBOUNCE = 0.02
    MAX_DELAY = 0.5
    #: How often every switch's flow count is checked, to repair flows changed behind
    #: our back (an operator's ``ovs-ofctl del-flows``, a switch bug).
    AUDIT_INTERVAL = 30.0
    #: Each audit also reads back in full one switch in this many (in rotation), for
    #: changes that keep the count (a flow modified in place) ...
    AUDIT_FULL_EVERY = 10
    #: ... but never more than this many per audit: a full check costs a read, a decode
    #: and a diff of the switch's whole table (~0.3 s of reactor at 16k flows), so one in
    #: ten of 500 switches every 30 s kept half a core busy and the reactor slow enough
    #: to miss lease renewals.  With more switches the rotation takes longer instead.
    AUDIT_FULL_MAX = 5
    #: The longest a run waits for one switch's sync.  A switch that takes longer keeps
    #: syncing on its own (its FlowSync coalesces later calls); the others go on.
    CONVERGE_WAIT = 30.0
    #: The longest a run holds the reactor before giving it a turn.
    SLICE = 0.01
    #: A run that leaves this many new objects in the young generation (the collector
    #: is off while the engine runs, so ``gc.get_count()[0]`` is what the next young
    #: collection would walk: a cold start, a reconnect storm, a fill) is followed by
    #: ``gc.freeze()``, which moves them out of the collector's walks.  Otherwise the
    #: next young collection walks them all and the older ones again: with the
    #: engine's state of 500 switches, pauses of 135-151 ms on the reactor after a
    #: restart's cold build (whose shared layers evaluate too few owners for the
    #: count of owners this replaced), 0.33-0.43 s during a 1000-switch fill, for
    #: objects that are freed by reference counting anyway (they hold no cycles).
    #: 100k objects are a walk of a few ms.
    FREEZE_YOUNG = 100_000
    #: a full collection longer than this is followed by ``gc.freeze()`` (seconds).
    #: 10 ms, not 50: at 500x10k full collections of 15-54 ms, nothing collected, came
    #: every 0.5-2 s while changes were measured (each one a stall of every switch's
    #: updates); once frozen, the next ones walk only what is new since.
    GC_FREEZE_PAUSE = 0.01

    def __init__(self, store: Any, listen: str = "tcp:6653", reactor: Any = None,
                 lease: Any = None, audit_store: Any = None):
        from twisted.internet import reactor as default_reactor
        from contiv_sdn.openflow.registry import SwitchRegistry

        self.store = store
        #: the audit's reads of every record (default: ``store``): a connection of its own
        self.audit_store = audit_store if audit_store is not None else store
        self.listen = listen
        self.reactor = reactor or default_reactor
        self.registry = SwitchRegistry(sync_factory=self._new_sync)
        self.registry.on_switch_up = self._switch_up
        self.registry.on_switch_down = self._switch_down
        self.registry.on_ports_changed = self._ports_changed
        #: host -> the sync whose belief follows the engine's flows for it (sync.Following)
        self._following: Dict[str, Any] = {}
        self.engine = self._new_engine()
        self._pending: Optional[Any] = None
        self._running = False
        #: host -> the last sync failure logged for it (a retry every second that fails
        #: the same way is not logged again)
        self._sync_failed: Dict[str, str] = {}
        self._again = False
        self._port = None
        #: switches refused at the TLS handshake (said once per address and reason)
        self.refusals = RefusalLog()
        #: runs (each reads the changed records) and compiles (runs that found a change
        #: the compiler can see): for tests and tools
        self.runs = 0
        self.compiles = 0
        self.last_snapshot = None
        #: builds each run's snapshot, reusing the objects of records that did not change
        self._snapshots = SnapshotBuilder()
        #: (kind, key) of the mirror's records replaced since the last build
        self._changed_keys: Optional[Set[Tuple[str, str]]] = None
        self.last_update: Optional[Update] = None
        self._idle: list = []
        self._last_duration = 0.0
        self._last_end = 0.0
        self._mirror: Optional[Dict[str, Dict[str, dict]]] = None
        self._dirty: Set[Tuple[str, str]] = set()
        self._need_full = True
        #: switches came, went or changed ports since the last compile
        self._recompile = True
        #: every switch is held as it is (the global record is refused)
        self._held = False
        self._rev = 0
        self._audit: Optional[task.LoopingCall] = None
        self._audit_round = 0
        #: the audit's comparison of the mirror with the store, while it runs
        self._auditing: Optional[defer.Deferred] = None
        self._audit_idle: list = []
        #: background work waiting for the runs to end (_background_turn)
        self._after_runs: Dict[defer.Deferred, Any] = {}
        #: kind -> key -> the digest of the stored text each mirror record was parsed
        #: from (:func:`_digest`: the texts themselves were ~1 KiB per endpoint)
        self._texts: Dict[str, Dict[str, bytes]] = {}
        self._retry = False
        self._refusals = ReportOnce()
        self._failures = ReportOnce()
        #: the timers of runs waiting for switches (see _bounded), cancelled at stop
        self._waits: Dict[Any, defer.Deferred] = {}
        #: generation -> switches that answered MASTER for it (for the role log lines)
        self._mastered: Dict[int, int] = {}
        #: a switch adopted from counts being read back in full now (one at a time)
        self._verifying: Optional[defer.Deferred] = None
        self._verify_call: Optional[Any] = None
        #: the longest garbage collection seen (seconds; measured, for tools and logs)
        self.gc_longest = 0.0
        self._gc_started = 0.0
        #: the switch lease (several netmasters), None: this netmaster writes alone
        #: (connections keep OVS's default EQUAL role)
        self.lease = lease
        #: dpid -> the role request in flight (role asked)
        self._role_asked: Dict[int, int] = {}
        #: when the lease was last acquired, and the takeovers measured (seconds from
        #: acquisition until every switch confirmed MASTER): for tests and tools
        self._acquired_at: Optional[float] = None
        self.takeovers: List[float] = []
        #: the generations held as continuations of our previous one (Lease.continued)
        #: since the last takeover: their MASTER confirmations keep the switches'
        #: beliefs, even one that arrives after the next lapse (a set, not the newest)
        self._continued: Set[int] = set()
        if lease is not None:
            lease.on_change = self._lease_changed
            lease.on_tick = self._assert_roles

    # -- life cycle ----------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        from contiv_sdn.openflow.protocol import OpenFlowFactory, server_endpoint

        self.store.subscribe(self._changed, self._resync)
        gc.callbacks.append(self._gc_timer)
        self._audit = task.LoopingCall(self.audit)
        self._audit.clock = self.reactor
        self._audit.start(self.AUDIT_INTERVAL, now=False)
        factory = OpenFlowFactory(self.registry)
        # plain TCP, or TLS requiring a switch certificate (--ofp-tls-*: server_endpoint)
        try:
            endpoint, wrap = server_endpoint(self.reactor, self.listen, self.refusals)
            d = endpoint.listen(wrap(factory))
        except ValueError as e:  # unreadable or mismatched TLS files: said plainly, no traceback
            log.error("cannot listen for switches: {err}", err=str(e))
            self.schedule()
            return

        def listening(port: Any) -> None:
            self._port = port
            log.info("OpenFlow controller listening on {where}", where=self.listen)

        def failed(f: Any) -> None:
            log.failure("cannot listen for switches on {where}", f, where=self.listen)
            return f

        d.addCallbacks(listening, failed)
        if self.lease is not None:
            self.lease.start()
        self.schedule()

    def _gc_timer(self, phase: str, info: Dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            took = time.perf_counter() - self._gc_started
            self._gc_started = 0.0
            if took > self.gc_longest:
                self.gc_longest = took
                if took > 0.05:
                    log.info("garbage collection (generation {g}) held the reactor {ms:.0f} ms",
                             g=info.get("generation"), ms=took * 1e3)
            if info.get("generation") == 2 and took > self.GC_FREEZE_PAUSE and self.running:
                # what survived a full collection is long-lived: out of the next walks (a
                # 1000-switch fill had full collections of 0.2-0.4 s every few seconds,
                # growing, between the freezes FREEZE_YOUNG makes).  Here, at once: a freeze
                # left for the next reactor turn let a long stretch of allocations run 7
                # full collections in a row first (139 ms growing to 508 ms, 2 s in all: a
                # lease lapse).  The collection is over when "stop" is called; freezing only
                # moves the collector's lists into its permanent generation.
                gc.freeze()

    def stopService(self) -> Any:
        super().stopService()
        if self._gc_timer in gc.callbacks:
            gc.callbacks.remove(self._gc_timer)
        if self._audit is not None and self._audit.running:
            self._audit.stop()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._verify_call is not None and self._verify_call.active():
            self._verify_call.cancel()
        self._verify_call = None
        self._release_background()
        for call, waiter in list(self._waits.items()):  # a stopped controller waits for nobody
            call.cancel()
            waiter.callback(None)
        self._waits.clear()
        steps = []
        if self.lease is not None:
            steps.append(defer.ensureDeferred(self.lease.stop()))
        if self._port is not None:
            steps.append(defer.maybeDeferred(self._port.stopListening))
        if steps:
            return defer.gatherResults(steps, consumeErrors=True)
        return None

    def audit(self) -> defer.Deferred:
        """Check every switch cheaply and repair those that differ; compare the Redis
        mirror with the store.

        Level-triggered control includes the switch side: a flow removed or changed
        behind the controller's back is found and repaired.  Each switch is asked for
        the count of our flows (one small OFPMP_AGGREGATE reply) and compared with
        what its FlowSync believes; one switch in :attr:`AUDIT_FULL_EVERY`, in
        rotation, is read back and compared flow by flow (:meth:`FlowSync.check`),
        one after the other; a mismatch makes its next pass read its flows back and
        send the difference.  The store's records are compared with the mirror as
        text, and those that differ are read again by the next run, for the same
        reason (a notification lost without a resubscription).

        None of it happens inside a run: a change arriving during an audit is not
        held up by it.  (The audit used to re-read and parse every record and read
        back five switches in full inside a run, and the changes that arrived then
        waited for all of it: every spike of the scale bench's latency.)
        """
        self._audit_round += 1
        d = defer.ensureDeferred(self._audit_all())
        self._auditing = d
        return d

    async def _audit_all(self) -> None:
        try:
            try:
                await self._audit_mirror()
            except Exception as e:  # the store is away: the next audit, or a resubscription, reads it
                log.info("audit: cannot compare the records with the store ({e}); again at the next audit",
                         e=e)
            finally:
                self._auditing = None
                idle, self._audit_idle = self._audit_idle, []
                for d in idle:
                    d.callback(None)
            await self._audit_switches()
        except Exception:
            log.failure("audit failed; again at the next one")

    #: fields asked for per HSCAN step of the audit's comparison with the store
    AUDIT_SCAN = 200
    #: switches whose flow count is asked at once; a run goes before the next batch
    #: (500 replies in one go held a change that arrived meanwhile ~0.2 s at 500x10k)
    AUDIT_BATCH = 50

    async def _audit_mirror(self) -> None:
        """Mark for the next run every record whose stored text differs from the one
        the mirror was built from (or that is missing on either side): a notification
        lost without a resubscription.  Compared as text, not parsed, and read with
        ``HSCAN`` in small steps: at 10k endpoints an ``HGETALL`` was a reply of
        megabytes that the REST API's commands on the same connection waited behind
        (creates answered 503 at the fill of the scale bench).  A record written while
        the scan runs may be marked too: the next run reads it again, which is
        harmless."""
        if self._mirror is None or self._need_full:
            return  # a full read is due anyway
        marked: List[Tuple[str, str]] = []
        for kind in sorted(SNAPSHOT_KINDS):
            seen: Set[str] = set()
            cursor = -1
            while cursor != 0:
                cursor, records = await self.audit_store.hscan_raw(K.hash_of(kind), max(cursor, 0),
                                                                   self.AUDIT_SCAN)
                if self._mirror is None or self._need_full:
                    return
                texts = self._texts.get(kind, {})
                for key, raw in records.items():
                    seen.add(key)
                    if texts.get(key) != _digest(raw):
                        marked.append((kind, key))
            # (HSCAN returns every field present for the whole scan: one it did not
            # return was deleted, or written meanwhile, and is read again either way)
            marked += [(kind, key) for key in list(self._texts.get(kind, {})) if key not in seen]
        if marked:
            # (debug: most are writes whose notification is still on its way)
            log.debug("audit: {n} stored records differ from what was last read (e.g. {kind} {key}); "
                      "reading them again", n=len(marked), kind=marked[0][0], key=marked[0][1])
            self._dirty.update(marked)
            self.schedule()

    async def _audit_switches(self) -> None:
        syncs = sorted((dpid, sync) for dpid, sync in self.registry.syncs().items()
                       if self._may_write(sync.switch))
        n = len(syncs)
        k = min(-(-n // self.AUDIT_FULL_EVERY), self.AUDIT_FULL_MAX)  # full checks this round
        full = sorted({(self._audit_round * k + j) % n for j in range(k)}) if n else []
        same = True
        for at in range(0, n, self.AUDIT_BATCH):
            if at:
                await self._background_turn()
            checks = [defer.ensureDeferred(sync.audit()) for _dpid, sync in syncs[at:at + self.AUDIT_BATCH]]
            results = await defer.DeferredList(checks, consumeErrors=True)
            same = same and all(ok and agree for ok, agree in results)  # (a failed count: next audit)
        for i in full:  # one after the other: each is a read of the whole table
            sync = syncs[i][1]
            if not (self.running and self._may_write(sync.switch)):
                continue
            try:
                same = await sync.audit(full=True, pause=self._background_turn) and same
            except Exception as e:
                log.debug("audit: full check of {sw} failed ({e})", sw=sync.switch, e=e)
        if not same:
            self.schedule()  # the next run reads back the switches that differ

    # -- the Redis mirror ----------------------------------------------------------
    def _changed(self, kind: str, key: str, op: str, rev: int) -> None:
        if kind not in SNAPSHOT_KINDS:
            return  # nothing the compiler reads: no run
        self._dirty.add((kind, key))
        self._rev = max(self._rev, rev)
        self.schedule()

    def _resync(self) -> None:
        # (Re)subscribed: messages may have been lost, so read everything again.
        self._need_full = True
        self.schedule()

    async def _read_state(self) -> Tuple[int, Dict[str, Dict[str, dict]], bool]:
        """The state the compiler needs, kept as a mirror of Redis, and whether any
        record changed in what the compiler reads (:func:`read_view`).

        A full read costs time proportional to everything stored, so it is done only
        at start and after a resubscription; otherwise only the records named by change
        notifications since the last run (or by the audit, :meth:`_audit_mirror`) are
        read.  A
        change that lands while they are read marks its key again, so the next run
        reads it: the mirror converges like the switches do.

        Records are read as text and parsed one by one (:func:`parse_record`, strict
        JSON): one record that is not JSON becomes a refusal of that record, where a
        whole-store ``snapshot()`` document would fail to parse for every run.  The
        kinds are read one by one, not at one revision; a change landing in between
        is marked dirty and read by the next run, as above.
        """
        if self._need_full or self._mirror is None:
            self._need_full = False
            self._dirty.clear()
            kinds = sorted(SNAPSHOT_KINDS)
            try:
                rev = await self.store.revision()
                hashes = await defer.gatherResults(
                    [defer.ensureDeferred(self.store.hgetall_raw(K.hash_of(kind))) for kind in kinds],
                    consumeErrors=True)
            except Exception:
                self._need_full = True
                raise
            old = self._mirror
            mirror: Dict[str, Dict[str, Any]] = {}
            self._texts = {kind: {key: _digest(raw) for key, raw in records.items()}
                           for kind, records in zip(kinds, hashes)}
            changed = old is None
            if old is None:
                self._changed_keys = None  # the builder starts from nothing anyway
            for kind, records in zip(kinds, hashes):
                before = (old or {}).get(kind, {})
                table = mirror[kind] = {}
                for key, raw in records.items():
                    record = mirrored(kind, parse_record(raw))
                    had = before.get(key, _ABSENT)
                    if had is not _ABSENT and read_view(kind, had) == read_view(kind, record):
                        # the same to the compiler: keep the object, which the snapshot
                        # builder's memo recognises by identity (no rebuild after an audit)
                        record = had
                    else:
                        changed = True
                        self._note_changed(kind, key)
                    table[key] = record
                    await self._breathe()
                gone = [key for key in before if key not in table]
                for key in gone:
                    self._note_changed(kind, key)
                changed = changed or bool(gone)
            self._mirror = mirror
            self._rev = max(self._rev, rev)
            return self._rev, self._mirror, changed
        dirty, self._dirty = list(self._dirty), set()
        try:
            values = await defer.gatherResults(
                [defer.ensureDeferred(self.store.get_raw(kind, key)) for kind, key in dirty],
                consumeErrors=True)
        except Exception:
            self._need_full = True
            raise
        changed = False
        for (kind, key), raw in zip(dirty, values):
            table = self._mirror.setdefault(kind, {})
            texts = self._texts.setdefault(kind, {})
            if raw is None:
                texts.pop(key, None)
            else:
                texts[key] = _digest(raw)
            had = key in table
            before = table.get(key)
            if raw is None:
                table.pop(key, None)
                if had:
                    changed = True
                    self._note_changed(kind, key)
            else:
                record = mirrored(kind, parse_record(raw))
                if had and read_view(kind, before) == read_view(kind, record):
                    continue  # outside what the compiler reads: keep the object (see above)
                table[key] = record
                changed = True
                self._note_changed(kind, key)
        return self._rev, self._mirror, changed

    def _note_changed(self, kind: str, key: str) -> None:
        if self._changed_keys is not None:
            self._changed_keys.add((kind, key))

    _slice_end = 0.0

    async def _breathe(self) -> None:
        """Give the reactor a turn if this run has held it for :attr:`SLICE`."""
        now = time.perf_counter()
        if now >= self._slice_end:
            if self._slice_end:
                await task.deferLater(self.reactor, 0, lambda: None)
            self._slice_end = time.perf_counter() + self.SLICE

    async def _drive(self, steps: Generator[None, None, None]) -> None:
        """Run a generator of work slices, yielding to the reactor every :attr:`SLICE`."""
        for _ in steps:
            await self._breathe()

    # -- switches --------------------------------------------------------------
    def _switch_up(self, switch: Any) -> None:
        log.info("switch {dpid:#x} connected", dpid=switch.dpid)
        if self.lease is not None:
            switch.fenced = True
            self._role_asked.pop(switch.dpid, None)
            self._assert_role(switch)
        self._recompile = True
        self.schedule()

    def _switch_down(self, switch: Any) -> None:
        log.info("switch {dpid:#x} disconnected", dpid=switch.dpid)
        self._role_asked.pop(switch.dpid, None)
        # its sync is retired: the engine's hooks must not keep feeding it (nor keep it
        # alive); its belief is dropped, not copied out (stop_following): a new
        # connection gets a sync of its own, and 500 copies of 21k flows made a
        # netmaster's stop take 12 s.  A sync follows under the host its dpid maps to.
        host = self.registry.host_of(switch.dpid)
        sync = self._following.get(host) if host is not None else None
        if sync is not None and sync.switch is switch:
            del self._following[host]
            sync.invalidate()
        self._recompile = True

    # -- roles (several netmasters) ----------------------------------------------
    def _may_write(self, switch: Any) -> bool:
        if self.lease is None:
            return True
        return self.lease.valid() and switch.writable

    def _lease_changed(self, held: bool, generation: int) -> None:
        if held:
            self._acquired_at = self.reactor.seconds()
            if getattr(self.lease, "continued", False):
                # the same or the next generation, nobody seen in between: every switch
                # holds what we believe (see the module doc); held deltas follow
                self._continued.add(generation)
                log.info("switch lease back with nobody in between (generation {g}): "
                         "switches keep their flows, changes made meanwhile follow", g=generation)
            else:
                self._continued.clear()
                self._forget_beliefs()
            self._assert_roles()
            return
        self._acquired_at = None
        # lost: no write from here on (each switch's role flips locally now); the
        # beliefs are kept until we know whether somebody else writes (_assert_roles)
        self._assert_roles()

    def _forget_beliefs(self) -> None:
        """Another holder may have written: every switch is read back when it is ours."""
        for sync in self.registry.syncs().values():
            sync.invalidate()

    def _assert_roles(self) -> None:
        """Bring every switch's role to what the lease says (after each lease attempt:
        a refused or lost request is asked again within one renewal period)."""
        if self.lease is None or not self.running:
            return
        if not self.lease.held and getattr(self.lease, "interrupted", True):
            # somebody else holds (or held) the lease: what we believed (and the deltas
            # held back) is worthless from here on
            self._forget_beliefs()
        for switch in self.registry.switches():
            self._assert_role(switch)

    def _assert_role(self, switch: Any) -> None:
        want = ofp.OFPCR_ROLE_MASTER if self.lease.valid() else ofp.OFPCR_ROLE_SLAVE
        asked = self._role_asked.get(switch.dpid)
        if asked == want or (asked is None and switch.role_wanted == want and switch.role == want):
            return
        self._role_asked[switch.dpid] = want
        generation = self.lease.generation
        try:
            d = switch.request_role(want, generation)
        except SwitchDisconnected:
            self._role_asked.pop(switch.dpid, None)
            return

        def answered(reply: Tuple[int, int]) -> None:
            if self._role_asked.get(switch.dpid) == want:
                del self._role_asked[switch.dpid]
            if want != ofp.OFPCR_ROLE_MASTER or reply[0] != ofp.OFPCR_ROLE_MASTER:
                return
            # the first switch of a generation and then every switch, not a line per switch
            # (a lapse at 1000 switches wrote a thousand lines twice)
            # (answers of two generations can interleave after back-to-back lapses)
            n = self._mastered[generation] = self._mastered.get(generation, 0) + 1
            if n == 1:
                log.info("MASTER of switch {dpid:#x} (generation {g}); the others follow",
                         dpid=switch.dpid, g=generation)
                for old in [g for g in self._mastered if g < generation - 2]:
                    del self._mastered[old]
            total = len(self.registry.switches())
            if n == total and total > 1:
                log.info("MASTER of {n} switches (generation {g})", n=total, g=generation)
            sync = self.registry.sync_of(switch.dpid)
            if sync is not None and sync.switch is switch and generation not in self._continued:
                sync.invalidate()  # read its flows back: send nothing if they are right
            self._recompile = True
            self.schedule()
            if self._acquired_at is not None and all(s.writable for s in self.registry.switches()):
                self.takeovers.append(self.reactor.seconds() - self._acquired_at)
                self._acquired_at = None

        def refused(f: Any) -> None:
            if self._role_asked.get(switch.dpid) == want:
                del self._role_asked[switch.dpid]
            if f.check(SwitchDisconnected):
                return
            if (f.check(OpenFlowError) and f.value.type == ofp.OFPET_ROLE_REQUEST_FAILED
                    and f.value.code == ofp.OFPRRFC_STALE):
                # the switch has seen a newer generation than Redis gave us (a Redis
                # failover lost it): move Redis past it, so the next acquisition is newer
                d2 = switch.request_role(ofp.OFPCR_ROLE_NOCHANGE, 0)
                d2.addCallback(lambda r: defer.ensureDeferred(self.lease.raise_generation(r[1])))
                d2.addErrback(lambda f2: log.warn("cannot read switch {dpid:#x}'s generation: {e}",
                                                  dpid=switch.dpid, e=f2.getErrorMessage()))
                return
            log.warn("role request to switch {dpid:#x} failed: {e}; asked again shortly",
                     dpid=switch.dpid, e=f.getErrorMessage())

        d.addCallbacks(answered, refused)

    def _ports_changed(self, switch: Any) -> None:
        self._recompile = True
        self.schedule()

    # -- runs ------------------------------------------------------------------
    def schedule(self, *_: Any) -> None:
        if not self.running:
            return
        if self._running:
            self._again = True
            return
        if self._pending is None or not self._pending.active():
            # Duty-cycle limit: after a run that took d seconds, wait about d before the
            # next, so a stream of intent changes (REST creates) never spends more than
            # half the reactor on compiling.  Bounded so flows still follow in < 1 s.
            # The pause counts from the run's end: a change arriving after the reactor
            # was already idle that long waits for nothing (the first change after a
            # large converge waited its whole 0.5 s: the p99 of every scale bench)
            idle = self.reactor.seconds() - self._last_end
            delay = max(self.DEBOUNCE, min(self.MAX_DELAY, self._last_duration) - idle)
            self._pending = self.reactor.callLater(delay, self._start_run)

    def when_idle(self) -> defer.Deferred:
        """Fires after the current (or next scheduled) run finished: for tests and tools."""
        if self._auditing is not None:
            # an audit is comparing the store with the mirror: the run it may cause counts
            d0: defer.Deferred = defer.Deferred()
            self._audit_idle.append(d0)
            return d0.addCallback(lambda _: self.when_idle())
        if not self._running and (self._pending is None or not self._pending.active()):
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        return d

    #: the longest background work (a full check's slices) waits for runs to end
    BACKGROUND_WAIT = 1.0

    def _background_turn(self) -> defer.Deferred:
        """The next turn of background work (the audit's full checks, verifications):
        once no run is going or due, or after :attr:`BACKGROUND_WAIT` at most.  A
        full check's slices (2000 flows decoded or compared each) would otherwise come
        between the slices of a run, and a change would wait for them; under a steady
        stream of runs the check still goes on, a slice a second."""
        d: defer.Deferred = defer.Deferred()
        if not self._running and (self._pending is None or not self._pending.active()):
            self.reactor.callLater(0, d.callback, None)
            return d

        def late() -> None:
            self._after_runs.pop(d, None)
            d.callback(None)
        self._after_runs[d] = self.reactor.callLater(self.BACKGROUND_WAIT, late)
        return d

    def _release_background(self) -> None:
        waiting, self._after_runs = self._after_runs, {}
        for d, call in waiting.items():
            if call.active():
                call.cancel()
            d.callback(None)

    def _start_run(self) -> None:
        self._pending = None
        defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        self._running = True
        self._again = False
        self._retry = False
        self._slice_end = 0.0
        started = time.perf_counter()
        cpu_started = time.process_time()
        try:
            await self._converge_all()
        except Exception:
            log.failure("controller run failed; retrying in 1 s")
            self._retry = True
        finally:
            self._running = False
            # the duty-cycle pause follows the CPU the run took, not its wall time: a run
            # that mostly waited for switches' replies (500 bundles) held nothing up and
            # must not make the next change wait as long again (it was the p99's tail)
            busy = time.process_time() - cpu_started
            self._last_duration = min(busy, self.MAX_DELAY)
            self._last_end = self.reactor.seconds()
            metrics.CONTROLLER_RUN_SECONDS.observe(time.perf_counter() - started)
        if not self.running:
            return
        if self._retry:
            # A switch or Redis failed us: try again soon, not in a hot loop.
            self._retry_later()
            return
        if self._again:
            # Changes arrived during the run: one more run, after the duty-cycle pause.
            self.schedule()
            return
        self._release_background()
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)
        self._verify_next()

    #: pause between two verifications of switches adopted from counts (seconds)
    VERIFY_GAP = 0.05

    def _verify_next(self) -> None:
        """Read back in full one switch whose belief was adopted from matching counts
        (a reconnect), then the next after :attr:`VERIFY_GAP`: the verification a count
        cannot do, spread so that it never becomes a storm of its own."""
        self._verify_call = None
        if self._verifying is not None or not self.running or self._running:
            return
        for dpid, sync in sorted(self.registry.syncs().items()):
            if (getattr(sync, "verified", True) or sync.installed is None or sync.busy
                    or not self._may_write(sync.switch) or self.registry.host_of(dpid) is None):
                continue
            d = self._verifying = sync.verify(self._background_turn)

            def done(result: Any, host: Optional[str] = self.registry.host_of(dpid)) -> None:
                self._verifying = None
                if isinstance(result, failure.Failure):
                    # its belief is unknown now: the next run's pass reads it in full
                    log.info("{host}: verification failed ({e}); read back at the next run",
                             host=host, e=result.getErrorMessage())
                    self.schedule()
                elif result.changed or result.groups:
                    log.info("{host}: verified after a reconnect: +{a} ~{m} -{d} flows repaired",
                             host=host, a=result.added, m=result.modified, d=result.deleted)
                if self.running:
                    self._verify_call = self.reactor.callLater(self.VERIFY_GAP, self._verify_next)
            d.addBoth(done)
            return

    async def _converge_all(self) -> None:
        rev, data, changed = await self._read_state()
        self.runs += 1
        syncs = self.registry.syncs()
        if changed or self._recompile or self.last_snapshot is None:
            self._recompile = False
            await self._compile(rev, data, syncs)
        if self._held:
            return  # every flow depends on the forwarding mode: hold every switch as it is
        upd = self.last_update if self.last_update is not None else Update()
        self.last_update = None  # a delta is handed to its switch once
        work: Dict[str, defer.Deferred] = {}
        applied = _Applied()
        for dpid, sync in syncs.items():
            name = self.registry.host_of(dpid)
            if name is None:
                log.debug("switch {dpid:#x} belongs to no registered host; left alone", dpid=dpid)
                continue
            if name in upd.broken:
                continue  # its own flows failed (logged): leave the switch as it is
            # (taken out: the sync keeps it as its pending work, see FlowSync.apply,
            # and nothing here pins a run's deltas while its bundles are in flight)
            delta = upd.deltas.pop(name, None)
            if not self._may_write(sync.switch):
                # not MASTER now: keep what changed for a return with nobody else in
                # between (_lease_changed); with an unknown belief this does nothing
                if delta or name in upd.full or name in upd.groups:
                    hold = getattr(sync, "hold", None)
                    if hold is not None:
                        hold(delta, full=name in upd.full, groups=name in upd.groups)
                continue
            if name in upd.full and sync.installed is not None and hasattr(sync, "hold"):
                # compiled from scratch (the engine is new, or the switch's own flows
                # failed before): no delta exists, diff the whole set against the belief
                sync.hold(full=True)
            if (delta or name in upd.full or name in upd.groups or sync.installed is None
                    or sync.groups_installed is None or getattr(sync, "held_back", False)):
                groups_due = (name in upd.groups or name in upd.full
                              or sync.groups_installed is None)
                work[name] = defer.ensureDeferred(self._converge_one(name, sync, delta or {}, rev, applied,
                                                                     groups_due))
                # each sync encodes and writes its delta before its first wait: 500 of them
                # in one go would hold the reactor for as long as all of them take
                await self._breathe()
        if work:
            await self._bounded(work)
        applied.close(rev)

    async def _compile(self, rev: int, data: Dict[str, Dict[str, Any]], syncs: Dict[int, Any]) -> None:
        """Build the snapshot and let the engine bring every switch's desired flows to it."""
        # the live port maps: the builder compares them by value and copies what it keeps
        ports = {dpid: sync.switch.ports for dpid, sync in syncs.items()}
        # the records replaced since the last build (None: unknown, look at every one)
        changed, self._changed_keys = self._changed_keys, set()
        built = self._snapshots.build(rev, data, ports, changed=changed)
        snap = built.snapshot
        self._report_refusals(built.refused)
        self.last_snapshot = snap
        self.registry.set_hosts({"name": name, "dpid": host.dpid} for name, host in snap.hosts.items())
        for host, sync in list(self._following.items()):
            if self.registry.host_of(sync.switch.dpid) != host:  # another host's now: its own belief
                sync.stop_following()
                del self._following[host]
        self._held = any(r.kind == "obj:global" for r in built.refused)
        if self._held:
            self._recompile = True  # compile again once it is fixed, whatever else changed
            return
        names = {self.registry.host_of(dpid) for dpid in syncs} - {None}
        upd = Update()
        self.compiles += 1
        # No automatic garbage collection while the engine builds: a cold compile
        # allocates millions of long-lived objects, each 25 % of growth triggered a full
        # collection walking all of them (at 200x4k: 56-127 ms pauses, every one the
        # longest reactor stall; without them the longest slice is 8 ms).  The engine's
        # objects hold no cycles, so nothing waits for the collector meanwhile; a large
        # run is frozen out of later walks below (FREEZE_YOUNG).
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            await self._drive(self.engine.steps(snap, names, upd))
        except Exception as err:  # a bug outside every owner's guard: no switch is touched
            self._stop_following()  # (copied out of the old engine: the syncs' changes were noted)
            self.engine = self._new_engine(self.engine.on_build)  # its state is unknown: start over
            self._recompile = True
            if self._failures.update([("compiler", "", repr(err), repr(err))])[0]:
                log.failure("compiler failed; every switch keeps its flows")
            self.last_update = Update(broken=set(names))
            return
        finally:
            if gc.get_count()[0] >= self.FREEZE_YOUNG:
                gc.freeze()  # before collecting again: the next walks skip what was built
            if collecting:
                gc.enable()
        tables = {"endpoint": snap.endpoints, "network": snap.networks, "host": snap.hosts}
        new, _recovered = self._failures.update(
            (f.kind, f.key, f.reason, repr(tables.get(f.kind, {}).get(f.key))) for f in upd.failed)
        for kind, key, reason in new:
            what = ("its switch keeps the flows it has" if kind == "host"
                    else "its flows are left out, everything else is programmed")
            log.warn("cannot compile {kind} {key} ({reason}); {what}",
                     kind=kind, key=key, reason=reason, what=what)
        self.last_update = upd

    # -- beliefs that follow the engine (sync.Following) ---------------------------
    def _new_engine(self, on_build: Any = None) -> IncrementalCompiler:
        return IncrementalCompiler(on_build, on_change=self._engine_changing, on_reset=self._engine_resetting,
                                   on_settle=self._engine_settled)

    def _new_sync(self, switch: Any) -> Any:
        from contiv_sdn.openflow.sync import FlowSync

        sync = FlowSync(switch, clock=self.reactor)
        sync.follow = lambda: self._follow(sync)
        return sync

    def _follow(self, sync: Any) -> Optional[_EngineView]:
        """A view of the engine's flows for the sync's host, whose desired set it just
        took (None: no host); the engine's changes for that host go to the sync from now."""
        host = self.registry.host_of(sync.switch.dpid)
        if host is None:
            return None
        old = self._following.get(host)
        if old is not None and old is not sync:
            old.stop_following()
        self._following[host] = sync
        return _EngineView(self, host)

    def _engine_changing(self, host: str, ident: Tuple, old: Any) -> None:
        sync = self._following.get(host)
        if sync is not None:
            sync.changing(ident, old)

    def _engine_settled(self, host: str, idents: List[Tuple]) -> None:
        sync = self._following.get(host)
        if sync is not None:
            sync.settled(idents)

    def _engine_resetting(self, host: str) -> None:
        sync = self._following.get(host)
        if sync is not None:
            sync.stop_following()

    def _stop_following(self) -> None:
        for sync in self._following.values():
            sync.stop_following()
        self._following.clear()

    def _report_refusals(self, refused: Iterable[Any]) -> None:
        new, recovered = self._refusals.update(
            (r.kind, r.key, r.reason, r.reason + "\0" + r.fingerprint) for r in refused)
        for kind, key, reason in new:
            what = ("every switch keeps the flows it has" if kind == "obj:global"
                    else "it gets no flows")
            log.warn("stored {kind} {key} is unusable: {reason}; {what} until it is rewritten or deleted",
                     kind=kind, key=key, reason=reason, what=what)
        for kind, key in recovered:
            log.info("stored {kind} {key} is no longer refused", kind=kind, key=key)

    def _bounded(self, work: Dict[str, defer.Deferred]) -> defer.Deferred:
        """Fires when every sync of ``work`` (host -> its pass) has, or after
        :attr:`CONVERGE_WAIT`, whichever is first.  A pass is never cancelled (a sync cut
        in the middle of a bundle would leave its switch unknown), it just stops holding
        up the run.  One timer per run, not one per switch: at 500 switches the timers
        alone were a few per cent of a change's CPU."""
        waiter: defer.Deferred = defer.Deferred()
        left = [len(work)]

        def late() -> None:
            del self._waits[call]
            slow = sorted(host for host, d in work.items() if not d.called)
            log.warn("flow sync to {hosts} still running after {s:.0f} s; the other switches go on",
                     hosts=", ".join(slow[:_Applied.EACH]) + (f" and {len(slow) - _Applied.EACH} more"
                                                              if len(slow) > _Applied.EACH else ""),
                     s=self.CONVERGE_WAIT)
            waiter.callback(None)

        call = self.reactor.callLater(self.CONVERGE_WAIT, late)
        self._waits[call] = waiter

        def one(result: Any) -> None:
            if isinstance(result, failure.Failure):  # _converge_one handles what it expects
                log.failure("flow sync failed", result)
            left[0] -= 1
            if left[0] == 0 and call.active():
                call.cancel()
                del self._waits[call]
                waiter.callback(None)

        for d in work.values():
            d.addBoth(one)
        return waiter

    async def _converge_one(self, host: str, sync: Any, delta: Dict, rev: int,
                            applied: Optional["_Applied"] = None, groups_due: bool = True) -> None:
        try:
            result = await sync.apply(delta, lambda: self.engine.table(host),
                                      groups=(lambda: self.engine.groups(host)) if groups_due else None,
                                      counts=lambda: self._counts_of(host))
        except NotMaster:
            # demoted during the pass: nothing was committed; the FlowSync kept its
            # belief and held the work back (FlowSync.hold) for a same-holder return,
            # or forgets both when another holder shows up (_assert_roles)
            return
        except Exception as e:
            expected = isinstance(e, (OpenFlowError, SwitchDisconnected))
            what = f"{type(e).__name__}: {e}"
            if self._sync_failed.get(host) != what:
                self._sync_failed[host] = what
                if expected:  # the switch refused or went away: its words are the news
                    log.warn("flow sync to {host} failed: {what}; retrying every second",
                             host=host, what=what)
                else:
                    log.failure("flow sync to {host} failed; retrying every second", host=host)
            self._retry = True
            if not self._running:  # finished after its run stopped waiting for it
                self._retry_later()
            return
        if self._sync_failed.pop(host, None) is not None:
            log.info("flow sync to {host} works again", host=host)
        if any(getattr(result, k, 0) for k in ("added", "modified", "deleted", "groups")):
            if applied is None or not applied.add(host, result):
                _log_applied(host, rev, result)

    def _counts_of(self, host: str) -> Optional[Tuple[Dict[int, int], Dict[int, int]]]:
        kinds, ports = self.engine.counts(host), self.engine.port_counts(host)
        return None if kinds is None or ports is None else (kinds, ports)

    def _retry_later(self) -> None:
        if self.running and (self._pending is None or not self._pending.active()):
            self._pending = self.reactor.callLater(1.0, self._start_run)
