"""The Redis connection: reads, atomic transactions, snapshots and change feed.

Every write goes through :meth:`Store.apply`, i.e. through one Lua script that
checks, allocates, writes, bumps ``contiv:rev`` and publishes on
``contiv:changes``.  Reads of a single record are plain ``HGET``s; reads that
must be consistent with each other (a kind with its version, the whole state
with its revision) are scripts too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlparse

import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.logger import Logger

from contiv_sdn.store import keys as K
from contiv_sdn.store.lua import APPLY, LIST, READ_KIND, SNAPSHOT
from contiv_sdn.store.txn import Conflict, StoreError, Txn, TxnResult

log = Logger()


@dataclass(frozen=True)
class RedisURL:
    """A parsed ``redis://[:password@]host[:port][/db]`` or ``unix:///path[?db=N]``."""

    host: Optional[str] = None
    port: int = 6379
    path: Optional[str] = None
    db: Optional[int] = None
    password: Optional[str] = None

    @classmethod
    def parse(cls, url: str) -> "RedisURL":
        u = urlparse(url)
        query = parse_qs(u.query)
        db = int(query["db"][0]) if "db" in query else None
        password = unquote(u.password) if u.password else (query.get("password") or [None])[0]
        if u.scheme in ("unix", "redis+unix", "redis-socket"):
            path = u.path or u.netloc
            if not path:
                raise ValueError(f"no socket path in {url!r}")
            return cls(path=path, db=db, password=password)
        if u.scheme in ("redis", "tcp"):
            if u.path and u.path.strip("/"):
                db = int(u.path.strip("/"))
            return cls(host=u.hostname or "127.0.0.1", port=u.port or 6379, db=db,
                       password=password)
        raise ValueError(f"unsupported Redis URL {url!r} (redis://host:port[/db] or unix:///path)")

    def endpoint(self):
        if self.path:
            return UNIXClientEndpoint(reactor, self.path, timeout=10)
        return HostnameEndpoint(reactor, self.host, self.port, timeout=10)

    def __str__(self) -> str:
        if self.path:
            return f"unix://{self.path}" + (f"?db={self.db}" if self.db is not None else "")
        return f"redis://{self.host}:{self.port}" + (f"/{self.db}" if self.db is not None else "")


def _s(v) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v)


def _pairs(flat) -> Dict[str, str]:
    flat = flat or []
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


class _ChangeProtocol(txredisapi.SubscriberProtocol):
    """Subscribes on every (re)connection, then tells the owner to resync."""

    def connectionMade(self):
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda p: self.factory.subscription._connected(p))
        return d

    def messageReceived(self, pattern, channel, message):
        self.factory.subscription._message(message)


class _ChangeFactory(txredisapi.SubscriberFactory):
    protocol = _ChangeProtocol
    # a lost pub/sub connection loses messages: reconnect quickly, then resync
    initialDelay = 0.2
    maxDelay = 5


class Subscription:
    """A live change feed.  ``on_resync`` runs after every (re)subscription,
    because pub/sub loses whatever was published while disconnected."""

    def __init__(self, url: RedisURL, on_change: Callable[[str, str, str, int], None],
                 on_resync: Callable[[], None]):
        self._on_change = on_change
        self._on_resync = on_resync
        self._factory = _ChangeFactory()
        self._factory.subscription = self
        if url.password:
            self._factory.password = url.password
        self._factory.startConnecting(url.endpoint())

    def _connected(self, proto) -> None:
        def subscribed(_):
            try:
                self._on_resync()
            except Exception:
                log.failure("on_resync failed")

        proto.subscribe(K.CHANGES).addCallbacks(
            subscribed, lambda f: log.failure("subscribe failed", f))

    def _message(self, message) -> None:
        try:
            m = json.loads(_s(message))
            self._on_change(m["kind"], m["key"], m["op"], int(m["rev"]))
        except Exception:
            log.failure("bad change message {message!r}", message=message)

    def stop(self) -> Deferred:
        return self._factory.disconnect()


class Store:
    """The project's only door to Redis.  Build it with ``await Store.connect(url)``."""

    def __init__(self, conn, url: RedisURL):
        self._conn = conn
        self.url = url
        self._subs: list = []
        # kind -> (version, {key: record}) for list_versioned: a kind re-read
        # only when its version moved, and patched with our own writes
        self._kinds: Dict[str, Tuple[int, Dict[str, dict]]] = {}

    @classmethod
    async def connect(cls, url: str, poolsize: int = 2) -> "Store":
        u = RedisURL.parse(url)
        common = dict(dbid=u.db, poolsize=poolsize, reconnect=True, charset=None,
                      password=u.password, convertNumbers=False, connectTimeout=10)
        if u.path:
            conn = await txredisapi.UnixConnectionPool(u.path, **common)
        else:
            conn = await txredisapi.ConnectionPool(u.host, u.port, **common)
        return cls(conn, u)

    async def close(self) -> None:
        for sub in self._subs:
            await sub.stop()
        self._subs = []
        await self._conn.disconnect()

    # -- reads ------------------------------------------------------------
    async def get_raw(self, kind: str, key: str) -> Optional[str]:
        return _s(await self._conn.hget(K.hash_of(kind), key))

    async def get(self, kind: str, key: str) -> Optional[dict]:
        raw = await self.get_raw(kind, key)
        return None if raw is None else json.loads(raw)

    async def list(self, kind: str) -> Dict[str, dict]:
        return json.loads(await self._conn.eval(LIST, [K.hash_of(kind)], []))

    async def list_versioned(self, kind: str) -> Tuple[int, Dict[str, dict]]:
        """A kind and its version, read atomically (for optimistic checks).

        The records returned are shared with a cache: treat them as read-only.
        """
        cached = self._kinds.get(kind)
        known = str(cached[0]) if cached else "-1"
        out = await self._conn.eval(READ_KIND, [K.hash_of(kind)], [kind, known])
        ver = int(_s(out[0]))
        if len(out) == 1 and cached is not None:
            return ver, cached[1]
        items = json.loads(out[1])
        self._kinds[kind] = (ver, items)
        return ver, items

    def _patch_cache(self, txn: Txn, vers: Dict[str, int]) -> None:
        """Bring cached kinds up to date with our own committed writes."""
        for kind, ver in vers.items():
            cached = self._kinds.get(kind)
            if cached is None:
                continue
            if cached[0] != ver - 1:
                continue  # someone else wrote too: the next read refreshes it
            items = dict(cached[1])
            exact = True
            for op in txn.ops:
                if op.get("k") != kind:
                    continue
                if op["t"] == "put" and not op.get("subs"):
                    items[op["f"]] = json.loads(txn.value_of(op))
                elif op["t"] == "del":
                    items.pop(op["f"], None)
                else:
                    exact = False
            if exact:
                self._kinds[kind] = (ver, items)
            else:
                del self._kinds[kind]

    async def revision(self) -> int:
        return int(_s(await self._conn.get(K.REV)) or 0)

    async def snapshot(self) -> Tuple[int, Dict[str, Dict[str, dict]]]:
        """Every obj and state kind at one revision (one script, so consistent)."""
        doc = json.loads(await self._conn.eval(SNAPSHOT, [], []))
        return int(doc["rev"]), doc["kinds"]

    async def get_bytes(self, key: str) -> bytes:
        v = await self._conn.get(key)
        return v or b""

    async def hget_raw(self, key: str, field: str) -> Optional[str]:
        return _s(await self._conn.hget(key, field))

    async def hgetall_raw(self, key: str) -> Dict[str, str]:
        return _pairs(await self._conn.execute_command("HGETALL", key))

    # -- writes -----------------------------------------------------------
    async def apply(self, txn: Txn) -> TxnResult:
        """Run a transaction atomically; raises Conflict or StoreError."""
        raw = await self._conn.eval(APPLY, [], [txn.program()] + txn.values)
        out = json.loads(_s(raw))
        if "conflict" in out:
            raise Conflict(out["conflict"])
        if "error" in out:
            raise StoreError(out["error"])
        allocs = out.get("allocs") or {}
        vers = out.get("vers") or {}
        # cjson encodes an empty table as {} (never []), so check the type
        result = TxnResult(
            int(out["rev"]),
            {k: int(v) for k, v in (allocs.items() if isinstance(allocs, dict) else [])},
            {k: int(v) for k, v in (vers.items() if isinstance(vers, dict) else [])})
        if self._kinds:
            self._patch_cache(txn, result.vers)
        return result

    async def put_state(self, kind: str, key: str, value: dict) -> int:
        """Write one state record atomically (bumps the revision, publishes)."""
        txn = Txn()
        txn.put(kind, key, value)
        return (await self.apply(txn)).rev

    async def del_state(self, kind: str, key: str) -> int:
        txn = Txn()
        txn.delete(kind, key)
        return (await self.apply(txn)).rev

    # -- change feed ------------------------------------------------------
    def subscribe(self, on_change: Callable[[str, str, str, int], None],
                  on_resync: Callable[[], None]) -> Subscription:
        """Follow ``contiv:changes``; ``on_resync`` after each (re)connection."""
        sub = Subscription(self.url, on_change, on_resync)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> Deferred:
        if sub in self._subs:
            self._subs.remove(sub)
        return sub.stop()


def connect(url: str) -> Deferred:
    """Deferred-returning form of :meth:`Store.connect` for inlineCallbacks users."""
    return ensureDeferred(Store.connect(url))


__all__ = ["Store", "RedisURL", "Subscription", "StoreError", "Conflict", "connect"]
