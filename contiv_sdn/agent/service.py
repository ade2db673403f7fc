"""``twistd netplugin``: the host agent assembled from its parts.

:func:`make_service` returns a :class:`NetpluginService` (a ``MultiService``)
whose parts stay reachable as attributes, so drivers added later (Docker's
remote driver, CNI) attach to the same endpoint manager and OVSDB session:

``config`` (the parsed options), ``ovsdb``, ``bridge`` (BridgeService),
``plumber``, ``netmaster`` (client), ``endpoints`` (EndpointManager),
``registration`` (HostRegistration), ``api`` (AgentAPI) and ``api_server``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.logger import Logger

from contiv_sdn.agent.api import AgentAPI, unix_server
from contiv_sdn.agent.bridge import VXLAN_PORT, BridgeService
from contiv_sdn.agent.endpoints import EndpointManager
from contiv_sdn.agent.netmaster import NetmasterClient, NetmasterSession
from contiv_sdn.agent.ovsdb import BridgeSpec, Ovsdb, SslSpec
from contiv_sdn.agent.plumbing import Plumber
from contiv_sdn.agent.registration import HostRegistration, host_dpid, host_record

log = Logger()


class Reconciler(Service):
    """Runs the endpoint reconcile once the bridge is ready, then every ``interval`` seconds."""

    def __init__(self, endpoints: EndpointManager, interval: float, reactor: Any):
        self.endpoints = endpoints
        self.interval = interval
        self.reactor = reactor
        self._loop: Optional[task.LoopingCall] = None
        self._current: Optional[defer.Deferred] = None

    def begin(self) -> None:
        if not self.running or self._loop is not None:
            return
        self._loop = task.LoopingCall(self._run)
        self._loop.clock = self.reactor
        if self.interval > 0:
            self._loop.start(self.interval, now=True)
        else:
            self._run()

    def _run(self) -> Optional[defer.Deferred]:
        if self._current is not None:
            return None
        d = defer.ensureDeferred(self.endpoints.reconcile())

        def report(result: Any) -> None:
            self._current = None
            if hasattr(result, "getErrorMessage"):
                log.warn("endpoint reconcile failed: {err}", err=result.getErrorMessage())
            elif result["reaped"] or result["released"]:
                log.info("reconcile: reaped {reaped}, released {released}",
                         reaped=len(result["reaped"]), released=len(result["released"]))
            return None

        self._current = d
        d.addBoth(report)
        return None

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        current = self._current
        if current is None:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        current.addBoth(lambda r: (waiter.callback(None), r)[1])
        return waiter


class NetpluginService(MultiService):
    def __init__(self, options: Mapping[str, Any], host_netns: Optional[str] = None,
                 reactor: Any = None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.reactor = reactor
        self.config = dict(options)
        self.host: str = options["host"]
        self.vtep_ip: str = options["vtep-ip"]
        self.bridge_name: str = options["bridge"]
        self.uplink: Optional[str] = options.get("uplink") or None
        self.underlay_mtu: int = int(options["underlay-mtu"])
        self.state_dir: str = options["state-dir"]
        self.dpid = host_dpid(self.host)
        self._store: Optional[Any] = None

        self.ovsdb = Ovsdb(options["ovs-db"], reactor=reactor)
        tls = options.get("ofp-tls")  # the switch's own certificate for ssl: controllers
        self.spec = BridgeSpec(name=self.bridge_name, datapath_type=options["datapath-type"],
                               dpid=self.dpid, controllers=tuple(options["controllers"]),
                               ssl=SslSpec(tls["ofp-tls-key"], tls["ofp-tls-cert"],
                                           tls["ofp-tls-ca"]) if tls else None)
        self.bridge = BridgeService(self.ovsdb, self.spec, self.uplink, reactor=reactor)
        self.bridge.setServiceParent(self)

        self.plumber = Plumber(host_netns=host_netns)
        # the node credential and TLS trust (--netmaster-*), shared by every netmaster client
        self.netmaster = NetmasterClient(options["netmaster"], reactor=reactor,
                                         session=NetmasterSession.from_options(options))
        self.endpoints = EndpointManager(
            host=self.host, vtep_ip=self.vtep_ip, bridge=self.bridge_name,
            underlay_mtu=self.underlay_mtu, ovsdb=self.ovsdb, plumber=self.plumber,
            netmaster=self.netmaster, state_dir=self.state_dir)

        # hosts write only through the netmaster (contiv_sdn.master.hosts); nothing here
        # writes Redis (--redis is for the Docker driver's read-only subscription)
        self.registration = HostRegistration(self.netmaster.register_host, self.host_record,
                                             interval=float(options.get("refresh") or 30.0),
                                             reactor=reactor)
        self.registration.setServiceParent(self)

        self.reconciler = Reconciler(self.endpoints,
                                     float(options.get("reconcile-interval") or 0.0), reactor)
        self.reconciler.setServiceParent(self)

        #: DNS service discovery (--dns-listen), following Redis (--redis) read-only:
        #: one per host, so names keep resolving while the netmaster is down
        self.dns: Optional[Any] = None
        self.dns_port: Optional[Any] = None
        if options.get("dns-listen-addrs"):
            from contiv_sdn.dns.service import DNSService
            self.dns = DNSService(options["dns-listen-addrs"], options.get("dns-upstreams") or [],
                                  domain=options.get("dns-domain") or "",
                                  ttl=int(options.get("dns-ttl") or 1),
                                  store_url=options["redis"], reactor=reactor)
            self.dns.setServiceParent(self)
            # the serving path (a cdns<vrf> port and a listener per tenant): on with --dns-listen
            from contiv_sdn.agent.dnsport import DNSPort
            self.dns_port = DNSPort(self.dns, options.get("dns-netns") or "contiv-dns")
            self.dns.on_update = lambda _view: self._dns_sync()

        #: host access (--host-access): the contivh0 port, its address and routes
        self.host_port: Optional[Any] = None
        self.node_ports: Optional[Any] = None
        if options.get("host-access"):
            from contiv_sdn.agent.hostport import HostPort
            from contiv_sdn.pipeline.mtu import container_mtu
            # Kubernetes NodePort rides on host access (agent/nodeport.py: why)
            from contiv_sdn.agent.nodeport import NodePorts
            self.node_ports = NodePorts(self.vtep_ip, self._read_k8s_services)
            self.host_port = HostPort(self.ovsdb, self.bridge_name, self.vtep_ip,
                                      container_mtu("vxlan", self.underlay_mtu),
                                      self._read_networks, reactor=reactor,
                                      extra=self.node_ports.sync)

        self.api = AgentAPI(self.endpoints, self.status)
        self.api_server = unix_server(options["socket"], self.api.site())
        self.api_server.setServiceParent(self)

        #: Prometheus /metrics (--metrics-listen): endpoint attach/detach, the process
        self.metrics_service: Optional[Any] = None
        if options.get("metrics-endpoint"):
            from contiv_sdn.ops.metrics import Metrics, MetricsService
            self.metrics_service = MetricsService(Metrics(), options["metrics-endpoint"],
                                                  reactor=reactor)
            # the data path matters more than its figures: a port in use is said, not fatal
            self.metrics_service.listening.addErrback(lambda f: log.error(
                "cannot serve metrics on {where}: {err}; running without them",
                where=options["metrics-endpoint"], err=f.getErrorMessage()))
            self.metrics_service.setServiceParent(self)

        self.bridge.ready.addCallback(self._bridge_ready)

    def host_record(self) -> Dict[str, Any]:
        return host_record(self.host, self.vtep_ip, self.dpid, self.bridge_name, self.uplink,
                           self.underlay_mtu, tunnel_port=VXLAN_PORT)

    @property
    def ready(self) -> bool:
        """Bridge in place and host registered: endpoints can be created and will get flows."""
        return self.bridge.is_ready and self.registration.last is not None

    def status(self) -> Dict[str, Any]:
        return {"host": self.host, "vtepIP": self.vtep_ip, "dpid": self.dpid,
                "bridge": self.bridge_name, "ready": self.ready,
                "bridgeReady": self.bridge.is_ready,
                "registered": self.registration.last is not None,
                "controllers": list(self.spec.controllers)}

    def _dns_sync(self) -> None:
        """Follow the tenants' VRF ids into the DNS port's namespace (after each view)."""
        async def sync() -> None:
            from contiv_sdn.model.shapes import loads
            from contiv_sdn.store import keys as K
            raw = await self.dns.store.hgetall_raw(K.hash_of("tenant"))
            tenants = {}
            for key, text in raw.items():
                try:
                    vrf = loads(text).get("vrfId")
                except Exception:  # noqa: BLE001 - a bad record is the writer's; skipped
                    continue
                if isinstance(vrf, int):
                    tenants[key] = vrf
            await self.dns_port.sync(tenants)
        if self.dns_port is not None and self.dns.store is not None:
            defer.ensureDeferred(sync()).addErrback(
                lambda f: log.failure("DNS serving path sync failed", f))

    async def _read_networks(self) -> Dict[str, str]:
        """The raw network state records (read-only, one store kept for the agent's life)."""
        if self._store is None:
            from contiv_sdn.store.store import Store
            self._store = await Store.connect(self.config["redis"])
        from contiv_sdn.store import keys as K
        return await self._store.hgetall_raw(K.hash_of("network"))

    async def _read_k8s_services(self) -> Dict[str, str]:
        """The raw ``k8sService`` records (the Kubernetes watcher's; none without it)."""
        await self._read_networks()  # connects the store once
        from contiv_sdn.store import keys as K
        return await self._store.hgetall_raw(K.hash_of("k8sService"))

    def _bridge_ready(self, result: Any) -> Any:
        self.endpoints.ready = True
        if self.host_port is not None:
            defer.ensureDeferred(self.host_port.start()).addErrback(
                lambda f: log.failure("host access not set up", f))
        if self.dns_port is not None:
            async def start() -> None:
                await self.dns_port.start(self.ovsdb, self.bridge_name)
                self._dns_sync()
            defer.ensureDeferred(start()).addErrback(lambda f: log.error(
                "DNS serving path not set up: {err}; names resolve only on --dns-listen",
                err=f.getErrorMessage()))
        self.reconciler.begin()
        return result

    def startService(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        log.info("netplugin starting: host {host}, vtep {vtep}, dpid {dpid:#x}, bridge {bridge} "
                 "({dp}), controllers {ctrl}, netmaster {nm}, redis {redis}, ovsdb {db}, "
                 "socket {sock}", host=self.host, vtep=self.vtep_ip, dpid=self.dpid,
                 bridge=self.bridge_name, dp=self.spec.datapath_type,
                 ctrl=",".join(self.spec.controllers), nm=self.config["netmaster"],
                 redis=_without_password(self.config["redis"]), db=self.config["ovs-db"],
                 sock=self.config["socket"])
        super().startService()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        if self.host_port is not None:
            self.host_port.stop()
        yield super().stopService()
        if self._store is not None:
            store, self._store = self._store, None
            yield defer.ensureDeferred(store.close())
        yield self.ovsdb.close()
        yield self.netmaster.close()
        log.info("netplugin stopped")


def _without_password(url: str) -> str:
    """A Redis URL as logs may show it (``--redis`` may carry the agent's password)."""
    from contiv_sdn.store.store import RedisURL
    try:
        return str(RedisURL.parse(url))
    except Exception:  # noqa: BLE001 - unparseable: show nothing of it rather than a secret
        return "(unparseable --redis URL)"


def make_service(options: Mapping[str, Any], host_netns: Optional[str] = None) -> NetpluginService:
    """Build the agent from parsed :class:`contiv_sdn.agent.options.Options`.

    ``host_netns`` (tests only) puts the host ends of veths in that namespace
    instead of the agent's own.
    """
    return NetpluginService(options, host_netns=host_netns)
