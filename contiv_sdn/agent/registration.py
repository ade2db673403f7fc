"""The host's record in Redis (``state:host[name]``), written at start and refreshed.

The controller maps a switch that connects with datapath id D to the host whose
record carries ``dpid == D``, and learns the VTEP address to tunnel to from the
same record, so the record is what makes a host part of the cluster.  The
refresh (``updated``) lets readers tell a live host from a stale one.

Liveness of registrations (host records here, netmaster records written by
``contiv_sdn.master.service``) is one rule, :func:`is_live`: each record
carries when it was last written (``updated``) and how often its writer
refreshes it (``refresh``); it is stale once it missed :data:`STALE_AFTER`
refreshes.  Netmasters stamp ``updated`` with Redis's clock (``TIME``),
agents with their own, so a host whose clock is off by more than its TTL
shows as not live in ``/info``.  Only there: a stale host record is never
removed (its vtepIP and dpid keep the datapath to that host's endpoints
working while its netplugin restarts).
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Callable, Dict, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

HOST_KIND = "host"
#: A registration is stale after this many missed refreshes.
STALE_AFTER = 3
#: The refresh interval assumed for a record that does not say (older writers).
DEFAULT_REFRESH = 30.0


def is_live(record: Any, now: float) -> bool:
    """Whether a registration record was refreshed recently enough.

    ``now`` is Redis's ``TIME`` (the clock netmasters stamp their records
    with).  A record without a usable ``updated`` is stale.
    """
    if not isinstance(record, dict):
        return False
    updated = record.get("updated", record.get("started"))
    refresh = record.get("refresh", DEFAULT_REFRESH)
    if isinstance(updated, bool) or not isinstance(updated, (int, float)):
        return False
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not refresh > 0:
        refresh = DEFAULT_REFRESH
    return now - updated <= STALE_AFTER * refresh


def host_dpid(name: str) -> int:
    """The datapath id of a host's br-int: stable, 48 bits, never zero.

    Derived only from the host name (two CRC32s, so the lab and tests can
    compute it too), so a restarted agent or a rebuilt OVS keeps the id the
    controller already knows.
    """
    data = name.encode()
    low = zlib.crc32(data)
    high = zlib.crc32(b"contiv-sdn/dpid/" + data) & 0xFFFF
    dpid = (high << 32) | low
    return dpid or 1


def host_record(name: str, vtep_ip: str, dpid: int, bridge: str, uplink: Optional[str],
                mtu: int, tunnel_port: str = "vxlan0", now: Optional[float] = None) -> Dict[str, Any]:
    """The ``state:host`` record, in the shape the controller reads."""
    return {
        "name": name,
        "vtepIP": vtep_ip,
        "dpid": dpid,
        "bridge": bridge,
        "tunnelPort": tunnel_port,
        "uplinkPort": uplink,
        "mtu": mtu,
        "updated": int(time.time() if now is None else now),
    }


async def _as_coroutine(value: Any) -> Any:
    """Await a coroutine or a Deferred alike (``connect`` may return either)."""
    return await value


class HostRegistration(Service):
    """Keeps ``state:host[name]`` in Redis, retrying until Redis answers.

    ``connect`` is ``Store.connect`` (injected so tests and the service share
    one code path).  ``registered`` fires after the first successful write.
    """

    def __init__(self, redis_url: str, record: Callable[[], Dict[str, Any]],
                 connect: Optional[Callable[[str], Any]] = None, interval: float = 30.0,
                 retry: float = 2.0, timeout: float = 10.0, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        if connect is None:
            from contiv_sdn.store import Store
            connect = Store.connect
        self.redis_url = redis_url
        self.record = record
        self._connect = connect
        self.interval = interval
        self.retry = retry
        self.timeout = timeout
        self.reactor = reactor
        self.store: Any = None
        self.last: Optional[Dict[str, Any]] = None
        self.registered: defer.Deferred = defer.Deferred()
        self._next: Any = None
        self._running_write: Optional[defer.Deferred] = None
        self._failing = False

    def startService(self) -> None:
        super().startService()
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._next = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        """Write once, then schedule the next write: the refresh, or a retry after a failure."""
        self._next = None
        d = defer.ensureDeferred(self.write())
        self._running_write = d

        def done(result: Any) -> None:
            self._running_write = None
            if isinstance(result, Failure):
                if not self.running:
                    return None
                if not self._failing:
                    log.warn("cannot register host in Redis at {url}: {err}; retrying every "
                             "{retry}s", url=self.redis_url, err=result.getErrorMessage(),
                             retry=self.retry)
                self._failing = True
                self._schedule(self.retry)
            else:
                self._schedule(self.interval)
            return None

        d.addBoth(done)

    async def _probe(self) -> None:
        """Fail fast when Redis does not accept connections.

        The Store's connection pool waits (and keeps reconnecting) forever when
        Redis is down, so we only hand it a URL that answered a moment ago.
        """
        from contiv_sdn.store import RedisURL
        endpoint = RedisURL.parse(self.redis_url).endpoint()
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False  # one probe per refresh: keep "Starting factory" out of the log
        d = endpoint.connect(factory)
        d.addTimeout(self.timeout, self.reactor)
        proto = await d
        proto.transport.loseConnection()

    async def write(self) -> Dict[str, Any]:
        """Write the record now (connecting first if needed)."""
        if self.store is None:
            await self._probe()
            d = defer.ensureDeferred(_as_coroutine(self._connect(self.redis_url)))
            self.store = await d.addTimeout(self.timeout, self.reactor)
        record = dict(self.record())
        try:
            record["refresh"] = self.interval  # how soon to expect the next write: is_live()
            d = defer.ensureDeferred(self.store.put_state(HOST_KIND, record["name"], record))
            await d.addTimeout(self.timeout, self.reactor)
        except Exception:
            await self._drop_store()
            raise
        if self._failing:
            log.info("host {name} registered in Redis (after failures)", name=record["name"])
        elif self.last is None:
            log.info("host {name} registered: vtep {vtep}, dpid {dpid:#x}",
                     name=record["name"], vtep=record["vtepIP"], dpid=record["dpid"])
        self._failing = False
        self.last = record
        if not self.registered.called:
            self.registered.callback(record)
        return record

    async def _drop_store(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            try:
                await store.close()
            except Exception:
                pass

    async def _stop(self) -> None:
        if self._running_write is not None:
            self._running_write.cancel()
        await self._drop_store()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        return defer.ensureDeferred(self._stop())
