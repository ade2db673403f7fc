"""Per-key serialisation for endpoint operations."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict

from twisted.internet import defer


class KeyedLocks:
    """One ``DeferredLock`` per key (an endpoint id), dropped when nobody holds or awaits it.

    Create and delete of one endpoint must not interleave (a delete racing a create
    would release an address the create is still plumbing); different endpoints
    proceed in parallel.
    """

    def __init__(self) -> None:
        self._locks: Dict[str, defer.DeferredLock] = {}

    async def run(self, key: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        lock = self._locks.setdefault(key, defer.DeferredLock())
        await lock.acquire()
        try:
            return await fn()
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(key, None)
