"""The netmaster process as a Twisted service tree.

``make_service(options)`` returns a :class:`NetmasterService` (a
``MultiService``).  On start it brings up Redis (an embedded, supervised
redis-server unless ``--redis`` is given; the state directory is locked
first), the store, the default objects, then the REST API; other parts of the
netmaster (the OpenFlow controller, DNS) are added as child services and
reach the store through ``service.store`` once ``service.when_ready()`` has
fired.

Failure and stop are bounded: if start-up fails the error is logged once, the
reactor is stopped, whatever was started is torn down and ``twistd`` exits
non-zero (rather than lingering with no listener); a stop never waits on Redis
longer than the store's timeout.  While running, the netmaster refreshes its
``state:netmaster`` record every ``refresh`` seconds and removes other
netmasters' records that stopped being refreshed (a SIGKILLed netmaster).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any, Dict, List, Optional

from twisted.application.service import MultiService
from twisted.internet import defer, error, reactor, task
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

from contiv_sdn.master.hosts import is_live
from contiv_sdn.api import NetmasterAPI
from contiv_sdn.api.auth import DEFAULT_TOKEN_TTL, Auth, Throttle
from contiv_sdn.api.site import make_site, make_tls_site
from contiv_sdn.controller.service import Controller
from contiv_sdn.controller.lease import Lease
from contiv_sdn.master.config import MasterConfig
from contiv_sdn.master.core import Master
from contiv_sdn.store import Conflict, RedisURL, Store, StoreError
from contiv_sdn.store import keys as K
from contiv_sdn.store.embedded import EmbeddedRedis

log = Logger()

NETMASTER_KIND = "netmaster"
#: Start-up failures that are the environment's, not bugs: logged without a traceback.
_EXPECTED = (RuntimeError, StoreError, error.CannotListenError, OSError)
#: How long start-up waits for an external Redis (``--redis``) to accept.
_REDIS_CONNECT_WAIT = 30.0

_exit_status = 0


def _exit_with_status() -> None:
    """twistd exits 0 whenever the reactor stops; a failed start must not."""
    if _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)


class NetmasterService(MultiService):
    #: where Prometheus metrics are served (an endpoint string; None: nowhere)
    metrics_listen: Optional[str] = None

    def __init__(self, config: MasterConfig, listen: str, redis_url: Optional[str],
                 state_dir: str, ofp_listen: Optional[str] = None, refresh: float = 10.0,
                 redis_timeout: float = 5.0, redis_backoff: float = 0.5,
                 security: Optional[Dict[str, Any]] = None, aci: Optional[dict] = None,
                 kubernetes: Optional[dict] = None):
        super().__init__()
        #: the Kubernetes watcher's settings (``--mode kubernetes``), None otherwise
        self.kubernetes = kubernetes
        self.k8s_watcher = None
        #: ACI reconciler settings (``--apic-url`` ...), None when not mirroring to an APIC
        self.aci = aci
        self.aci_reconciler = None
        #: TLS, auth and Redis-auth settings (see :func:`make_service`); empty =
        #: the zero-config local netmaster
        self.security = dict(security or {})
        self.auth: Optional[Auth] = None
        self.redis_backoff = redis_backoff
        self.refresh = refresh
        self.redis_timeout = redis_timeout
        #: set when start-up failed (twistd then exits non-zero)
        self.failed = False
        self._starting: Optional[defer.Deferred] = None
        self._stop_requested = False
        self._refresher: Optional[task.LoopingCall] = None
        self._started_at = 0.0
        self._refresh_failing = False
        self.ofp_listen = ofp_listen
        self.controller: Optional[Controller] = None
        self.config = config
        self.listen = listen
        self.redis_url = redis_url
        self.state_dir = state_dir
        self.store: Optional[Store] = None
        #: the switch lease's own Redis connection (see _start)
        self._lease_store: Optional[Store] = None
        self._audit_store: Optional[Store] = None
        self.master: Optional[Master] = None
        self.port = None
        self.embedded: Optional[EmbeddedRedis] = None
        self._waiting: List[defer.Deferred] = []
        self._ready = False
        self._instance = ""
        #: the metrics (contiv_sdn.ops.metrics.Metrics) and their listener, with metrics_listen
        self.metrics: Optional[Any] = None
        self.metrics_service: Optional[Any] = None

    def when_ready(self) -> defer.Deferred:
        """Fires with the store once Redis, the defaults and the API are up."""
        if self._ready:
            return defer.succeed(self.store)
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def address(self) -> str:
        if self.port is None:
            return ""
        h = self.port.getHost()
        return f"{getattr(h, 'host', '')}:{getattr(h, 'port', '')}"

    def startService(self) -> None:
        super().startService()
        self._starting = defer.ensureDeferred(self._start())
        self._starting.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        global _exit_status
        if failure.check(defer.CancelledError) or self._stop_requested:
            return None  # stopped while starting: not a failure
        if failure.check(*_EXPECTED):
            log.error("netmaster failed to start: {err}", err=failure.getErrorMessage())
        else:
            log.failure("netmaster failed to start", failure)
        self.failed = True
        _exit_status = 1
        for d in self._waiting:
            d.errback(failure)
        self._waiting = []
        # the reactor may not be running yet (a synchronous failure in startService)
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)
        return None

    async def _start(self) -> None:
        url = self.redis_url
        if not url:
            self.embedded = EmbeddedRedis(self.state_dir, backoff=self.redis_backoff,
                                          max_backoff=max(30.0, self.redis_backoff),
                                          auth=bool(self.security.get("redis_auth")))
            url = await self.embedded.start()
            connect_wait = self.redis_timeout
        else:
            connect_wait = max(self.redis_timeout, _REDIS_CONNECT_WAIT)
        log.info("connecting to redis {url}", url=str(RedisURL.parse(url)))
        self.store = await Store.connect(url, timeout=self.redis_timeout,
                                         connect_timeout=connect_wait)
        self.master = Master(self.store, self.config)
        await self.master.ensure_defaults()
        if self.ofp_listen:
            # The controller is a child service: it stops before the store closes.
            # every netmaster connects to every switch; the switch lease decides which
            # one is MASTER (the others stay SLAVE): see contiv_sdn.controller.lease
            # the lease renews on a connection of its own: on the shared pool its renewal
            # (deadline 0.8 s) queued behind bulk replies (at 500x10k a fill's reads held
            # it 0.3-0.6 s while the reactor ran on time, and the lease lapsed every few s)
            self._lease_store = await Store.connect(url, poolsize=1, timeout=self.redis_timeout,
                                                    connect_timeout=connect_wait)
            # and the audit compares the store with its mirror on one of its own: its
            # reads of every record must not queue in front of the REST API's calls
            self._audit_store = await Store.connect(url, poolsize=1, timeout=self.redis_timeout,
                                                    connect_timeout=connect_wait)
            self.controller = Controller(self.store, listen=self.ofp_listen,
                                         lease=Lease(self._lease_store), audit_store=self._audit_store)
            self.controller.setServiceParent(self)
            if self.metrics_listen:  # before any switch can connect: every connection counted
                self._metrics().watch_controller(self.controller)
        self._start_aci()
        self._start_kubernetes()
        sec = self.security
        if sec.get("auth"):
            self.auth = Auth(self.store, token_ttl=float(sec.get("token_ttl") or
                                                         DEFAULT_TOKEN_TTL),
                             throttle=Throttle(int(sec.get("login_max_failures") or 5),
                                               float(sec.get("login_lockout") or 1.0)))
            await self.auth.ensure_admin(_read_secret(sec.get("admin_password_file")),
                                         self.state_dir)
        api = NetmasterAPI(self.master, self.address, self.auth)
        site = make_site(api.resource())
        if sec.get("tls_cert"):
            try:
                site = make_tls_site(site, sec["tls_cert"], sec["tls_key"])
            except ValueError as e:
                raise RuntimeError(str(e)) from None
        self.port = await serverFromString(reactor, self.listen).listen(site)
        if self.metrics_listen:
            await self._start_metrics()
        tls = bool(sec.get("tls_cert")) or self.listen.startswith("ssl:")
        if sec.get("insecure_listen"):
            log.warn("{why} (this will be refused at start once the lab and the systemd unit "
                     "pass --insecure)", why=sec["insecure_listen"])
        elif sec.get("exposed") and not (tls and sec.get("auth")):
            log.warn("INSECURE: the REST API listens on {addr} without {what} (--insecure): "
                     "anyone who reaches it can rewrite every tenant's network",
                     addr=self.address(), what=" and ".join(
                         w for w, on in (("TLS", tls), ("authentication", sec.get("auth")))
                         if not on))
        self._instance = f"{self.address()}@{os.uname().nodename}:{os.getpid()}"
        self._started_at = await self.store.server_time()
        await self._register(self._started_at)
        self._refresher = task.LoopingCall(lambda: defer.ensureDeferred(self._refresh_once()))
        self._refresher.start(self.refresh, now=False)
        shown = str(RedisURL.parse(url))  # never the password
        where = "embedded redis-server " + shown if self.embedded else shown
        log.info("netmaster listening on {addr}{tls}{auth}, redis {redis}",
                 addr=self.address(), redis=where, tls=" (https)" if tls else "",
                 auth=" (login required)" if self.auth else "")
        self._ready = True
        for d in self._waiting:
            d.callback(self.store)
        self._waiting = []

    def _start_aci(self) -> None:
        """ACI: the reconciler keeping the APIC in step is a child service (it stops
        before the store closes).  ``--infra aci`` without ``--apic-url`` still
        works (the datapath side), but nothing is mirrored: said once."""
        if self.aci is not None:
            from drivers.aci import make_reconciler

            self.aci_reconciler = make_reconciler(self.store, self.aci)
            self.aci_reconciler.setServiceParent(self)
        elif self.config.infra == "aci":
            log.warn("--infra aci without --apic-url: intent is not mirrored into an APIC")

    def _start_kubernetes(self) -> None:
        """``--mode kubernetes``: the watcher (drivers/kubernetes) is a child service, so
        it stops before the store closes.  A kubeconfig that cannot be used fails the
        start; an API server that does not answer yet does not (it is retried)."""
        if self.kubernetes is None:
            return
        from drivers.kubernetes import make_watcher
        from drivers.kubernetes.config import KubeConfigError

        try:
            self.k8s_watcher = make_watcher(self.master, self.store, self.kubernetes)
        except KubeConfigError as e:
            raise RuntimeError(str(e)) from None
        self.k8s_watcher.setServiceParent(self)

    def _metrics(self) -> Any:
        if self.metrics is None:
            from contiv_sdn.ops.metrics import Metrics
            self.metrics = Metrics()
            self.metrics.watch_store(lambda: self.store)
        return self.metrics

    async def _start_metrics(self) -> None:
        """``/metrics`` on its own port, as a child service (stopped before the store
        closes): REST, Redis, the controller's counters, objects per tenant.  Failing
        to listen is a start-up failure, as for the API."""
        from contiv_sdn.ops.metrics import MetricsService
        self.metrics_service = MetricsService(self._metrics(), self.metrics_listen)
        self.metrics_service.setServiceParent(self)
        await self.metrics_service.listening

    # -- registration ---------------------------------------------------------
    def _record(self, now: float) -> Dict[str, Any]:
        return {"address": self.address(), "host": os.uname().nodename, "pid": os.getpid(),
                "started": round(self._started_at, 3), "updated": round(now, 3),
                "refresh": self.refresh}

    async def _register(self, now: float) -> None:
        await self.store.put_state(NETMASTER_KIND, self._instance, self._record(now))

    async def _refresh_once(self) -> None:
        """Refresh our record, then reap other netmasters' stale ones.

        Both use Redis's clock, so netmasters on hosts whose clocks disagree
        never reap each other.  A record is deleted only if it is still the
        stale one we read: one refreshed meanwhile stays.
        """
        store = self.store
        if store is None:
            return
        try:
            now = await store.server_time()
            await self._register(now)
            raw = await store.hgetall_raw(K.hash_of(NETMASTER_KIND))
            for key, text in sorted(raw.items()):
                if key == self._instance:
                    continue
                try:
                    record = json.loads(text)
                except ValueError:
                    record = None
                if is_live(record, now):
                    continue
                try:
                    await store.del_state(NETMASTER_KIND, key, if_raw=text)
                except Conflict:
                    continue
                log.info("removed the record of netmaster {key}: not refreshed in time", key=key)
        except StoreError as e:
            if self._stop_requested:
                return  # the store closed under a tick that was already running
            if not self._refresh_failing:
                log.warn("cannot refresh this netmaster's record in Redis: {err}", err=str(e))
            self._refresh_failing = True
            return
        except Exception:
            log.failure("netmaster record refresh failed")
            return
        if self._refresh_failing:
            log.info("netmaster record refreshed again")
        self._refresh_failing = False

    # -- stop -----------------------------------------------------------------
    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: defer.ensureDeferred(self._stop()))
        return d

    async def _stop(self) -> None:
        """Tear down whatever started; every step is bounded (the store's
        timeout, the embedded Redis's SIGKILL), so a stop never hangs on Redis."""
        self._stop_requested = True
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        self._refresher = None
        if self.port is not None:
            port, self.port = self.port, None
            await port.stopListening()
        if self.store is not None:
            store, self.store = self.store, None
            if self._instance:
                try:
                    await store.del_state(NETMASTER_KIND, self._instance)
                except StoreError as e:
                    log.warn("could not remove this netmaster's record ({err}); it expires "
                             "by itself", err=str(e))
                except Exception:
                    log.failure("could not remove this netmaster's record")
            await store.close()
        for name in ("_lease_store", "_audit_store"):  # (the controller, a child, stopped first)
            extra = getattr(self, name)
            if extra is not None:
                setattr(self, name, None)
                await extra.close()
        if self.embedded is not None:
            embedded, self.embedded = self.embedded, None
            await embedded.stop()


def _read_secret(path: Optional[str]) -> Optional[str]:
    """The first line of a password file (None without a path)."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        secret = f.readline().rstrip("\r\n")
    if not secret:
        raise RuntimeError(f"--admin-password-file {path} is empty")
    return secret


def make_service(options) -> NetmasterService:
    """The netmaster service tree from parsed :class:`NetmasterOptions`.

    Also arranges for the process to exit non-zero if start-up fails.
    """
    atexit.register(_exit_with_status)
    from contiv_sdn.ops import allocator

    tuned = allocator.tune()  # (a process-wide setting: hence here, not in a service)
    if tuned:
        log.info("C allocator: {tuned} (freed blocks go back to the system)", tuned=tuned)
    made = NetmasterService(options.config(), options["listen-endpoint"], options["redis"],
                            options["state-dir"], options.get("ofp-endpoint"),
                            refresh=float(options.get("refresh") or 10.0),
                            redis_timeout=float(options.get("redis-timeout") or 5.0),
                            redis_backoff=float(options.get("redis-restart-backoff") or 0.5),
                            security={
                                "auth": bool(options.get("auth")),
                                "tls_cert": options.get("tls-cert"),
                                "tls_key": options.get("tls-key"),
                                "exposed": bool(options.get("exposed")),
                                "insecure_listen": options.get("insecure-listen"),
                                "redis_auth": bool(options.get("redis-auth")),
                                "admin_password_file": options.get("admin-password-file"),
                                "token_ttl": options.get("token-ttl"),
                                "login_max_failures": options.get("login-max-failures"),
                                "login_lockout": options.get("login-lockout"),
                            },
                            aci=options.get("aci"), kubernetes=options.get("kubernetes"))
    made.metrics_listen = options.get("metrics-endpoint")
    trimmer = allocator.trim_service()  # (process-wide too)
    if trimmer is not None:
        trimmer.setServiceParent(made)
    return made
