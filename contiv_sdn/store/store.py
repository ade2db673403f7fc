"""The Redis connection: reads, atomic transactions, snapshots and change feed.

Every write goes through :meth:`Store.apply`, i.e. through one Lua script that
checks, allocates, writes, bumps ``contiv:rev`` and publishes on
``contiv:changes``.  Reads of a single record are plain ``HGET``s; reads that
must be consistent with each other (a kind with its version, the whole state
with its revision) are scripts too.

Every call is bounded: a call that finds no connection (Redis down, being
restarted) or gets no reply within :attr:`Store.timeout` raises
:class:`StoreUnavailable` instead of waiting for Redis to come back, so a
REST request never hangs on the store.  The connection pool keeps reconnecting
on its own (quickly: Redis is normally local), and once it has been without a
connection for :attr:`Store.grace` seconds calls fail at once rather than each
waiting out the timeout.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlparse

import txredisapi
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred, ensureDeferred
from OpenSSL.SSL import Error as SSLError
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger

from contiv_sdn.ops.metrics import redis_call as _timed
from contiv_sdn.store import keys as K
from contiv_sdn.store import replies
from contiv_sdn.store.lua import APPLY, LIST, READ_KIND, SNAPSHOT
from contiv_sdn.store.txn import (
    Conflict, LinksNeedRead, StoreError, StoreUnavailable, Txn, TxnResult,
)

log = Logger()

#: Seconds a Redis call may take (waiting for a connection included) before it
#: raises StoreUnavailable.  Every script we run is O(state) and takes
#: milliseconds; a reply this late means Redis is hung or gone.
DEFAULT_TIMEOUT = 5.0
#: Seconds without any connection after which calls fail at once (instead of
#: waiting for a reconnect that a restarting Redis would give within this time).
DEFAULT_GRACE = 2.0
#: Replies that mean "Redis is there but cannot serve now" (still loading the
#: append-only file after a restart, running a stuck script...).
_UNAVAILABLE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY")
#: The hash of kind versions that APPLY bumps and READ_KIND answers (spelled
#: by the scripts themselves, see contiv_sdn.store.lua).
_KIND_VERSIONS = "contiv:ver"


@dataclass(frozen=True)
class RedisURL:
    """A parsed Redis URL:

    * ``redis://[[user]:password@]host[:port][/db]`` — plain TCP;
    * ``rediss://[[user]:password@]host[:port][/db][?ca=/path/ca.pem]`` — TLS,
      the server's certificate checked against ``ca`` (default: the system's
      trust store) and its host name;
    * ``unix://[[user]:password@]/path[?db=N]``;
    * ``sentinel://[[user]:password@]host1:26379,host2:26379/primary-name[?db=N]``
      — the primary of a Redis Sentinel group (see :mod:`contiv_sdn.store.sentinel`):
      asked of the sentinels before every connection, so a failover is followed,
      and every write acknowledged only once a replica has it (``WAIT``;
      ``?replicas=N`` how many, default 1; ``?wait_ms=M`` how long, default 1000).
      The credentials are the data nodes'; sentinels are reached without.

    ``user`` is a Redis 6 ACL user (``AUTH user password``); without it the
    password is the ``requirepass`` one.  ``?password=`` is accepted too.
    """

    host: Optional[str] = None
    port: int = 6379
    path: Optional[str] = None
    db: Optional[int] = None
    password: Optional[str] = field(default=None, repr=False)
    username: Optional[str] = None
    tls: bool = False
    ca: Optional[str] = None
    #: Sentinel mode: the sentinels' (host, port) and the primary's name
    sentinels: Tuple[Tuple[str, int], ...] = ()
    primary: Optional[str] = None
    #: Sentinel mode: replicas that must hold a write before it is acknowledged,
    #: and how long to wait for them
    replicas: int = 1
    wait_ms: int = 1000

    @classmethod
    def parse(cls, url: str) -> "RedisURL":
        u = urlparse(url)
        query = parse_qs(u.query)
        db = int(query["db"][0]) if "db" in query else None
        password = unquote(u.password) if u.password else (query.get("password") or [None])[0]
        username = unquote(u.username) if u.username else None
        if u.scheme in ("unix", "redis+unix", "redis-socket"):
            # unix://user:pw@/path: urlparse leaves the credentials in netloc
            path = u.path or u.netloc.rpartition("@")[2]
            if not path:
                raise ValueError(f"no socket path in {url!r}")
            return cls(path=path, db=db, password=password, username=username or None)
        if u.scheme == "sentinel":
            return cls._parse_sentinel(url, u, query, db, password, username)
        if u.scheme in ("redis", "tcp", "rediss"):
            if u.path and u.path.strip("/"):
                db = int(u.path.strip("/"))
            tls = u.scheme == "rediss"
            ca = (query.get("ca") or query.get("ssl_ca_certs") or [None])[0]
            if ca is not None and not tls:
                raise ValueError(f"?ca= needs a rediss:// URL (TLS), not {u.scheme}://")
            return cls(host=u.hostname or "127.0.0.1", port=u.port or 6379, db=db,
                       password=password, username=username or None, tls=tls, ca=ca)
        raise ValueError(f"unsupported Redis URL {url!r} (redis://host:port[/db], "
                         f"rediss://user:password@host:port, unix:///path or "
                         f"sentinel://host1:26379,host2:26379/primary-name)")

    @classmethod
    def _parse_sentinel(cls, url: str, u: Any, query: Dict[str, List[str]], db: Optional[int],
                        password: Optional[str], username: Optional[str]) -> "RedisURL":
        hosts = u.netloc.rpartition("@")[2]
        sentinels = []
        for item in hosts.split(","):
            host, colon, port = item.strip().rpartition(":")
            if not colon:
                host, port = item.strip(), "26379"
            host = host.strip("[]")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bad sentinel address {item!r} in {url!r} (host:port)")
            sentinels.append((host, int(port)))
        primary = u.path.strip("/")
        if not primary:
            raise ValueError(f"no primary name in {url!r} "
                             f"(sentinel://host1:26379,host2:26379/primary-name)")

        def number(name: str, default: int, low: int) -> int:
            raw = (query.get(name) or [str(default)])[0]
            if not raw.isdigit() or int(raw) < low:
                raise ValueError(f"?{name}= must be a whole number >= {low} in {url!r}")
            return int(raw)

        return cls(sentinels=tuple(sentinels), primary=primary, db=db, password=password,
                   username=username or None, replicas=number("replicas", 1, 0),
                   wait_ms=number("wait_ms", 1000, 1))
    def endpoint(self):
        if self.sentinels:
            from contiv_sdn.store.sentinel import PrimaryEndpoint  # (imports this module)
            return PrimaryEndpoint(self.sentinels, self.primary or "")
        if self.path:
            return UNIXClientEndpoint(reactor, self.path, timeout=10)
        tcp = HostnameEndpoint(reactor, self.host, self.port, timeout=10)
        if not self.tls:
            return tcp
        return wrapClientTLS(self._tls_options(), tcp)

    def _tls_options(self):
        """Client TLS for ``rediss://``: the server must present a certificate for
        :attr:`host` signed by :attr:`ca` (or a system-trusted CA)."""
        trust = None
        if self.ca:
            try:
                with open(self.ca, "rb") as f:
                    trust = Certificate.loadPEM(f.read())
            except (OSError, ValueError, SSLError) as e:
                raise ValueError(f"cannot read the Redis CA certificate {self.ca}: {e}") \
                    from None
        return optionsForClientTLS(self.host, trustRoot=trust)

    def __str__(self) -> str:
        """The URL without its password (what logs and error texts show)."""
        who = f"{self.username}@" if self.username else ""
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return (f"sentinel://{who}{hosts}/{self.primary}"
                    + (f"?db={self.db}" if self.db is not None else ""))
        if self.path:
            return f"unix://{who}{self.path}" + (f"?db={self.db}" if self.db is not None else "")
        scheme = "rediss" if self.tls else "redis"
        return (f"{scheme}://{who}{self.host}:{self.port}"
                + (f"/{self.db}" if self.db is not None else ""))


def _s(v) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, bytes):
        # never raise on bytes someone else wrote: a record that is not UTF-8 is
        # refused by whoever parses it (one owner), not by every read of its hash
        return v.decode("utf-8", "replace")
    return str(v)


def _pairs(flat) -> Dict[str, str]:
    flat = flat or []
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


class _ChangeProtocol(replies.SubscriberProtocol):
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
        if url.sentinels:
            self._factory.maxDelay = 0.5  # follow a failover within Sentinel's ~2 s
        if url.password:
            self._factory.password = url.password
            self._factory.username = url.username
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


class _Pool(txredisapi.RedisFactory):
    """txredisapi's connection pool, reconnecting quickly and remembering
    since when it has had no connection (so calls can fail fast while Redis is
    down instead of queueing behind a reconnect that is not coming); its
    connections parse each read whole (:mod:`contiv_sdn.store.replies`)."""

    protocol = replies.RedisProtocol

    initialDelay = 0.1
    maxDelay = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.down_since: Optional[float] = time.monotonic()

    def addConnection(self, conn) -> None:
        super().addConnection(conn)
        if self.size:
            self.down_since = None

    def delConnection(self, conn) -> None:
        super().delConnection(conn)
        if not self.size and self.down_since is None:
            self.down_since = time.monotonic()


async def _bounded(d: Deferred, seconds: float) -> None:
    """Wait for ``d`` at most ``seconds``, swallowing its failure (for shutdown)."""
    d.addTimeout(seconds, reactor)
    try:
        await d
    except Exception as e:
        log.info("redis disconnect did not finish cleanly: {err}", err=str(e) or repr(e))


class CachedKind:
    """A whole kind as Redis held it at version :attr:`ver`.

    Records written by this process are kept as the exact JSON text it sent
    (``raws``) and parsed only when the kind is listed, so a large record
    that is read and rewritten by every transaction (a tenant listing its
    networks) is not parsed twice and encoded twice per commit.
    """

    __slots__ = ("ver", "_items", "_raws", "_memo", "_prev", "_written", "_depth")

    #: how many patches back a derived value is carried (each holds its kind alive)
    MEMO_DEPTH = 16

    def __init__(self, ver: int, items: Dict[str, dict], raws: Dict[str, str]) -> None:
        self.ver = ver
        self._items = items
        self._raws = raws
        #: values derived from the records (e.g. an index), by name
        self._memo: Dict[str, Any] = {}
        #: the kind this one was patched from, and the keys the patch wrote
        self._prev: Optional["CachedKind"] = None
        self._written: Tuple[str, ...] = ()
        self._depth = 0

    def derived(self, name: str, build: Callable[[Dict[str, dict]], Any],
                update: Callable[[Any, List[str], Dict[str, dict]], Any]) -> Any:
        """A value computed from the records, kept with the kind: ``build(records)``
        the first time, then, for a kind patched since, ``update(value, keys
        written since, records)`` — so that an index over a large kind costs its
        changes, not its size.  The value moves to the newest kind (an older one
        builds its own again if asked)."""
        if name in self._memo:
            return self._memo[name]
        keys: List[str] = []
        node: Optional[CachedKind] = self
        while node is not None and name not in node._memo:
            keys.extend(node._written)
            node = node._prev
        if node is None:
            value = build(self.records())
        else:
            value = update(node._memo.pop(name), keys, self.records())
        self._memo[name] = value
        self._prev, self._written, self._depth = None, (), 0
        return value

    def records(self) -> Dict[str, dict]:
        """Every record, parsed (shared: read-only)."""
        if self._raws:
            items = dict(self._items)
            for key, raw in self._raws.items():
                items[key] = json.loads(raw)
            self._items, self._raws = items, {}
        return self._items

    def has(self, key: str) -> bool:
        return key in self._raws or key in self._items

    def raw(self, key: str) -> Optional[str]:
        """One record's JSON text as Redis holds it (None = absent).

        Parsed records were read from Redis, whose text Txn.put wrote with
        these same settings, so re-encoding reproduces it; if some other
        writer's text differs, a guard built from this fails and the
        transaction reads Redis instead.
        """
        raw = self._raws.get(key)
        if raw is not None:
            return raw
        found = self._items.get(key)
        return None if found is None else json.dumps(found, separators=(",", ":"),
                                                     allow_nan=False)

    def patched(self, ver: int, writes: List[Tuple[str, Optional[str]]]) -> "CachedKind":
        """This kind after ``writes`` ((key, JSON or None = deleted), in order)."""
        items, raws = self._items, dict(self._raws)
        copied = False
        for key, raw in writes:
            if key in items:
                if not copied:
                    items, copied = dict(items), True
                del items[key]
            if raw is None:
                raws.pop(key, None)
            else:
                raws[key] = raw
        out = CachedKind(ver, items, raws)
        if self._depth < self.MEMO_DEPTH and (self._memo or self._prev is not None):
            out._prev, out._written = self, tuple(key for key, _ in writes)
            out._depth = self._depth + 1
        return out


class Store:
    """The project's only door to Redis.  Build it with ``await Store.connect(url)``.

    ``timeout`` bounds every call (see the module docstring); ``grace`` is how
    long a call may wait for a lost connection to come back.
    """

    def __init__(self, conn, url: RedisURL, factory: Optional[_Pool] = None,
                 timeout: float = DEFAULT_TIMEOUT, grace: float = DEFAULT_GRACE):
        self._conn = conn
        self._factory = factory
        self.url = url
        self.timeout = timeout
        self.grace = grace
        self._subs: list = []
        #: a running check of who the primary is (Sentinel), awaited by close()
        self._following: Optional[Deferred] = None
        # kind -> (version, {key: record}) for list_versioned: a kind re-read
        # only when its version moved, and patched with our own writes
        self._kinds: Dict[str, CachedKind] = {}

    @classmethod
    async def connect(cls, url: str, poolsize: int = 2, timeout: float = DEFAULT_TIMEOUT,
                      connect_timeout: Optional[float] = None,
                      grace: float = DEFAULT_GRACE) -> "Store":
        """Connect, waiting at most ``connect_timeout`` (default ``timeout``)
        for Redis to accept; raises :class:`StoreUnavailable` if it does not."""
        u = RedisURL.parse(url)
        handler = txredisapi.UnixConnectionHandler if u.path else txredisapi.ConnectionHandler
        # replyTimeout: a connection whose reply is late is aborted (and
        # re-established), so a hung Redis cannot pin a request forever.
        factory = _Pool(str(u), u.db, poolsize, False, handler, None, u.password,
                        timeout, False, u.username)
        factory.reconnect = True
        if u.sentinels:
            # a failover takes Sentinel ~2 s: retry within it, not seconds after
            factory.maxDelay = 0.5
        factory.endpoint = u.endpoint()
        factory.startConnecting(factory.endpoint)
        wait = timeout if connect_timeout is None else connect_timeout
        try:
            conn = await factory.deferred.addTimeout(wait, reactor)
        except defer.CancelledError:
            await _bounded(factory.disconnect(), 2.0)
            raise  # our caller gave up (e.g. a stop during start-up): not a failure
        except Exception as e:
            await _bounded(factory.disconnect(), 2.0)
            why = "no answer" if isinstance(e, defer.TimeoutError) else (str(e) or repr(e))
            raise StoreUnavailable(f"cannot connect to Redis at {u} within {wait:g}s ({why}); "
                                   f"check that the redis-server is running") from None
        return cls(conn, u, factory, timeout=timeout, grace=grace)

    async def close(self) -> None:
        """Disconnect (bounded: a hung Redis does not hold up a shutdown)."""
        if self._following is not None and not self._following.called:
            # let the sentinels' answers come in (bounded): a cancelled ask would
            # leave its connection attempts behind
            await _bounded(self._following, self.timeout)
        subs, self._subs = self._subs, []
        for sub in subs:
            await _bounded(sub.stop(), self.timeout)
        await _bounded(self._conn.disconnect(), self.timeout)

    @property
    def connected(self) -> bool:
        """Whether the pool has at least one live connection right now."""
        return self._factory is None or bool(self._factory.size)

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"the state store (Redis at {self.url}) is unavailable: {why}; "
                                f"retry shortly or check the redis-server")

    async def _call(self, what: str, call: Callable[[], Deferred], write: bool = False) -> Any:
        """Run one txredisapi call, bounded by :attr:`timeout`, with every way
        Redis can fail to answer turned into :class:`StoreUnavailable`."""
        f = self._factory
        if f is not None and not f.size:
            if f.stopped:
                raise self._unavailable("the connection is closed")
            if f.down_since is not None and time.monotonic() - f.down_since > self.grace:
                raise self._unavailable(
                    f"no connection for {time.monotonic() - f.down_since:.0f}s")
        try:
            d = _timed(what, call)  # the round-trip histogram (contiv_sdn.ops.metrics)
            d.addTimeout(self.timeout, reactor)
            return await d
        except (defer.TimeoutError, txredisapi.TimeoutError):
            # ours (no connection came) or txredisapi's replyTimeout (no reply came)
            maybe = " (the change may or may not have been applied)" if write else ""
            raise self._unavailable(f"no reply to {what} within {self.timeout:g}s{maybe}") \
                from None
        except txredisapi.ConnectionError as e:
            maybe = " (the change may or may not have been applied)" if write else ""
            raise self._unavailable(f"{str(e).lower() or 'connection lost'} during {what}{maybe}") \
                from None
        except txredisapi.ResponseError as e:
            text = str(e)
            if text.startswith("READONLY"):
                # a demoted primary (Sentinel failover): reconnect, which asks again
                self._drop_connections()
            if text.startswith(_UNAVAILABLE_REPLIES):
                raise self._unavailable(text.split("\n")[0]) from None
            raise

    async def _follow_primary(self) -> None:
        """Reconnect if the sentinels' majority names another primary than ours."""
        endpoint = getattr(self._factory, "endpoint", None)
        if endpoint is None or not self.url.sentinels:
            return
        from contiv_sdn.store.sentinel import ask_sentinels
        try:
            addr = await ask_sentinels(self.url.sentinels, self.url.primary or "")
        except Exception:  # noqa: BLE001 - no majority now: the next write asks again
            return
        if endpoint.current is not None and addr != endpoint.current:
            self._drop_connections()

    def _drop_connections(self) -> None:
        """Close every connection (data and change feed) so that each reconnects
        through its endpoint: with Sentinel, to whatever is the primary now."""
        pools = [self._factory] + [sub._factory for sub in self._subs]
        for pool in pools:
            for conn in list(getattr(pool, "pool", None) or []):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.loseConnection()

    # -- reads ------------------------------------------------------------
    async def get_raw(self, kind: str, key: str) -> Optional[str]:
        return _s(await self._call("HGET", lambda: self._conn.hget(K.hash_of(kind), key)))

    async def get(self, kind: str, key: str) -> Optional[dict]:
        raw = await self.get_raw(kind, key)
        return None if raw is None else json.loads(raw)

    async def exists(self, kind: str, key: str) -> bool:
        return bool(await self._call("HEXISTS",
                                     lambda: self._conn.hexists(K.hash_of(kind), key)))

    async def list(self, kind: str) -> Dict[str, dict]:
        return json.loads(await self._call(
            "LIST", lambda: self._conn.eval(LIST, [K.hash_of(kind)], [])))

    async def list_versioned(self, kind: str) -> Tuple[int, Dict[str, dict]]:
        """A kind and its version, read atomically (for optimistic checks).

        The records returned are shared with a cache: treat them as read-only.
        """
        cached = self._kinds.get(kind)
        known = str(cached.ver) if cached else "-1"
        out = await self._call(
            "READ_KIND", lambda: self._conn.eval(READ_KIND, [K.hash_of(kind)], [kind, known]))
        ver = int(_s(out[0]))
        if len(out) == 1 and cached is not None:
            return ver, cached.records()
        items = json.loads(out[1])
        self._kinds[kind] = CachedKind(ver, items, {})
        return ver, items

    def cached_kind(self, kind: str) -> Optional["CachedKind"]:
        """A cached kind, not checked against Redis (see
        :class:`~contiv_sdn.store.txn.View`), or None."""
        return self._kinds.get(kind)

    def forget_kind(self, kind: str) -> None:
        """Drop a cached kind (it was found stale): the next read loads it again."""
        self._kinds.pop(kind, None)

    async def kind_versions(self, kinds: List[str]) -> Dict[str, int]:
        """The current version of each kind (one ``HMGET``)."""
        if not kinds:
            return {}
        raw = await self._call("HMGET", lambda: self._conn.execute_command(
            "HMGET", _KIND_VERSIONS, *kinds))
        return {k: int(_s(v) or 0) for k, v in zip(kinds, raw)}

    def _predict(self, txn: Txn) -> Dict[str, int]:
        """Patch cached kinds with ``txn``'s writes *as it is sent*, as if it
        committed; kind -> the version predicted.

        So that the next transaction of this process can be built (and sent)
        while this one's reply is still on its way: what it reads from the
        cache is what Redis will hold once this one has run (Redis runs the
        commands of a connection in order), and its guards name those
        versions.  A wrong prediction costs a conflict, never a wrong commit:
        every guard is checked by Redis.  :meth:`apply` undoes the prediction
        (drops the kinds) when the commit fails or bumps other versions.
        """
        predicted: Dict[str, int] = {}
        for kind in txn.kinds_written():
            cached = self._kinds.get(kind)
            if cached is None:
                continue
            writes = txn.raw_writes(kind, cached.raw)
            if writes is None or any(raw is None and not cached.has(key)
                                     for key, raw in writes):
                # Redis alone knows what it will write, or a delete of what may
                # not be there (no version bump): do not guess
                del self._kinds[kind]
                continue
            if not writes:
                continue  # e.g. a link removal of an absent member: no write, no bump
            self._kinds[kind] = cached.patched(cached.ver + 1, writes)
            predicted[kind] = cached.ver + 1
        return predicted

    def _patch_cache(self, txn: Txn, vers: Dict[str, int],
                     predicted: Optional[Dict[str, int]] = None) -> None:
        """Bring cached kinds up to date with our own committed writes."""
        predicted = predicted or {}
        for kind, ver in predicted.items():
            if vers.get(kind) != ver:
                self._kinds.pop(kind, None)  # someone else wrote it first
        for kind, ver in vers.items():
            if kind in predicted:
                continue
            cached = self._kinds.get(kind)
            if cached is None:
                continue
            writes = txn.raw_writes(kind, cached.raw) if cached.ver == ver - 1 else None
            if writes is None:
                # someone else wrote too, or Redis alone knows what was
                # written: drop it, so that a cache read without asking
                # Redis (View) is never left stale
                del self._kinds[kind]
                continue
            self._kinds[kind] = cached.patched(ver, writes)

    async def revision(self) -> int:
        return int(_s(await self._call("GET", lambda: self._conn.get(K.REV))) or 0)

    async def server_time(self) -> float:
        """Redis's clock (``TIME``), so that timestamps written and compared by
        processes on different hosts do not depend on their clocks agreeing."""
        sec, usec = await self._call("TIME", lambda: self._conn.execute_command("TIME"))
        return int(_s(sec)) + int(_s(usec)) / 1e6

    async def snapshot(self) -> Tuple[int, Dict[str, Dict[str, dict]]]:
        """Every obj and state kind at one revision (one script, so consistent)."""
        doc = json.loads(await self._call("SNAPSHOT", lambda: self._conn.eval(SNAPSHOT, [], [])))
        return int(doc["rev"]), doc["kinds"]

    async def get_bytes(self, key: str) -> bytes:
        v = await self._call("GET", lambda: self._conn.get(key))
        return v or b""

    async def hget_raw(self, key: str, field: str) -> Optional[str]:
        return _s(await self._call("HGET", lambda: self._conn.hget(key, field)))

    async def hgetall_raw(self, key: str) -> Dict[str, str]:
        return _pairs(await self._call(
            "HGETALL", lambda: self._conn.execute_command("HGETALL", key)))

    async def hscan_raw(self, key: str, cursor: int = 0, count: int = 200) -> Tuple[int, Dict[str, str]]:
        """One ``HSCAN`` step: (the next cursor, 0 at the end; some fields and values).
        For reading a large hash in small replies: an ``HGETALL`` of 10k records is one
        reply of megabytes that every other command on its connection waits behind."""
        nxt, flat = await self._call(
            "HSCAN", lambda: self._conn.execute_command("HSCAN", key, cursor, "COUNT", count))
        return int(_s(nxt)), _pairs(flat)

    async def get_raw_key(self, key: str) -> Optional[str]:
        """A plain string key (outside the kinds: e.g. an auth token record)."""
        return _s(await self._call("GET", lambda: self._conn.get(key)))

    # -- writes outside the kinds -------------------------------------------
    # Records that are not intent or state (the REST API's users and tokens):
    # not versioned, not published on the change feed, not in snapshots.
    async def set_raw(self, key: str, value: str, ttl: Optional[float] = None) -> None:
        """``SET key value [PX ttl]`` (``ttl`` in seconds)."""
        args = ["SET", key, value]
        if ttl is not None:
            args += ["PX", max(1, int(ttl * 1000))]
        await self._call("SET", lambda: self._conn.execute_command(*args), write=True)

    async def del_raw(self, key: str) -> None:
        await self._call("DEL", lambda: self._conn.execute_command("DEL", key), write=True)

    async def hset_raw(self, key: str, field: str, value: str) -> None:
        await self._call("HSET", lambda: self._conn.execute_command("HSET", key, field, value),
                         write=True)

    async def hsetnx_raw(self, key: str, field: str, value: str) -> bool:
        """``HSETNX``: whether the field was created (False: it existed)."""
        return bool(await self._call(
            "HSETNX", lambda: self._conn.execute_command("HSETNX", key, field, value),
            write=True))

    async def hdel_raw(self, key: str, field: str) -> None:
        await self._call("HDEL", lambda: self._conn.execute_command("HDEL", key, field),
                         write=True)

    # -- writes -----------------------------------------------------------
    async def apply(self, txn: Txn) -> TxnResult:
        """Run a transaction atomically; raises Conflict or StoreError.

        The command is sent before the first suspension (the caller may
        let the next transaction start then: see :meth:`_predict`)."""
        predicted = self._predict(txn) if self._kinds else {}
        try:
            if self.url.sentinels and self.url.replicas and self._factory is not None:
                raw = await self._call("APPLY", lambda: self._apply_replicated(txn.argv()),
                                       write=True)
            else:
                raw = await self._call("APPLY", lambda: self._ordered().eval(APPLY, [], txn.argv()),
                                       write=True)
            out = json.loads(_s(raw))
        except BaseException:
            for kind in predicted:
                self._kinds.pop(kind, None)
            raise
        if "conflict" in out or "slow" in out or "error" in out:
            for kind in predicted:
                self._kinds.pop(kind, None)
        if "conflict" in out:
            raise Conflict(out["conflict"])
        if "slow" in out:
            raise LinksNeedRead(out["slow"])
        if "error" in out:
            raise StoreError(out["error"])
        allocs = out.get("allocs") or {}
        vers = out.get("vers") or {}
        # cjson encodes an empty table as {} (never []), so check the type
        result = TxnResult(
            int(out["rev"]),
            {k: int(v) for k, v in (allocs.items() if isinstance(allocs, dict) else [])},
            {k: int(v) for k, v in (vers.items() if isinstance(vers, dict) else [])},
            {(kind, key): text for kind, key, text in out.get("written") or ()})
        if self._kinds or predicted:
            self._patch_cache(txn, result.vers, predicted)
        return result

    def _ordered(self) -> Any:
        """The connection every APPLY goes on: the pool hands out a random one per
        call, and Redis keeps the order of commands only within a connection, which
        the transactions sent back to back (see :meth:`_predict`) rely on."""
        pool = getattr(self._factory, "pool", None) or []
        for conn in pool:
            if conn.connected:
                return conn
        return self._conn  # none now: the pool's own wait-and-fail path

    def _apply_replicated(self, argv: List[Any]) -> Deferred:
        """APPLY, acknowledged only once :attr:`RedisURL.replicas` replicas have it
        (see :meth:`_eval_replicated`); a refused program wrote nothing: no wait."""
        def wrote(raw: Any) -> bool:
            out = json.loads(_s(raw))
            return "conflict" not in out and "error" not in out
        return self._eval_replicated(APPLY, [], argv, wrote)

    def _eval_replicated(self, script: str, keys: List[str], args: List[Any],
                         wrote: Callable[[Any], bool]) -> Deferred:
        """A script, then ``WAIT`` on the same connection (WAIT counts the replicas
        that hold *this connection's* writes) when ``wrote(reply)``: a write is
        acknowledged only once the replicas have it, so a Sentinel failover cannot
        lose an acknowledged change."""
        factory, url = self._factory, self.url

        async def run() -> Any:
            conn = await factory.getConnection()
            try:
                raw = await conn.eval(script, keys, args)
                if not wrote(raw):
                    return raw
                acked = int(await conn.execute_command("WAIT", url.replicas, url.wait_ms))
            finally:
                factory.connectionQueue.put(conn)
            if acked < url.replicas:
                # replicas still resyncing after a failover, all of them down, or this
                # primary cut off from them (replaced behind its back): the write may
                # be rolled back by a failover, so it is not acknowledged; and if the
                # sentinels now name another primary, go there
                if self._following is None or self._following.called:
                    self._following = defer.Deferred.fromCoroutine(self._follow_primary())
                raise txredisapi.ConnectionError(
                    f"Not replicated: {acked} of {url.replicas} replica(s) confirmed the "
                    f"write within {url.wait_ms} ms (the primary has it; a failover may "
                    f"undo it)")
            return raw
        return Deferred.fromCoroutine(run())

    async def eval(self, what: str, script: str, keys: List[str], args: List[Any],
                   replicate: Optional[Callable[[Any], bool]] = None) -> Any:
        """Run a Lua script (bounded, failures as :class:`StoreUnavailable`).

        ``replicate(reply)`` true means the script wrote something that must
        survive a failover: with Sentinel, the reply is returned only once a
        replica has it (else StoreUnavailable).  For small protocols of their own
        (e.g. the switch lease), not for intent: intent goes through :meth:`apply`."""
        if replicate is not None and self.url.sentinels and self.url.replicas \
                and self._factory is not None:
            return await self._call(what, lambda: self._eval_replicated(script, keys, args,
                                                                          replicate), write=True)
        return await self._call(what, lambda: self._conn.eval(script, keys, args), write=True)

    async def put_state(self, kind: str, key: str, value: dict) -> int:
        """Write one state record atomically (bumps the revision, publishes)."""
        txn = Txn()
        txn.put(kind, key, value)
        return (await self.apply(txn)).rev

    async def del_state(self, kind: str, key: str, if_raw: Optional[str] = None) -> int:
        """Delete one state record; with ``if_raw``, only if it still holds
        exactly that JSON (raises :class:`Conflict` otherwise), e.g. to reap a
        stale record without deleting one that was refreshed meanwhile."""
        txn = Txn()
        if if_raw is not None:
            txn.guard_eq(kind, key, if_raw)
        txn.delete(kind, key)
        return (await self.apply(txn)).rev

    # -- change feed ------------------------------------------------------
    def subscribe(self, on_change: Callable[[str, str, str, int], None],
                  on_resync: Callable[[], None]) -> Subscription:
        """Follow ``contiv:changes``; ``on_resync`` after each (re)connection."""
        sub = Subscription(self.url, on_change, on_resync)
        self._subs.append(sub)
        return sub


async def connect_retrying(url: str, keep_trying: Callable[[], bool], what: str,
                           factory: Optional[Callable[[str], Any]] = None, clock: Any = None,
                           first_delay: float = 0.5, max_delay: float = 5.0) -> Optional["Store"]:
    """Connect to ``url``, retrying with doubling back-off while ``keep_trying()``.

    For the host-side readers (the Docker driver, the DNS view) that must start, and
    keep serving what they have, while Redis is not reachable yet.  The outage is
    logged once (``what`` names the reader) and its end once; ``None`` if
    ``keep_trying()`` turned false first.  ``factory`` replaces :meth:`Store.connect`
    (tests).
    """
    clock = clock if clock is not None else reactor
    make = factory if factory is not None else Store.connect
    delay, warned = first_delay, False
    while keep_trying():
        try:
            store = await make(url)
        except defer.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - unreachable Redis: retried, logged once
            if not warned:
                log.warn("{what}: redis {url} not reachable ({err}); retrying", what=what,
                         url=url, err=e)
                warned = True
            await task.deferLater(clock, delay, lambda: None)
            delay = min(delay * 2, max_delay)
            continue
        if warned:
            log.info("{what}: redis {url} reachable again", what=what, url=url)
        return store
    return None


def connect(url: str) -> Deferred:
    """Deferred-returning form of :meth:`Store.connect` for inlineCallbacks users."""
    return ensureDeferred(Store.connect(url))


__all__ = ["Store", "RedisURL", "Subscription", "StoreError", "Conflict", "connect",
           "connect_retrying"]
