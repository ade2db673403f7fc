"""The host's registration: its record (``state:host[name]``), kept through the netmaster.

The controller maps a switch that connects with datapath id D to the host whose
record carries ``dpid == D``, and learns the VTEP address to tunnel to from the
same record, so the record is what makes a host part of the cluster.

Hosts read Redis but write it only through the netmaster's API (one writer to
authenticate; records checked before the controller reads them): the agent
sends its record to ``POST /plugin/registerHost`` at start and every
``interval`` seconds (:class:`HostRegistration`); the netmaster checks it,
stamps ``updated`` with Redis's clock and stores it
(:mod:`contiv_sdn.master.hosts`).  While the netmaster is unreachable or
refuses, the agent retries with back-off and goes on serving the endpoints it
has: registration gates no datapath work, only ``status()["ready"]``.

The record says how often the agent refreshes it (``refresh``); the netmaster
judges liveness from that (:func:`contiv_sdn.master.hosts.is_live`).
"""

from __future__ import annotations

import zlib
from typing import Any, Awaitable, Callable, Dict, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

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
                mtu: int, tunnel_port: str = "vxlan0") -> Dict[str, Any]:
    """The agent's side of its record: a ``RegisterHostRequest`` less ``refresh``
    (:data:`contiv_sdn.model.plugin_api.REGISTER_HOST`)."""
    return {
        "name": name,
        "vtepIP": vtep_ip,
        "dpid": dpid,
        "bridge": bridge,
        "tunnelPort": tunnel_port,
        "uplinkPort": uplink or "",
        "mtu": mtu,
    }


class HostRegistration(Service):
    """Registers the host with the netmaster, then refreshes it every ``interval``.

    ``register`` is :meth:`NetmasterClient.register_host` (a coroutine function
    taking the request and answering the stored record).  A failed call is retried
    after ``retry`` seconds, doubling up to ``max_retry``: an agent started before
    its netmaster, or outliving it, neither hammers it nor waits long once it is
    back.  ``registered`` fires with the first stored record; ``last`` is the
    latest one.
    """

    def __init__(self, register: Callable[[Dict[str, Any]], Awaitable[Dict[str, Any]]],
                 record: Callable[[], Dict[str, Any]], interval: float = 30.0,
                 retry: float = 0.5, max_retry: float = 8.0, timeout: float = 10.0,
                 reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.register = register
        self.record = record
        self.interval = interval
        self.retry = retry
        self.max_retry = max(retry, min(max_retry, interval))
        self.timeout = timeout
        self.reactor = reactor
        self.last: Optional[Dict[str, Any]] = None
        self.registered: defer.Deferred = defer.Deferred()
        self._next: Any = None
        self._running_call: Optional[defer.Deferred] = None
        self._delay = retry
        #: the failure last logged (each distinct one is logged once, until it works)
        self._failing: Optional[str] = None

    def startService(self) -> None:
        super().startService()
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._next = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        """Register once, then schedule the next call: the refresh, or a retry."""
        self._next = None
        d = defer.ensureDeferred(self.write())
        d.addTimeout(self.timeout, self.reactor)
        self._running_call = d

        def done(result: Any) -> None:
            self._running_call = None
            if not self.running:
                return None
            if isinstance(result, Failure):
                self._report(result)
                self._schedule(self._delay)
                self._delay = min(self._delay * 2, self.max_retry)
            else:
                self._delay = self.retry
                self._schedule(self.interval)
            return None

        d.addBoth(done)

    def _report(self, failure: Failure) -> None:
        from contiv_sdn.agent.netmaster import NetmasterError, NetmasterUnavailable
        if failure.check(NetmasterError):
            what = f"the netmaster refused to register this host: {failure.value}"
        elif failure.check(NetmasterUnavailable):
            what = str(failure.value)
        elif failure.check(defer.TimeoutError, defer.CancelledError):
            what = f"the netmaster did not answer within {self.timeout:g}s"
        else:
            log.failure("host registration failed", failure)
            what = "unexpected error (logged above)"
        if what != self._failing:
            log.warn("host not registered: {what}; retrying (every {max:g}s at most), "
                     "existing endpoints keep working", what=what, max=self.max_retry)
        self._failing = what

    async def write(self) -> Dict[str, Any]:
        """Register now; fires with the record the netmaster stored."""
        request = dict(self.record())
        request["refresh"] = self.interval  # how soon to expect the next call (liveness)
        stored = await self.register(request)
        if self._failing is not None:
            log.info("host {name} registered with the netmaster (after failures)",
                     name=stored["name"])
        elif self.last is None:
            log.info("host {name} registered: vtep {vtep}, dpid {dpid:#x}",
                     name=stored["name"], vtep=stored["vtepIP"], dpid=stored["dpid"])
        self._failing = None
        self.last = stored
        if not self.registered.called:
            self.registered.callback(stored)
        return stored

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._running_call is not None:
            self._running_call.cancel()
        return defer.succeed(None)
