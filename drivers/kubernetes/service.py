"""The netmaster's Kubernetes watcher: a child service of ``twistd netmaster --mode kubernetes``.

On start (the store is up):

1. the default network for pods without an ``io.contiv.network`` label
   (``--k8s-default-network``, default ``default-net`` in tenant ``default``, subnet
   ``--k8s-default-subnet``, default ``10.244.0.0/16``) is created if it does not
   exist — an existing one is left as it is;
2. a reflector per kind (Namespaces, Pods, NetworkPolicies, Services, EndpointSlices) lists and watches the API
   server, and the :class:`~drivers.kubernetes.reconcile.Reconciler` converges Redis
   from them; the store's change feed tells it of endpoint records created or
   rewritten (a pod's endpoint made by the CNI path after the pod's last event).

The API server being unreachable at start is not a start-up failure: the netmaster
serves its REST API and the reflectors retry with back-off (logged once).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from drivers.kubernetes.client import KubeClient
from drivers.kubernetes.config import KubeConfig
from drivers.kubernetes.reconcile import Reconciler
from drivers.kubernetes.watch import Reflector

log = Logger()

DEFAULT_NETWORK = "default-net"
DEFAULT_TENANT = "default"
#: Not 10.96.0.0/12: that is kubeadm's default Service range.  10.244.0.0/16 is the pod
#: range most clusters' documentation uses (kubeadm --pod-network-cidr examples).
DEFAULT_SUBNET = "10.244.0.0/16"
KINDS = ("Namespace", "Pod", "NetworkPolicy", "Service", "EndpointSlice")


class KubernetesWatcher(Service):
    """Reflectors + reconciler; ``settings``: see :func:`make_watcher`."""

    name = "kubernetes"

    def __init__(self, master: Any, store: Any, cfg: KubeConfig, settings: Dict[str, Any]):
        self.master = master
        self.store = store
        self.cfg = cfg
        self.settings = dict(settings)
        self.client = KubeClient(cfg, user_agent="contiv-sdn-netmaster")
        self.reflectors: Dict[str, Reflector] = {}
        self.reconciler = Reconciler(store, self.reflectors)
        for kind in KINDS:
            self.reflectors[kind] = Reflector(
                self.client, kind, self.reconciler,
                watch_timeout=int(self.settings.get("watch_timeout") or 300))
        self._sub: Optional[Any] = None
        self._starting: Optional[defer.Deferred] = None

    def startService(self) -> None:
        super().startService()
        self._starting = defer.ensureDeferred(self._start())
        self._starting.addErrback(lambda f: log.failure("the Kubernetes watcher did not start",
                                                        f))

    async def _start(self) -> None:
        await self.ensure_default_network()
        if not self.running:
            return
        self._sub = self.store.subscribe(self._on_change, self.reconciler.all_endpoints)
        log.info("watching the Kubernetes API at {server} ({source})", server=self.cfg.server,
                 source=self.cfg.source)
        for refl in self.reflectors.values():
            refl.start()

    def _on_change(self, kind: str, key: str, op: str, rev: int) -> None:
        if kind == "endpoint" and op == "set":
            self.reconciler.endpoint_changed(key)

    async def ensure_default_network(self) -> None:
        """The network pods without placement labels land in (never rewritten)."""
        from contiv_sdn.master.errors import MasterError
        from contiv_sdn.model import TYPES
        from contiv_sdn.model import validate as model_validate
        from contiv_sdn.store.keys import obj_kind

        tenant = self.settings.get("default_tenant") or DEFAULT_TENANT
        name = self.settings.get("default_network") or DEFAULT_NETWORK
        subnet = self.settings.get("default_subnet") or DEFAULT_SUBNET
        key = f"{tenant}:{name}"
        if await self.store.get(obj_kind("network"), key) is not None:
            return
        net = ipaddress.ip_network(subnet, strict=False)
        obj = {"tenantName": tenant, "networkName": name, "subnet": str(net),
               "gateway": str(net.network_address + 1), "encap": "vxlan"}
        try:
            await self.master.post("network", key, model_validate(TYPES["network"], obj, key))
        except MasterError as e:
            log.error("cannot create the default pod network {name} ({subnet}) in tenant "
                      "{tenant}: {err}; pods without an io.contiv.network label will not start "
                      "until it exists (netctl net create)", name=name, subnet=str(net),
                      tenant=tenant, err=str(e))
            return
        log.info("created the default pod network {name} ({subnet}) in tenant {tenant}",
                 name=name, subnet=str(net), tenant=tenant)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        for refl in self.reflectors.values():
            await refl.stop()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.stop()
            except Exception:
                pass
        await self.reconciler.stop()
        await self.client.close()


def make_watcher(master: Any, store: Any, settings: Dict[str, Any]) -> KubernetesWatcher:
    """The watcher from the netmaster's options (``kubeconfig``: the file, or None for the
    in-cluster configuration; ``default_network``, ``default_subnet``)."""
    from drivers.kubernetes.config import resolve
    cfg = resolve(settings.get("kubeconfig"))
    return KubernetesWatcher(master, store, cfg, settings)
