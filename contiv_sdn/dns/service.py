"""DNS as a child service of netplugin (one per host) or of any process with a store.

:class:`DNSService` owns the resolver, its :class:`~contiv_sdn.dns.resolver.Feed`
from Redis, the forwarder and the server's listeners:

* ``listen`` addresses (``--dns-listen``) serve with :func:`source_scope`
  (askers identified by source address, refused when tenants overlap);
* :meth:`DNSService.listen_tenant` opens a listener dedicated to one tenant,
  for the datapath serving path (one address per VRF, see
  :func:`vrf_address`), which is what tells identical subnets apart;
  :meth:`DNSService.adopt_tenant` does the same on sockets the agent opened in
  its DNS namespace (the serving path, ``contiv_sdn.agent.dnsport``).

It starts answering at once (from an empty view: our names get NXDOMAIN and
the rest is forwarded) and follows Redis as soon as it connects; Redis being
down at start or later only delays updates (retried with backoff, logged once).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.logger import Logger

from contiv_sdn.dns.resolver import DEFAULT_TTL, Feed, Resolver
from contiv_sdn.dns.server import DNSServer, Scope, source_scope, tenant_scope
from contiv_sdn.dns.upstream import Forwarder, Upstream

log = Logger()

#: The block the per-VRF DNS addresses come from (inside the DNS port's own
#: network namespace, so they never meet the host's or a container's addresses).
VRF_BLOCK = ipaddress.IPv4Network("169.254.0.0/16")


def vrf_address(vrf_id: int) -> str:
    """The address the datapath DNATs a tenant's DNS queries to: 169.254.<hi>.<lo> of
    the VRF id (ids are 1..65535; .255.255 is never allocated as it is the broadcast)."""
    if not 0 < vrf_id < 65535:
        raise ValueError(f"VRF id {vrf_id} out of range 1..65534")
    return str(VRF_BLOCK.network_address + vrf_id)


def parse_listen(text: str) -> Tuple[str, int]:
    """``IP:port``, ``[IPv6]:port`` or ``:port`` (all IPv4 addresses) → (interface, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"DNS listen address {text!r}: expected IP:port, [IPv6]:port or :port")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"DNS listen address {text!r}: {host!r} is not an IP address") from None
    return host, int(port)


class DNSService(Service):
    """See the module docstring.  Give ``store`` (already connected, not closed
    here) or ``store_url`` (connected and closed here)."""

    def __init__(self, listen: Sequence[str], upstreams: Sequence[Upstream], domain: str = "",
                 ttl: int = DEFAULT_TTL, store: Any = None, store_url: Optional[str] = None,
                 reactor: Any = None,
                 store_factory: Optional[Callable[[str], Any]] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.reactor = reactor
        self.listen_addrs = [parse_listen(a) for a in listen]
        self.domain = domain
        self.resolver = Resolver(ttl=ttl)
        self.forwarder = Forwarder(upstreams, reactor=reactor)
        self.server = DNSServer(self.resolver, self.forwarder, reactor=reactor)
        self.store = store
        self.store_url = store_url
        self._own_store = store is None
        self._store_factory = store_factory
        self.feed: Optional[Feed] = None
        self.addresses: List[Tuple[str, int]] = []
        self._tenant_ports: Dict[Tuple[str, str, int], List[Any]] = {}
        self._connecting: Optional[defer.Deferred] = None
        #: called with each rebuilt view (the agent's serving path follows tenants)
        self.on_update: Optional[Callable[[Any], None]] = None

    # -- life cycle ---------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        for host, port in self.listen_addrs:
            try:
                actual = self.server.listen(port, host, source_scope(self.resolver))
            except error.CannotListenError as e:
                log.error("DNS cannot listen on {host}:{port} ({err}); check --dns-listen "
                          "(port 53 needs root or CAP_NET_BIND_SERVICE)", host=host, port=port,
                          err=e.socketError)
                continue
            self.addresses.append((host, actual))
            log.info("DNS listening on {host}:{port} (udp+tcp), upstreams {up}", host=host,
                     port=actual, up=",".join(f"{h}:{p}" for h, p in self.forwarder.upstreams)
                     or "none")
        if self.store is not None:
            self._follow()
        elif self.store_url:
            self._connecting = defer.ensureDeferred(self._connect())
            self._connecting.addErrback(
                lambda f: None if f.check(defer.CancelledError)
                else log.failure("DNS store connection task died", f))

    async def _connect(self) -> None:
        from contiv_sdn.store.store import connect_retrying
        self.store = await connect_retrying(self.store_url, lambda: self.running, "DNS",
                                            factory=self._store_factory, clock=self.reactor)
        if self.running and self.store is not None:
            self._follow()

    def _follow(self) -> None:
        self.feed = Feed(self.store, self.resolver, domain=self.domain, reactor=self.reactor)
        self.feed.on_update = lambda view: self.on_update(view) if self.on_update else None
        self.feed.start()

    def listen_tenant(self, tenant: str, interface: str, port: int = 53) -> int:
        """Serve ``tenant``'s endpoints only, on ``interface``:``port`` (the serving
        path's per-VRF address); returns the port."""
        scope: Scope = tenant_scope(self.resolver, tenant)
        before = len(self.server.ports)
        actual = self.server.listen(port, interface, scope)
        self._tenant_ports[(tenant, interface, actual)] = self.server.ports[before:]
        return actual

    def adopt_tenant(self, tenant: str, udp: Any, tcp: Any) -> None:
        """Serve ``tenant``'s endpoints only on sockets opened in the DNS port's
        namespace (see ``contiv_sdn.agent.dnsport``); the caller closes its copies."""
        host, port = udp.getsockname()[:2]
        before = len(self.server.ports)
        self.server.adopt(udp, tcp, tenant_scope(self.resolver, tenant))
        self._tenant_ports[(tenant, host, port)] = self.server.ports[before:]

    def unlisten_tenant(self, tenant: str, interface: str, port: int = 53) -> defer.Deferred:
        ports = self._tenant_ports.pop((tenant, interface, port), [])
        for p in ports:
            if p in self.server.ports:
                self.server.ports.remove(p)
        return defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports],
                                  consumeErrors=True)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        waits = [self.server.stop()]
        self._tenant_ports.clear()
        if self.feed is not None:
            waits.append(self.feed.stop())
            self.feed = None
        d = defer.DeferredList(waits, consumeErrors=True)
        if self._own_store and self.store is not None:
            store, self.store = self.store, None
            d.addCallback(lambda _: defer.ensureDeferred(store.close()))
        return d
