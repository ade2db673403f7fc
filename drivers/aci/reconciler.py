"""Keeps the APIC equal to the intent: a level-triggered reconciler (a netmaster child service).

Why level-triggered: Contiv's aci-gw was handed whole app-profiles once, so a
call lost, an APIC restored from backup or an operator's edit left the fabric
wrong until the next change.  Here every pass recomputes the whole desired MO
tree from Redis (:func:`drivers.aci.mapping.desired`, pure) and converges the
APIC to it, whatever happened before.

Fewest calls.  The reconciler keeps a *belief* of what the APIC holds in each
tenant it manages (every MO of the classes we write, read with one subtree
query per tenant).  A pass diffs desired against belief and sends, per tenant
that differs, **one** POST at ``uni/tn-<tenant>`` whose nested children carry
only the MOs to create or change (with their attributes) and the ones to delete
(``status: deleted``); ancestors appear with their ``dn`` only, which changes
nothing.  The belief is updated from what was sent.  So an intent change costs
one call per tenant it touches (one rule: one POST of one ``vzEntry``), not a
re-push.  The belief is re-read (1 class query for our tenants + 1 subtree
query per tenant) at start, after any failure, and every
:attr:`Reconciler.audit_interval` seconds: that read is what finds drift (an MO
changed or deleted behind our back) and bounds its repair to one interval.

Only our objects are touched.  Everything we create carries ``annotation =
drivers.aci.mo.MARK``.  An MO that exists without the mark (the operator made
it, or made one of the same name first) is never modified or deleted; we only
add our children under it.  Relations (``fvRs*``, ``vzRs*``) and ``vzAny`` belong
to their parent.  An MO of ours that is no longer wanted is deleted as a whole
subtree unless an operator's object lives below it; then only our objects in
it go, it stays, and that is logged once.

Failures: a POST the APIC refuses is logged once (tenant, APIC text) and
retried with back-off after re-reading that tenant; an unreachable APIC
(restart, network) is retried with back-off (0.5 s doubling to 30 s) and the
whole belief is re-read once it answers, since a restarted APIC may have lost
or kept anything.  Login, token refresh and re-login are the client's
(:mod:`drivers.aci.client`).

Only while the global ``networkInfraType`` is ``aci`` is anything mirrored;
switching it away stops the reconciler without deleting what it made.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from drivers.aci import mapping
from drivers.aci.client import ApicClient, ApicError, ApicUnavailable
from drivers.aci.mo import ATTACHED, CLASSES, MARK, Mo, parent_dn, split_dn, tenant_of

log = Logger()

#: store kinds whose change can change the desired tree
RELEVANT = frozenset({"obj:global", "obj:tenant", "obj:network", "obj:endpointGroup",
                      "obj:policy", "obj:rule", "obj:appProfile", "obj:extContractsGroup",
                      "obj:aciGw", "network", "endpointGroup"})
#: the classes read back under a tenant (everything we may write there)
READ_CLASSES = ",".join(sorted(c for c in CLASSES if c != "polUni"))

Belief = Dict[str, Tuple[str, Dict[str, str]]]
Op = Tuple[str, str, str, Dict[str, str]]  # ("set"|"delete", dn, class, attributes)


def _owned(dn: str, have: Belief) -> bool:
    """Ours: marked, or a relation/vzAny under an MO that is ours."""
    while True:
        cur = have.get(dn)
        if cur is None:
            return False
        if cur[1].get("annotation") == MARK:
            return True
        if cur[0] not in ATTACHED:
            return False
        dn = parent_dn(dn)


def plan(want: Dict[str, Mo], have: Belief) -> Tuple[List[Op], List[str], List[Tuple[str, str]]]:
    """(ops, foreign MOs left alone, (kept MO, why)) to turn ``have`` into ``want``.

    Pure; ``want`` and ``have`` are one tenant's MOs.  Sets carry only the
    attributes that differ (plus the naming ones, which identify the MO).
    """
    ops: List[Op] = []
    foreign: List[str] = []
    for dn in sorted(want, key=lambda d: len(split_dn(d))):
        mo = want[dn]
        cur = have.get(dn)
        if cur is None:
            ops.append(("set", dn, mo.cls, dict(mo.attrs)))
            continue
        if not _owned(dn, have) and not (mo.cls in ATTACHED and _owned(parent_dn(dn), have)):
            foreign.append(dn)
            continue
        diff = {k: v for k, v in mo.attrs.items() if cur[1].get(k) != v}
        if diff:
            for p in CLASSES[mo.cls].naming:
                diff[p] = mo.attrs[p]
            ops.append(("set", dn, mo.cls, diff))
    # deletions: ours, not wanted, topmost, and not holding someone else's objects
    blocked: Dict[str, str] = {}
    for dn, (cls, _) in have.items():
        if cls in ATTACHED or _owned(dn, have):
            continue
        anc = parent_dn(dn)
        while anc and anc not in blocked:
            blocked[anc] = dn
            anc = parent_dn(anc)
    cands = {dn for dn in have if dn not in want and _owned(dn, have)}
    kept: List[Tuple[str, str]] = []
    for dn in sorted(cands, key=lambda d: len(split_dn(d))):
        if dn in blocked:
            kept.append((dn, f"holds {blocked[dn]}, which contiv-sdn did not create"))
            continue
        anc = parent_dn(dn)
        covered = False
        while anc:
            if anc in cands and anc not in blocked:
                covered = True
                break
            anc = parent_dn(anc)
        if not covered:
            ops.append(("delete", dn, have[dn][0], {}))
    return ops, foreign, kept


def payload(tenant: str, ops: List[Op], want: Dict[str, Mo], have: Belief) -> dict:
    """One nested ``fvTenant`` MO carrying ``ops`` (ancestors by ``dn`` only)."""
    root = f"uni/tn-{tenant}"
    nodes: Dict[str, dict] = {}

    def cls_of(dn: str) -> str:
        if dn in want:
            return want[dn].cls
        return have[dn][0]

    def node(dn: str) -> dict:
        n = nodes.get(dn)
        if n is not None:
            return n
        n = {"attributes": {"dn": dn}}
        nodes[dn] = n
        if dn != root:
            parent = node(parent_dn(dn))
            parent.setdefault("children", []).append({cls_of(dn): n})
        return n

    for op, dn, cls, attrs in ops:
        n = node(dn)
        if op == "delete":
            n["attributes"] = {"dn": dn, "status": "deleted"}
            n.pop("children", None)
        else:
            n["attributes"].update(attrs)
    return {cls_of(root): node(root)}


class Reconciler(Service):
    #: changes landing within this window share one pass
    DEBOUNCE = 0.05
    #: first and longest wait before retrying a failed pass
    RETRY_MIN = 0.5
    RETRY_MAX = 30.0

    def __init__(self, store: Any, client: ApicClient, audit_interval: float = 30.0,
                 reactor: Any = None):
        from twisted.internet import reactor as default_reactor

        self.store = store
        self.client = client
        self.audit_interval = audit_interval
        self.reactor = reactor or default_reactor
        #: dn -> (class, attributes) of what the APIC holds, for tenants in ``_known``
        self.belief: Belief = {}
        self._known: Set[str] = set()
        self._discover = True
        self._reread: Set[str] = set()
        self._sub = None
        self._pending = None
        self._audit = None
        self._running = False
        self._again = False
        self._retry = 0.0
        self._reported: Dict[Tuple[str, str], str] = {}
        self._idle: List[defer.Deferred] = []
        #: the last pass found nothing left to do and nothing failed
        self.in_sync = False
        #: the store revision the last clean pass mirrored
        self.synced_rev = -1
        self.passes = 0
        self.active = False

    # -- service ----------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._sub = self.store.subscribe(self._changed, lambda: self.schedule(discover=True))
        self._audit = self.reactor.callLater(self.audit_interval, self._audit_tick)
        self.schedule(discover=True)

    def stopService(self):
        super().stopService()
        for call in (self._pending, self._audit):
            if call is not None and call.active():
                call.cancel()
        self._pending = self._audit = None
        d = defer.ensureDeferred(self._stop())
        return d

    async def _stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.stop()
            except Exception:
                pass
        await self.client.close()

    def _audit_tick(self) -> None:
        self._audit = self.reactor.callLater(self.audit_interval, self._audit_tick)
        self.schedule(discover=True)

    def _changed(self, kind: str, key: str, op: str, rev: int) -> None:
        if kind in RELEVANT:
            self.in_sync = False
            self.schedule()

    # -- scheduling -----------------------------------------------------------------
    def schedule(self, discover: bool = False, delay: Optional[float] = None) -> None:
        """Ask for a pass (coalesced); ``discover`` re-reads the APIC first."""
        if discover:
            self._discover = True
        if not self.running:
            return
        if self._running:
            self._again = True
            return
        wait = self.DEBOUNCE if delay is None else delay
        if self._pending is not None and self._pending.active():
            if self._pending.getTime() - self.reactor.seconds() <= wait:
                return
            self._pending.cancel()
        self._pending = self.reactor.callLater(wait, self._start_pass)

    def _start_pass(self) -> None:
        self._pending = None
        self._running = True
        d = defer.ensureDeferred(self._pass())
        d.addErrback(lambda f: log.failure("ACI reconcile pass failed", f) or False)
        d.addCallback(self._pass_done)

    def _pass_done(self, clean: bool) -> None:
        self._running = False
        self.passes += 1
        if not self.running:
            return
        if clean:
            self._retry = 0.0
            if self._again:
                self._again = False
                self.schedule()
            else:
                for d in self._idle:
                    d.callback(None)
                self._idle = []
            return
        self._again = False
        self._retry = min(self.RETRY_MAX, max(self.RETRY_MIN, self._retry * 2))
        self.schedule(delay=self._retry)

    def when_idle(self) -> defer.Deferred:
        """Fires after the next clean pass with nothing queued (for tests and tools)."""
        d = defer.Deferred()
        self._idle.append(d)
        if not self._running and self._pending is None and self.running:
            self.schedule()
        return d

    # -- one pass --------------------------------------------------------------------
    async def _pass(self) -> bool:
        """Converge once; True when the APIC is known to equal the intent."""
        try:
            rev, kinds = await self.store.snapshot()
        except Exception as e:
            self._report("store", "snapshot", f"cannot read intent from Redis: {e}")
            return False
        g = (kinds.get("obj:global") or {}).get("global") or {}
        if g.get("networkInfraType") != "aci":
            if self.active:
                log.info("networkInfraType is {infra!r}, not aci: the APIC is no longer "
                         "kept in step (nothing was deleted)", infra=g.get("networkInfraType"))
            self.active = False
            self.in_sync, self.synced_rev = True, rev
            return True
        if not self.active:
            log.info("ACI mode: mirroring intent into the APIC at {url}", url=self.client.url)
        self.active = True
        for key, why in mapping.skipped(kinds) + mapping.skipped_ext(kinds):
            self._report("not mirrored", key, why)
        want = mapping.desired(kinds)
        by_tenant: Dict[str, Dict[str, Mo]] = {}
        for dn, mo in want.items():
            by_tenant.setdefault(tenant_of(dn) or "", {})[dn] = mo
        try:
            await self._read(set(by_tenant))
        except (ApicError, ApicUnavailable) as e:
            self._report("apic", "read", str(e))
            self._discover = True
            return False
        clean = True
        for tenant in sorted(set(by_tenant) | self._known):
            twant = by_tenant.get(tenant, {})
            have = {dn: v for dn, v in self.belief.items() if tenant_of(dn) == tenant}
            ops, foreign, kept = plan(twant, have)
            for dn in foreign:
                self._report("left alone", dn, "exists without our annotation "
                                               f"{MARK!r}: not modified")
            for dn, why in kept:
                self._report("kept", dn, why)
            if not ops:
                self._clear("apic", f"tn-{tenant}")
                continue
            try:
                await self.client.post(f"uni/tn-{tenant}", payload(tenant, ops, twant, have))
            except ApicUnavailable as e:
                self._report("apic", "unavailable", str(e))
                self._discover = True
                return False
            except ApicError as e:
                self._report("apic", f"tn-{tenant}", str(e))
                self._reread.add(tenant)
                clean = False
                continue
            self._clear("apic", f"tn-{tenant}")
            self._clear("apic", "unavailable")
            self._apply(ops)
        if clean:
            self.in_sync, self.synced_rev = True, rev
        return clean

    async def _read(self, wanted: Set[str]) -> None:
        """Refresh the belief: everything on discovery, else tenants not known yet."""
        if self._discover:
            found = await self.client.get_class(
                "fvTenant", query_target_filter=f'eq(fvTenant.annotation,"{MARK}")')
            ours = set()
            for item in found:
                attrs = (item.get("fvTenant") or {}).get("attributes") or {}
                if isinstance(attrs.get("name"), str):
                    ours.add(attrs["name"])
            todo = wanted | ours | self._known
            self.belief = {}
            self._known = set()
        else:
            todo = (wanted - self._known) | self._reread
        for tenant in sorted(todo):
            await self._read_tenant(tenant)
        self._discover = False
        self._reread = set()

    async def _read_tenant(self, tenant: str) -> None:
        items = await self.client.get_mo(f"uni/tn-{tenant}", query_target="subtree",
                                         target_subtree_class=READ_CLASSES)
        for dn in [d for d in self.belief if tenant_of(d) == tenant]:
            del self.belief[dn]
        for item in items:
            if not isinstance(item, dict) or len(item) != 1:
                continue
            (cls, body), = item.items()
            attrs = (body or {}).get("attributes") if isinstance(body, dict) else None
            if cls not in CLASSES or not isinstance(attrs, dict) or \
                    not isinstance(attrs.get("dn"), str):
                continue
            self.belief[attrs["dn"]] = (cls, {k: v for k, v in attrs.items()
                                              if isinstance(v, str)})
        self._known.add(tenant)

    def _apply(self, ops: List[Op]) -> None:
        for op, dn, cls, attrs in ops:
            if op == "delete":
                prefix = dn + "/"
                for d in [d for d in self.belief if d == dn or d.startswith(prefix)]:
                    del self.belief[d]
            else:
                cur = self.belief.get(dn)
                merged = dict(cur[1]) if cur else {}
                merged.update(attrs)
                self.belief[dn] = (cls, merged)

    # -- reporting: each problem once while it lasts -----------------------------------
    def _report(self, kind: str, key: str, why: str) -> None:
        if self._reported.get((kind, key)) == why:
            return
        self._reported[(kind, key)] = why
        log.warn("ACI {kind} {key}: {why}", kind=kind, key=key, why=why)

    def _clear(self, kind: str, key: str) -> None:
        if self._reported.pop((kind, key), None) is not None:
            log.info("ACI {kind} {key}: fine again", kind=kind, key=key)
