"""One reflector per kind: list, then watch from the list's resourceVersion.

The reflector keeps a cache of the kind's objects (decoded through
:mod:`drivers.kubernetes.objects`) and tells its listener what changed:
``replaced(kind)`` after every (re)list — the cache then is exactly what the server
has, and anything a consumer holds that is not in it is gone — and
``changed(kind, key)`` for every watch event.  Consumers converge from the cache, so
a missed or repeated notification costs nothing but a redundant pass.

Robustness, as client-go's reflector:

* the watch asks for bookmarks, and every event or bookmark advances the
  resourceVersion it resumes from;
* a watch the server ends (``timeoutSeconds``) or a connection that breaks is resumed
  from that resourceVersion **without a relist**; failures back off (doubling, at
  most ``max_backoff``) and are logged once, their end once;
* ``410 Gone`` (the version fell out of the server's history) relists.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Optional, Protocol

from twisted.internet import defer, reactor as default_reactor, task
from twisted.logger import Logger

from contiv_sdn.model.errors import DecodeError
from drivers.kubernetes.client import ApiError, Gone, KubeClient, StreamCut
from drivers.kubernetes.objects import decode, object_key

log = Logger()

#: kind → its cluster-wide list/watch path
PATHS = {
    "Namespace": "/api/v1/namespaces",
    "Pod": "/api/v1/pods",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies",
    "Service": "/api/v1/services",
    "EndpointSlice": "/apis/discovery.k8s.io/v1/endpointslices",
}


class Listener(Protocol):
    def replaced(self, kind: str) -> None: ...

    def changed(self, kind: str, key: str) -> None: ...


class Reflector:
    """List+watch of one kind into :attr:`cache` (key → decoded object)."""

    def __init__(self, client: KubeClient, kind: str, listener: Listener,
                 path: Optional[str] = None, params: Optional[Dict[str, str]] = None,
                 watch_timeout: int = 300, backoff: float = 0.2, max_backoff: float = 10.0,
                 reactor: Any = None):
        self.client = client
        self.kind = kind
        self.path = path or PATHS[kind]
        self.params = dict(params or {})
        self.listener = listener
        self.watch_timeout = watch_timeout
        self.backoff0 = backoff
        self.max_backoff = max_backoff
        self.reactor = reactor or default_reactor
        self.cache: Dict[str, Dict[str, Any]] = {}
        #: whether a list has completed (before that the cache says nothing)
        self.synced = False
        self.resource_version = ""
        #: counters, for tests and logs: lists done, watches started
        self.lists = 0
        self.watches = 0
        self._running = False
        self._loop: Optional[defer.Deferred] = None
        self._cancel_watch: Optional[Any] = None
        self._sleep: Optional[defer.Deferred] = None
        self._failing = ""
        self._refused: Dict[str, str] = {}

    def start(self) -> None:
        self._running = True
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(lambda f: log.failure("the {kind} watch stopped", f,
                                                    kind=self.kind))

    async def stop(self) -> None:
        self._running = False
        if self._cancel_watch is not None:
            self._cancel_watch()
        if self._sleep is not None and not self._sleep.called:
            self._sleep.cancel()
        if self._loop is not None:
            try:
                await self._loop
            except defer.CancelledError:
                pass

    # -- the loop ---------------------------------------------------------
    async def _run(self) -> None:
        delay = self.backoff0
        while self._running:
            try:
                if not self.resource_version:
                    await self._list()
                began = self.reactor.seconds()
                progressed = await self._watch()
                if progressed:
                    delay = self.backoff0
                elif self.reactor.seconds() - began < 1.0:
                    # ended at once with nothing: do not spin against such a server
                    await self._pause(delay)
                    delay = min(delay * 2, self.max_backoff)
                if self._failing:
                    log.info("{kind} watch working again", kind=self.kind)
                    self._failing = ""
                continue  # the server ended the watch: resume from the last version
            except Gone as e:
                log.info("{kind}: resourceVersion {rv} is too old ({err}): listing again",
                         kind=self.kind, rv=self.resource_version, err=str(e))
                self.resource_version = ""
                continue
            except (ApiError, StreamCut) as e:
                if not self._running:
                    return
                why = str(e)
                if not self._failing:
                    log.warn("{kind} watch interrupted ({err}); retrying with back-off from "
                             "resourceVersion {rv}", kind=self.kind, err=why,
                             rv=self.resource_version or "(a new list)")
                self._failing = why
            if not self._running:
                return
            await self._pause(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.max_backoff)

    async def _pause(self, seconds: float) -> None:
        self._sleep = task.deferLater(self.reactor, seconds, lambda: None)
        try:
            await self._sleep
        except defer.CancelledError:
            pass
        self._sleep = None

    async def _list(self) -> None:
        items, rv = await self.client.list(self.path, self.params)
        fresh: Dict[str, Dict[str, Any]] = {}
        for raw in items:
            obj = self._decode(raw)
            if obj is not None:
                fresh[object_key(self.kind, obj)] = obj
        self.cache = fresh
        self.resource_version = rv
        self.synced = True
        self.lists += 1
        log.info("{kind}: listed {n} at resourceVersion {rv}", kind=self.kind, n=len(fresh),
                 rv=rv)
        self.listener.replaced(self.kind)

    def _decode(self, raw: Any) -> Optional[Dict[str, Any]]:
        try:
            obj = decode(self.kind, raw)
        except DecodeError as e:
            meta = raw.get("metadata") if isinstance(raw, dict) else None
            name = (f"{meta.get('namespace', '')}/{meta.get('name', '')}"
                    if isinstance(meta, dict) else "?")
            if self._refused.get(name) != str(e):
                log.warn("refusing {kind} {name}: {err}", kind=self.kind, name=name, err=str(e))
                self._refused[name] = str(e)
            return None
        return obj

    async def _watch(self) -> bool:
        """One watch until the server ends it; whether any event arrived."""
        seen = {"n": 0}

        def on_event(etype: str, raw: Any) -> None:
            seen["n"] += 1
            if etype == "BOOKMARK":
                rv = (raw or {}).get("metadata", {}).get("resourceVersion") \
                    if isinstance(raw, dict) else None
                if isinstance(rv, str) and rv:
                    self.resource_version = rv
                return
            obj = self._decode(raw)
            if obj is None:
                return
            key = object_key(self.kind, obj)
            if etype in ("ADDED", "MODIFIED"):
                self.cache[key] = obj
            elif etype == "DELETED":
                self.cache.pop(key, None)
            else:
                return
            if obj["metadata"]["resourceVersion"]:
                self.resource_version = obj["metadata"]["resourceVersion"]
            self.listener.changed(self.kind, key)

        self.watches += 1
        done, cancel = self.client.watch(self.path, self.resource_version, on_event,
                                         self.params, self.watch_timeout)
        self._cancel_watch = cancel
        try:
            await done
        finally:
            self._cancel_watch = None
        return seen["n"] > 0
