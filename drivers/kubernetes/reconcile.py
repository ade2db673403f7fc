"""Redis converged from what the reflectors hold — level-triggered.

A notification only marks work: ``replaced(kind)`` (after a list) marks the whole kind,
``changed(kind, key)`` one object, a changed endpoint record (the store's change feed)
its pod.  One worker drains the marks by comparing the reflector's cache with Redis and
writing the difference, each write one store transaction:

* ``k8sNamespace`` / ``k8sNetworkPolicy`` / ``k8sService`` / ``k8sEndpointSlice``
  records mirror the cache; after a list,
  records the API server no longer has are deleted (a netmaster that was down, or a
  watch that missed a delete, repairs itself on its next list);
* the endpoint records of a pod (``k8sNamespace``/``k8sPod``, stamped by the CNI path;
  and ``k8sPodUID`` when known, so a record of an earlier pod of the same name is left
  alone) get the pod's labels and named ports; an endpoint created after the pod's last
  event is caught by the change feed.  Endpoints are never deleted here: the host's
  netplugin owns them (CNI DEL, or its reconciler when the sandbox is gone).

A Redis failure keeps the marks and retries with back-off (logged once, its end once).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Set, Tuple

from twisted.internet import defer, reactor as default_reactor, task
from twisted.logger import Logger

from contiv_sdn.store import Store, StoreError, View, transact
from drivers.kubernetes.objects import (NETPOL_KIND, NS_KIND, SLICE_KIND, SVC_KIND,
                                        endpoint_is_of, endpoint_update, namespace_record,
                                        netpol_record, pod_of_endpoint, service_record,
                                        slice_record)

log = Logger()

_RECORDS: Dict[str, Tuple[str, Callable[[Dict[str, Any]], Dict[str, Any]]]] = {
    "Namespace": (NS_KIND, namespace_record),
    "NetworkPolicy": (NETPOL_KIND, netpol_record),
    "Service": (SVC_KIND, service_record),
    "EndpointSlice": (SLICE_KIND, slice_record),
}


class Reconciler:
    """Marks and one worker; ``caches[kind]`` is the reflector of that kind."""

    def __init__(self, store: Store, reflectors: Dict[str, Any], reactor: Any = None,
                 max_backoff: float = 5.0):
        self.store = store
        self.reflectors = reflectors
        self.reactor = reactor or default_reactor
        self.max_backoff = max_backoff
        self._full: Set[str] = set()
        self._dirty: Set[Tuple[str, str]] = set()
        self._worker: Optional[defer.Deferred] = None
        self._failing = ""
        self._stopped = False
        #: passes done (for tests: a pass after the last mark means converged)
        self.passes = 0

    # -- marks (Listener) -------------------------------------------------
    def replaced(self, kind: str) -> None:
        self._full.add(kind)
        self._kick()

    def changed(self, kind: str, key: str) -> None:
        self._dirty.add((kind, key))
        self._kick()

    def endpoint_changed(self, ep_id: str) -> None:
        self._dirty.add(("endpoint", ep_id))
        self._kick()

    def all_endpoints(self) -> None:
        """The change feed (re)connected: anything may have been missed."""
        self._full.add("Pod")
        self._kick()

    def _kick(self) -> None:
        if self._worker is None and not self._stopped:
            d = defer.ensureDeferred(self._drain())
            d.addErrback(lambda f: log.failure("kubernetes reconciler failed", f))
            # a pass with nothing to await has already finished (and cleared _worker)
            self._worker = None if d.called else d

    async def stop(self) -> None:
        self._stopped = True
        if self._worker is not None:
            try:
                await self._worker
            except Exception:
                pass

    def idle(self) -> bool:
        return self._worker is None and not self._full and not self._dirty

    # -- the worker -------------------------------------------------------
    async def _drain(self) -> None:
        delay = 0.1
        try:
            while (self._full or self._dirty) and not self._stopped:
                full, self._full = self._full, set()
                dirty, self._dirty = self._dirty, set()
                try:
                    for kind in sorted(full):
                        await self._sync_kind(kind)
                    for kind, key in sorted(dirty):
                        if kind not in full:
                            await self._sync_one(kind, key)
                except StoreError as e:
                    self._full |= full
                    self._dirty |= dirty
                    if not self._failing:
                        log.warn("cannot write Kubernetes state to Redis ({err}); retrying",
                                 err=str(e))
                    self._failing = str(e)
                    await task.deferLater(self.reactor, delay, lambda: None)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                if self._failing:
                    log.info("Kubernetes state written to Redis again")
                    self._failing = ""
                delay = 0.1
                self.passes += 1
        finally:
            self._worker = None

    async def _sync_kind(self, kind: str) -> None:
        refl = self.reflectors.get(kind)
        if refl is None or not refl.synced:
            return
        if kind == "Pod":
            await self._sync_all_endpoints()
            return
        store_kind, record = _RECORDS[kind]
        desired = {key: record(obj) for key, obj in refl.cache.items()}

        async def fn(view: View) -> int:
            current = await view.list(store_kind)
            n = 0
            for key in current:
                if key not in desired:
                    view.txn.delete(store_kind, key)
                    n += 1
            for key, rec in desired.items():
                if current.get(key) != rec:
                    view.txn.put(store_kind, key, rec)
                    n += 1
            return n

        n = await transact(self.store, fn)
        if n:
            log.info("{kind}: {n} record(s) brought in line with the API server", kind=kind, n=n)

    async def _sync_one(self, kind: str, key: str) -> None:
        if kind == "endpoint":
            await self._sync_endpoint(key)
            return
        refl = self.reflectors.get(kind)
        if refl is None or not refl.synced:
            return
        if kind == "Pod":
            pod = refl.cache.get(key)
            if pod is None:
                return  # deleted: its endpoints go with CNI DEL
            for ep_id, ep in (await self.store.list("endpoint")).items():
                if pod_of_endpoint(ep) == key:
                    await self._sync_endpoint(ep_id)
            return
        store_kind, record = _RECORDS[kind]
        obj = refl.cache.get(key)
        want = record(obj) if obj is not None else None

        async def fn(view: View) -> None:
            cur = await view.get(store_kind, key)
            if cur == want:
                return
            if want is None:
                view.txn.delete(store_kind, key)
            else:
                view.txn.put(store_kind, key, want)

        await transact(self.store, fn)

    async def _sync_all_endpoints(self) -> None:
        for ep_id, ep in (await self.store.list("endpoint")).items():
            if pod_of_endpoint(ep) is not None:
                await self._sync_endpoint(ep_id)

    async def _sync_endpoint(self, ep_id: str) -> None:
        pods = self.reflectors.get("Pod")
        if pods is None or not pods.synced:
            return

        async def fn(view: View) -> None:
            ep = await view.get("endpoint", ep_id)
            if ep is None:
                return
            key = pod_of_endpoint(ep)
            pod = pods.cache.get(key) if key else None
            if pod is None or not endpoint_is_of(ep, pod):
                return  # no such pod, or the record of an earlier pod of that name
            updated = endpoint_update(ep, pod)
            if updated is not None:
                view.txn.put("endpoint", ep_id, updated)

        await transact(self.store, fn)
