"""The central controller: keeps every switch's flows equal to the compiled state.

Level-triggered (architecture principle 3): any change notification, a
(re)subscription, a switch connecting or its ports changing only *schedules* a
run; a run reads one consistent snapshot from Redis, compiles the flows of each
connected switch and lets that switch's :class:`FlowSync` send the difference.
Runs never overlap; changes that arrive during a run cause exactly one more run,
so a burst of a thousand changes costs a couple of compilations, not a thousand.

The blast radius of bad state is one owner.  A stored record that is not JSON or
has a field of the wrong type is refused by :func:`build_checked`; an owner
(endpoint, network, host) whose compilation raises anyway is left out by the
compiler; both are logged once, briefly (kind, key, reason), and logged again
only if the record changes and is still bad.  Everything else keeps being
programmed.  A switch whose own flows cannot be compiled is left as it is (an
empty flow set would wipe it), a switch whose sync fails is retried alone, and
a run waits for no switch longer than :attr:`Controller.CONVERGE_WAIT`.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from contiv_sdn.controller.snapshot import SNAPSHOT_KINDS, build_checked, parse_record
from contiv_sdn.openflow.protocol import OpenFlowError, SwitchDisconnected
from contiv_sdn.pipeline.compiler import Compiled, compile_hosts
from contiv_sdn.store import keys as K

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


class Controller(Service):
    #: Coalescing delay: changes that land within this window share one run.
    DEBOUNCE = 0.02
    MAX_DELAY = 0.5
    #: How often every switch's flows are read back and compared, to repair flows
    #: changed behind our back (an operator's ``ovs-ofctl del-flows``, a switch bug).
    AUDIT_INTERVAL = 30.0
    #: The longest a run waits for one switch's sync.  A switch that takes longer keeps
    #: syncing on its own (its FlowSync coalesces later calls); the others go on.
    CONVERGE_WAIT = 30.0

    def __init__(self, store: Any, listen: str = "tcp:6653", reactor: Any = None):
        from twisted.internet import reactor as default_reactor
        from contiv_sdn.openflow.registry import SwitchRegistry

        self.store = store
        self.listen = listen
        self.reactor = reactor or default_reactor
        self.registry = SwitchRegistry()
        self.registry.on_switch_up = self._switch_up
        self.registry.on_switch_down = self._switch_down
        self.registry.on_ports_changed = lambda switch: self.schedule()
        self._syncs: Dict[int, Any] = {}
        self._pending: Optional[Any] = None
        self._running = False
        #: host -> the last sync failure logged for it (a retry every second that fails
        #: the same way is not logged again)
        self._sync_failed: Dict[str, str] = {}
        self._again = False
        self._port = None
        self.runs = 0
        self.last_snapshot = None
        self._idle: list = []
        self._last_duration = 0.0
        self._mirror: Optional[Dict[str, Dict[str, dict]]] = None
        self._dirty: Set[Tuple[str, str]] = set()
        self._need_full = True
        self._rev = 0
        self._audit: Optional[task.LoopingCall] = None
        self._retry = False
        self._refusals = ReportOnce()
        self._failures = ReportOnce()
        #: the timers of runs waiting for switches (see _bounded), cancelled at stop
        self._waits: Dict[Any, defer.Deferred] = {}

    # -- life cycle ----------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        from contiv_sdn.openflow.protocol import OpenFlowFactory

        self.store.subscribe(self._changed, self._resync)
        self._audit = task.LoopingCall(self.audit)
        self._audit.clock = self.reactor
        self._audit.start(self.AUDIT_INTERVAL, now=False)
        factory = OpenFlowFactory(self.registry)
        d = serverFromString(self.reactor, self.listen).listen(factory)

        def listening(port: Any) -> None:
            self._port = port
            log.info("OpenFlow controller listening on {where}", where=self.listen)

        def failed(f: Any) -> None:
            log.failure("cannot listen for switches on {where}", f, where=self.listen)
            return f

        d.addCallbacks(listening, failed)
        self.schedule()

    def stopService(self) -> Any:
        super().stopService()
        if self._audit is not None and self._audit.running:
            self._audit.stop()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        for call, waiter in list(self._waits.items()):  # a stopped controller waits for nobody
            call.cancel()
            waiter.callback(None)
        self._waits.clear()
        if self._port is not None:
            return defer.maybeDeferred(self._port.stopListening)
        return None

    def audit(self) -> None:
        """Forget what we believe the switches hold, so the next run reads them back.

        Level-triggered control includes the switch side: a flow removed or changed
        behind the controller's back is found and repaired within one interval.  The
        Redis mirror is re-read in full too, for the same reason.
        """
        for sync in self._syncs.values():
            sync.invalidate()
        self._need_full = True
        self.schedule()

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

    async def _read_state(self) -> Tuple[int, Dict[str, Dict[str, dict]]]:
        """The state the compiler needs, kept as a mirror of Redis.

        A full read costs time proportional to everything stored, so it is done only
        at start, after a resubscription and at each audit; otherwise only the
        records named by change notifications since the last run are read.  A
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
            self._mirror = {kind: {key: parse_record(raw) for key, raw in records.items()}
                            for kind, records in zip(kinds, hashes)}
            self._rev = max(self._rev, rev)
            return self._rev, self._mirror
        dirty, self._dirty = list(self._dirty), set()
        try:
            values = await defer.gatherResults(
                [defer.ensureDeferred(self.store.get_raw(kind, key)) for kind, key in dirty],
                consumeErrors=True)
        except Exception:
            self._need_full = True
            raise
        for (kind, key), raw in zip(dirty, values):
            if raw is None:
                self._mirror.get(kind, {}).pop(key, None)
            else:
                self._mirror.setdefault(kind, {})[key] = parse_record(raw)
        return self._rev, self._mirror

    # -- switches --------------------------------------------------------------
    def _switch_up(self, switch: Any) -> None:
        from contiv_sdn.openflow.sync import FlowSync

        self._syncs[switch.dpid] = FlowSync(switch)
        log.info("switch {dpid:#x} connected", dpid=switch.dpid)
        self.schedule()

    def _switch_down(self, switch: Any) -> None:
        if self._syncs.get(switch.dpid) is not None and getattr(
                self._syncs[switch.dpid], "switch", switch) is switch:
            del self._syncs[switch.dpid]
        log.info("switch {dpid:#x} disconnected", dpid=switch.dpid)

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
            # half the reactor on recompiling.  Bounded so flows still follow in < 1 s.
            delay = max(self.DEBOUNCE, min(self.MAX_DELAY, self._last_duration))
            self._pending = self.reactor.callLater(delay, self._start_run)

    def when_idle(self) -> defer.Deferred:
        """Fires after the current (or next scheduled) run finished: for tests and tools."""
        if not self._running and (self._pending is None or not self._pending.active()):
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        return d

    def _start_run(self) -> None:
        self._pending = None
        defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        self._running = True
        self._again = False
        self._retry = False
        started = self.reactor.seconds()
        try:
            await self._converge_all()
        except Exception:
            log.failure("controller run failed; retrying in 1 s")
            self._retry = True
        finally:
            self._running = False
            self._last_duration = self.reactor.seconds() - started
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
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    async def _converge_all(self) -> None:
        rev, data = await self._read_state()
        switches = dict(self._syncs)
        ports = {dpid: dict(sync.switch.ports) for dpid, sync in switches.items()}
        built = build_checked(rev, data, ports)
        snap = built.snapshot
        self._report_refusals(built.refused)
        self.last_snapshot = snap
        self.registry.set_hosts({"name": name, "dpid": host.dpid}
                                for name, host in snap.hosts.items())
        self.runs += 1
        names: Dict[int, str] = {}
        for dpid in switches:
            name = self.registry.host_of(dpid)
            if name is None:
                log.debug("switch {dpid:#x} belongs to no registered host; left alone", dpid=dpid)
            else:
                names[dpid] = name
        compiled = self._compile(snap, names.values())
        if any(r.kind == "obj:global" for r in built.refused):
            return  # every flow depends on the forwarding mode: hold every switch as it is
        work = []
        for dpid, name in names.items():
            desired = compiled.flows.get(name)
            if desired is None:
                continue  # its own flows failed (logged): leave the switch as it is
            d = defer.ensureDeferred(self._converge_one(name, switches[dpid], desired, rev))
            work.append(self._bounded(d, name))
        if work:
            await defer.DeferredList(work, consumeErrors=True)

    def _compile(self, snap: Any, names: Iterable[str]) -> Compiled:
        """Compile every named host; what the compiler left out is logged once."""
        try:
            compiled = compile_hosts(snap, names)
        except Exception as err:  # a bug outside every owner's guard: no switch is touched
            if self._failures.update([("compiler", "", repr(err), repr(err))])[0]:
                log.failure("compiler failed; every switch keeps its flows")
            return Compiled({}, ())
        tables = {"endpoint": snap.endpoints, "network": snap.networks, "host": snap.hosts}
        new, _recovered = self._failures.update(
            (f.kind, f.key, f.reason, repr(tables.get(f.kind, {}).get(f.key))) for f in compiled.failed)
        for kind, key, reason in new:
            what = ("its switch keeps the flows it has" if kind == "host"
                    else "its flows are left out, everything else is programmed")
            log.warn("cannot compile {kind} {key} ({reason}); {what}",
                     kind=kind, key=key, reason=reason, what=what)
        return compiled

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

    def _bounded(self, d: defer.Deferred, host: str) -> defer.Deferred:
        """Fires when ``d`` does or after :attr:`CONVERGE_WAIT`, whichever is first;
        ``d`` itself is never cancelled (a sync cut in the middle of a bundle would
        leave its switch unknown), it just stops holding up the other switches."""
        waiter: defer.Deferred = defer.Deferred()

        def late() -> None:
            del self._waits[call]
            log.warn("flow sync to {host} still running after {s:.0f} s; the other switches go on",
                     host=host, s=self.CONVERGE_WAIT)
            waiter.callback(None)

        call = self.reactor.callLater(self.CONVERGE_WAIT, late)
        self._waits[call] = waiter

        def done(result: Any) -> Any:
            if call.active():
                call.cancel()
                del self._waits[call]
                waiter.callback(None)
            return result

        d.addBoth(done)
        return waiter

    async def _converge_one(self, host: str, sync: Any, desired: frozenset, rev: int) -> None:
        try:
            result = await sync.converge(desired)
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
        if any(getattr(result, k, 0) for k in ("added", "modified", "deleted")):
            log.info("{host}: rev {rev}: +{a} ~{m} -{d} flows", host=host, rev=rev,
                     a=result.added, m=result.modified, d=result.deleted)

    def _retry_later(self) -> None:
        if self.running and (self._pending is None or not self._pending.active()):
            self._pending = self.reactor.callLater(1.0, self._start_run)
