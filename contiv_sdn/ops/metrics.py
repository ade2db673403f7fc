"""Prometheus metrics of netmaster and netplugin, served by ``prometheus_client``.

Why it is built this way:

* The measured places (the REST router, the store's Redis calls, the agent's
  endpoint attach/detach) each call one function of this module; the metric
  objects live here, in ``prometheus_client``'s process registry (so the
  library's process and GC metrics come along).
* State owned by other parts (the OpenFlow controller's counters and switches,
  the objects per tenant in Redis) is *read*, not pushed: the controller is not
  edited to report, its existing attributes are sampled.
* ``prometheus_client``'s Twisted resource renders in the reactor's thread pool.
  Reactor-owned state (dicts the reactor mutates) must not be read from that
  thread, so every scrape first takes a snapshot *on the reactor* (including
  the asynchronous Redis reads for per-tenant counts), and the collectors only
  read that immutable snapshot.

The listener is a separate port (``--metrics-listen`` on both daemons), off by
default, so scraping needs no API credentials and tests that run many daemons
side by side do not collide on a default port.
"""

from __future__ import annotations

import re
import time
import weakref
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Tuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.twisted import MetricsResource
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

log = Logger()

#: Buckets for calls that take from ~100 µs (a Redis round trip on loopback) to seconds.
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
         1.0, 2.5, 5.0)
#: Buckets for endpoint attach/detach (veth + OVS port + netmaster round trips).
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

# -- netmaster: REST ---------------------------------------------------------------

HTTP_REQUESTS = Counter("contiv_http_requests", "REST requests answered by the netmaster, "
                        "by route (the OpenAPI path template; 'unrouted' for anything else), "
                        "method and status code", ["route", "method", "code"])
HTTP_SECONDS = Histogram("contiv_http_request_duration_seconds", "Time from a REST request's "
                         "arrival to its answer being written, by route and method",
                         ["route", "method"], buckets=_FAST)

# -- netmaster: Redis ---------------------------------------------------------------

REDIS_SECONDS = Histogram("contiv_redis_roundtrip_seconds", "Redis round-trip time of the "
                          "store's calls, by command (answered or not)", ["command"],
                          buckets=_FAST)
REDIS_FAILURES = Counter("contiv_redis_failures", "Redis calls that got no answer or an error, "
                         "by command", ["command"])

# -- netplugin: endpoints -------------------------------------------------------------

ENDPOINT_OPS = Counter("contiv_endpoint_operations", "Endpoint attaches and detaches on this "
                       "host, by operation and result (ok or error)", ["op", "result"])
ENDPOINT_SECONDS = Histogram("contiv_endpoint_operation_duration_seconds", "Time an endpoint "
                             "attach or detach took on this host (including waiting for the "
                             "endpoint's lock)", ["op"], buckets=_SLOW)


OVSDB_SECONDS = Histogram("contiv_ovsdb_transaction_duration_seconds", "Time an OVSDB "
                          "transaction took (commit and, where asked, ovs-vswitchd applying it), "
                          "by operation", ["op"], buckets=_SLOW)
OVSDB_FAILURES = Counter("contiv_ovsdb_failures", "OVSDB transactions that failed, by operation",
                         ["op"])
PLUGIN_CALLS = Counter("contiv_plugin_calls", "Calls a runtime made to this netplugin, by "
                       "surface (docker: the libnetwork driver; agent: the local API used by "
                       "contiv-cni), call and result (ok, refused, error)",
                       ["surface", "call", "result"])
PLUGIN_SECONDS = Histogram("contiv_plugin_call_duration_seconds", "Time a runtime's call to "
                           "this netplugin took, by surface and call", ["surface", "call"],
                           buckets=_SLOW)


def ovsdb_op(what: str) -> str:
    """A bounded label for an OVSDB transaction described as e.g. ``add port X to br-int``."""
    return " ".join(what.split()[:2])


def plugin_call(surface: str, call: str, result: str, seconds: float) -> None:
    """Count and time one runtime call (``result``: ok, refused or error)."""
    PLUGIN_CALLS.labels(surface, call, result).inc()
    PLUGIN_SECONDS.labels(surface, call).observe(seconds)


CONTROLLER_RUN_SECONDS = Histogram("contiv_controller_run_duration_seconds", "Busy time of "
                                   "each controller run (reading changes, compiling, handing "
                                   "deltas to the switches)", buckets=_FAST)


DNS_FORWARD_SECONDS = Histogram("contiv_dns_forward_duration_seconds", "Time from a query "
                                "for a name that is not Contiv's to the upstream's answer being "
                                "relayed (local answers take microseconds and are not timed)",
                                buckets=_FAST)
#: The DNS servers of this process, read at scrape time (their ``stats`` counters).
_DNS_SERVERS: "weakref.WeakSet" = weakref.WeakSet()


def watch_dns(server: Any) -> None:
    """Report ``server.stats`` (queries by outcome) as ``contiv_dns_queries_total``."""
    _DNS_SERVERS.add(server)


class _DNSCollector:
    """Sums the counters of every DNS server of the process (plain ints read from
    another thread: each read is atomic under the GIL, and a scrape needs no more)."""

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        servers = list(_DNS_SERVERS)
        if not servers:
            return
        totals: Dict[str, int] = {}
        for server in servers:
            for outcome, n in dict(server.stats).items():
                totals[outcome] = totals.get(outcome, 0) + int(n)
        family = CounterMetricFamily("contiv_dns_queries", "DNS packets handled by this "
                                     "netplugin's resolver, by outcome (queries = every "
                                     "well-formed query; answered, nxdomain, forwarded, "
                                     "servfail, refused, formerr, dropped, truncated)",
                                     labels=["outcome"])
        for outcome in sorted(totals):
            family.add_metric([outcome], totals[outcome])
        yield family


REGISTRY.register(_DNSCollector())


def redis_call(command: str, call: Callable[[], defer.Deferred]) -> defer.Deferred:
    """Run one store call (``call()`` sends it) and time its round trip; the Deferred
    is passed through unchanged.  The store calls this in place of ``call()``."""
    started = time.perf_counter()
    d = call()

    def answered(result: Any) -> Any:
        REDIS_SECONDS.labels(command).observe(time.perf_counter() - started)
        return result

    def failed(f: Any) -> Any:
        REDIS_SECONDS.labels(command).observe(time.perf_counter() - started)
        REDIS_FAILURES.labels(command).inc()
        return f

    d.addCallbacks(answered, failed)
    return d


async def endpoint_op(op: str, work: Awaitable[Any]) -> Any:
    """Await ``work`` (an endpoint ``attach`` or ``detach``), counting and timing it."""
    started = time.perf_counter()
    try:
        result = await work
    except BaseException:
        ENDPOINT_OPS.labels(op, "error").inc()
        ENDPOINT_SECONDS.labels(op).observe(time.perf_counter() - started)
        raise
    ENDPOINT_OPS.labels(op, "ok").inc()
    ENDPOINT_SECONDS.labels(op).observe(time.perf_counter() - started)
    return result


# -- REST request tracking ---------------------------------------------------------------

_ROUTE_TABLE: Optional[List[Tuple[re.Pattern, frozenset, str]]] = None


def _routes() -> List[Tuple[re.Pattern, frozenset, str]]:
    """Documented path templates as regexes (``{x}`` = one path segment): the route label
    of a request is the template it matches, so the label set is bounded by the document."""
    global _ROUTE_TABLE
    if _ROUTE_TABLE is None:
        from contiv_sdn.ops.openapi import document
        table = []
        for template, item in document()["paths"].items():
            rx = re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part)
                                    for part in re.split(r"(\{[^}]+\})", template)))
            table.append((rx, frozenset(m.upper() for m in item if m != "parameters"),
                          template))
        _ROUTE_TABLE = table
    return _ROUTE_TABLE


def route_label(method: str, path: Optional[str]) -> str:
    """The OpenAPI template of ``method path`` (``/api/v1/networks/{key}/``), or
    ``unrouted``."""
    if path is not None:
        for rx, methods, template in _routes():
            if method in methods and rx.fullmatch(path):
                return template
    return "unrouted"


def track_request(request: Any, path: Optional[str]) -> None:
    """Count and time one REST request (called by the router as it arrives; ``path``
    is the decoded path, ``None`` when it cannot be routed)."""
    started = time.perf_counter()
    method = request.method.decode("latin-1")
    method = method if method in _METHODS else "other"

    def finished(_: Any) -> None:
        route = route_label(method, path)
        HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(route, method, str(request.code)).inc()

    request.notifyFinish().addBoth(finished)


# -- sampled state: the controller -----------------------------------------------------


class ControllerObserver:
    """Samples an OpenFlow controller's existing counters on the reactor.

    Switch connections and reconnects are counted by chaining the switch registry's
    ``on_switch_up``/``on_switch_down`` callbacks (the controller's own stay first).
    A switch's flow sync lives as long as its connection, so its counters
    (``bundles_sent``, ``reads``) are folded into running totals when it goes, and
    the totals stay monotonic across reconnects.
    """

    def __init__(self, controller: Any):
        self.controller = controller
        self.connects = 0
        self.reconnects = 0
        self.disconnects = 0
        self._seen: set = set()
        self._syncs: Dict[int, Any] = {}
        self._retired = {"bundles_sent": 0, "reads": 0, "bundles_failed": 0, "audit_repairs": 0}
        reg = controller.registry
        up, down = reg.on_switch_up, reg.on_switch_down

        def on_up(switch: Any) -> Any:
            self._switch_up(switch)
            return up(switch) if up is not None else None

        def on_down(switch: Any) -> Any:
            self._switch_down(switch)
            return down(switch) if down is not None else None

        reg.on_switch_up, reg.on_switch_down = on_up, on_down

    def _retire(self, sync: Any) -> None:
        for name in self._retired:
            self._retired[name] += int(getattr(sync, name, 0) or 0)

    def _switch_up(self, switch: Any) -> None:
        self.connects += 1
        if switch.dpid in self._seen:
            self.reconnects += 1
        self._seen.add(switch.dpid)
        old = self._syncs.pop(switch.dpid, None)
        if old is not None:
            self._retire(old)
        sync = self.controller.registry.sync_of(switch.dpid)
        if sync is not None:
            self._syncs[switch.dpid] = sync

    def _switch_down(self, switch: Any) -> None:
        self.disconnects += 1
        sync = self._syncs.get(switch.dpid)
        if sync is not None and getattr(sync, "switch", switch) is switch:
            self._retire(self._syncs.pop(switch.dpid))

    def snapshot(self) -> Dict[str, Any]:
        """Plain numbers, taken on the reactor thread (see the module docstring)."""
        ctl, reg = self.controller, self.controller.registry
        totals = dict(self._retired)
        flows: List[Tuple[str, str, int]] = []
        for dpid, sync in sorted(reg.syncs().items()):
            for name in totals:
                totals[name] += int(getattr(sync, name, 0) or 0)
            installed = sync.installed
            if installed is not None:
                flows.append((reg.host_of(dpid) or "", f"{dpid:016x}", len(installed)))
        return {
            "runs": ctl.runs, "compiles": ctl.compiles,
            "last_run": float(getattr(ctl, "_last_duration", 0.0) or 0.0),
            "switches": len(reg.switches()), "connects": self.connects,
            "reconnects": self.reconnects, "disconnects": self.disconnects,
            "flows": flows, "bundles_sent": totals["bundles_sent"], "reads": totals["reads"],
            "bundles_failed": totals["bundles_failed"], "audit_repairs": totals["audit_repairs"],
        }


# -- sampled state: objects per tenant -----------------------------------------------

#: (metric suffix, store kind, tenant field) counted per tenant.
_PER_TENANT = (("networks", "obj:network", "tenantName"),
               ("endpoint_groups", "obj:endpointGroup", "tenantName"),
               ("policies", "obj:policy", "tenantName"),
               ("endpoints", "endpoint", "tenant"))


async def tenant_counts(store: Any) -> Dict[str, Dict[str, int]]:
    """Objects per tenant from the store (intent kinds come from its kind cache)."""
    out: Dict[str, Dict[str, int]] = {}
    tenants = await store.list("obj:tenant")
    for suffix, kind, field in _PER_TENANT:
        counts = {t: 0 for t in tenants}
        for record in (await store.list(kind)).values():
            t = str(record.get(field) or "default")
            counts[t] = counts.get(t, 0) + 1
        out[suffix] = counts
    return out


class SnapshotCollector:
    """Exposes the last snapshot (taken on the reactor) as metric families."""

    def __init__(self) -> None:
        self.controller: Optional[Dict[str, Any]] = None
        self.tenants: Optional[Dict[str, Dict[str, int]]] = None

    def describe(self) -> Iterable[Any]:
        return []  # dynamic families: not checked for duplicates at registration

    def collect(self) -> Iterable[Any]:
        c = self.controller
        if c is not None:
            yield CounterMetricFamily("contiv_controller_runs", "Controller runs (each reads the "
                                      "changed records and converges the switches)",
                                      value=c["runs"])
            yield CounterMetricFamily("contiv_controller_compiles", "Controller runs that found "
                                      "a change the compiler sees", value=c["compiles"])
            yield GaugeMetricFamily("contiv_controller_last_run_seconds", "Busy time of the "
                                    "controller's last run (capped at its maximum pause)",
                                    value=c["last_run"])
            yield GaugeMetricFamily("contiv_openflow_switches_connected", "Switches connected "
                                    "to this controller", value=c["switches"])
            yield CounterMetricFamily("contiv_openflow_switch_connects", "Switch connections "
                                      "accepted", value=c["connects"])
            yield CounterMetricFamily("contiv_openflow_switch_reconnects", "Connections of a "
                                      "switch (dpid) seen before", value=c["reconnects"])
            yield CounterMetricFamily("contiv_openflow_switch_disconnects", "Switch "
                                      "connections lost", value=c["disconnects"])
            yield CounterMetricFamily("contiv_openflow_bundle_commits", "Flow bundles "
                                      "committed on switches", value=c["bundles_sent"])
            yield CounterMetricFamily("contiv_openflow_flow_readbacks", "Times a switch's flows "
                                      "were read back (first contact, after a failure, or an "
                                      "audit that found a difference)", value=c["reads"])
            yield CounterMetricFamily("contiv_openflow_bundle_failures", "Flow bundles that "
                                      "failed (refused, or the switch went away)",
                                      value=c["bundles_failed"])
            yield CounterMetricFamily("contiv_controller_audit_repairs", "Audits that found a "
                                      "switch holding a different number of our flows (it is "
                                      "read back and repaired)", value=c["audit_repairs"])
            flows = GaugeMetricFamily("contiv_openflow_flows", "Our flows on each switch, as "
                                      "the controller last installed or read them",
                                      labels=["host", "dpid"])
            for host, dpid, n in c["flows"]:
                flows.add_metric([host, dpid], n)
            yield flows
        t = self.tenants
        if t is not None:
            for suffix, counts in t.items():
                g = GaugeMetricFamily(f"contiv_{suffix}", f"{suffix.replace('_', ' ').capitalize()}"
                                      f" per tenant", labels=["tenant"])
                for tenant, n in sorted(counts.items()):
                    g.add_metric([tenant], n)
                yield g


class _Forward:
    """Collects another registry (the process one) into a listener's registry."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        return self.registry.collect()


class _ScrapeResource(Resource):
    """``prometheus_client``'s Twisted resource, preceded by a refresh on the reactor."""

    isLeaf = True

    def __init__(self, inner: Resource, refresh: Callable[[], Awaitable[None]]):
        super().__init__()
        self.inner = inner
        self.refresh = refresh
        self._failing = False

    def render(self, request: Any) -> Any:
        d = defer.ensureDeferred(self.refresh())

        def refreshed(_: Any) -> None:
            if self._failing:
                log.info("metrics refresh works again")
            self._failing = False

        def failed(f: Any) -> None:
            # a scrape still answers (with the last good snapshot); said once per outage
            if not self._failing:
                log.warn("metrics: could not refresh ({err}); serving the last values",
                         err=f.getErrorMessage())
            self._failing = True

        d.addCallbacks(refreshed, failed)
        d.addCallback(lambda _: self.inner.render(request))
        d.addErrback(lambda f: log.failure("metrics scrape failed", f))
        return NOT_DONE_YET


class Metrics:
    """A daemon's metrics: its registry and the refresh that precedes every scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Forward(REGISTRY))
        self.snapshot = SnapshotCollector()
        self.registry.register(self.snapshot)
        self.observer: Optional[ControllerObserver] = None
        self.store_of: Optional[Callable[[], Any]] = None

    def watch_controller(self, controller: Any) -> None:
        self.observer = ControllerObserver(controller)

    def watch_store(self, store_of: Callable[[], Any]) -> None:
        """Count objects per tenant from the store ``store_of()`` gives (None: not yet)."""
        self.store_of = store_of

    async def refresh(self) -> None:
        if self.observer is not None:
            self.snapshot.controller = self.observer.snapshot()
        store = self.store_of() if self.store_of is not None else None
        if store is not None:
            self.snapshot.tenants = await tenant_counts(store)

    def resource(self) -> Resource:
        """``/metrics`` (Prometheus text format); ``/`` says where to look."""
        root = Resource()
        root.putChild(b"metrics", _ScrapeResource(MetricsResource(self.registry), self.refresh))
        return root


class MetricsService(Service):
    """Serves :meth:`Metrics.resource` on an endpoint string (``tcp:9180``);
    :attr:`listening` fires with the port (or fails: cannot listen)."""

    def __init__(self, metrics: Metrics, endpoint: str, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.metrics = metrics
        self.endpoint = endpoint
        self.reactor = reactor
        self.port: Any = None
        self.listening: defer.Deferred = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        site = Site(self.metrics.resource())
        site.noisy = False
        site.log = lambda request: None  # no access-log line per scrape
        d = serverFromString(self.reactor, self.endpoint).listen(site)

        def up(port: Any) -> Any:
            self.port = port
            h = port.getHost()
            log.info("metrics on http://{host}:{port}/metrics", host=getattr(h, "host", ""),
                     port=getattr(h, "port", ""))
            return port

        d.addCallback(up)
        d.chainDeferred(self.listening)

    def address(self) -> str:
        if self.port is None:
            return ""
        h = self.port.getHost()
        return f"{getattr(h, 'host', '')}:{getattr(h, 'port', '')}"

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return None
