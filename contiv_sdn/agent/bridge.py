"""Puts the host's integration bridge in place and keeps trying until OVSDB answers.

br-int is created with its controllers in the same transaction (OVS flushes a
bridge's flows when its controller set goes from none to some), then the VXLAN
port (``remote_ip=flow key=flow``: the controller sets the tunnel destination
and VNI per flow) and, optionally, the uplink that carries VLAN networks.  An
existing bridge is kept with its flows; only settings that differ are written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from contiv_sdn.agent.ovsdb import BridgeSpec, Ovsdb

log = Logger()

VXLAN_PORT = "vxlan0"
VXLAN_UDP_PORT = 4789


def tunnel_options() -> Dict[str, str]:
    return {"remote_ip": "flow", "key": "flow", "dst_port": str(VXLAN_UDP_PORT)}


async def setup_bridge(ovsdb: Ovsdb, spec: BridgeSpec, uplink: Optional[str] = None,
                       tunnel_port: str = VXLAN_PORT) -> Dict[str, Any]:
    """One pass: bridge, tunnel port, uplink port.  Idempotent."""
    result = await ovsdb.ensure_bridge(spec)
    await ovsdb.ensure_port(spec.name, tunnel_port, type="vxlan", options=tunnel_options(),
                            external_ids={"contiv-role": "tunnel"})
    if uplink:
        await ovsdb.ensure_port(spec.name, uplink, external_ids={"contiv-role": "uplink"})
    return result


class BridgeService(Service):
    """Connects to OVSDB and sets up the bridge, retrying until it works.

    ``ready`` fires once the bridge is in place; ``on_ready`` callbacks (the
    endpoint reconcile) run then.
    """

    def __init__(self, ovsdb: Ovsdb, spec: BridgeSpec, uplink: Optional[str] = None,
                 retry: float = 2.0, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.ovsdb = ovsdb
        self.spec = spec
        self.uplink = uplink
        self.retry = retry
        self.reactor = reactor
        self.ready: defer.Deferred = defer.Deferred()
        self.is_ready = False
        self._next: Any = None
        self._attempt: Optional[defer.Deferred] = None
        self._failures = 0

    def startService(self) -> None:
        super().startService()
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._next = self.reactor.callLater(delay, self._try)

    def _try(self) -> None:
        self._next = None
        self._attempt = defer.ensureDeferred(self._once())

        def done(result: Any) -> None:
            self._attempt = None
            if not hasattr(result, "getErrorMessage"):
                return None
            if not self.running:
                return None
            self._failures += 1
            if self._failures == 1 or self._failures % 30 == 0:
                log.warn("setting up bridge {bridge} failed ({n}x): {err}; retrying",
                         bridge=self.spec.name, n=self._failures, err=result.getErrorMessage())
            self._schedule(self.retry)
            return None

        self._attempt.addBoth(done)

    async def _once(self) -> None:
        await self.ovsdb.connect()
        result = await setup_bridge(self.ovsdb, self.spec, self.uplink)
        self.is_ready = True
        log.info("bridge {bridge} ready ({how}; datapath {dp}, controllers {ctrl}{tls})",
                 bridge=self.spec.name, how="created" if result["created"] else "kept",
                 dp=self.spec.datapath_type, ctrl=",".join(self.spec.controllers),
                 tls=f"; switch certificate {self.spec.ssl.certificate}" if self.spec.ssl else "")
        if not self.ready.called:
            self.ready.callback(result)

    def set_controllers(self, targets: Sequence[str]) -> defer.Deferred:
        """Change the controller list (never empty, one transaction, flows kept)."""
        self.spec = dataclasses.replace(self.spec, controllers=tuple(targets))
        return self.ovsdb.set_controllers(self.spec.name, targets)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        attempt = self._attempt
        if attempt is None:
            return defer.succeed(None)
        # the attempt runs in the OVSDB thread with its own deadline; let it finish
        waiter: defer.Deferred = defer.Deferred()
        attempt.addBoth(lambda r: (waiter.callback(None), r)[1])
        return waiter
