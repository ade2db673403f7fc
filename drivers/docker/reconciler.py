"""Keeps one host's Docker engine in step with Contiv: networks, endpoints, container names.

**Networks follow intent.**  The wanted Docker networks are a pure function of
the netmaster's state in Redis (:func:`desired_networks`): one per data network
(``contiv-net``) and one per endpoint group (``web.contiv-net``), ``/<tenant>``
appended outside the default tenant; none in ACI mode, none for infra
networks.  A pass lists the engine's ``netplugin`` networks, creates what is
missing, removes what we made and is no longer wanted, and re-creates ours
whose subnet, gateway or placement changed.  Networks someone made by hand (no
``io.contiv.managed`` label) are never touched.  A network that still has
containers cannot be removed; the pass leaves it and tries again next time.
**None in a swarm**: when the engine is part of a swarm, users make swarm networks
(``netplugin:swarm``) on a manager, often with the Contiv network's name, and a
local network of that name would make Docker refuse theirs ("network with name
contiv-net already exists"); so a swarm node gets no local networks from us, and
ours made before it joined are removed.

Passes are level-triggered and serialized: Redis change notifications (debounced),
a Redis resubscription, dockerd coming (back) up, and a periodic timer all just
ask for one; a pass always reads everything fresh.

**Endpoints follow Docker.**  After dockerd (re)appears and periodically, every
Docker endpoint record of this host whose endpoint Docker no longer has (it
removed the container while netplugin was down and gave up telling us) is
deleted, releasing its address.  Records younger than ``grace`` seconds are
spared (Docker lists an endpoint only once the container joined).

**Reservations do not leak.**  An address Docker's IPAM reserved but never bound to
an endpoint (dockerd died between the two calls) is released after
``reservation_max_age`` seconds.

**Swarm mappings follow swarm.**  On a swarm manager (it sees every swarm
network), a docker-network mapping the netmaster keeps (``state:docknet``, what
refuses deleting a network a swarm network uses) whose docker network swarm no
longer has is dropped after ``docknet_grace`` seconds: swarm calls FreeNetwork
once and only logs its failure, so a lost call must not pin the Contiv network
for ever.  The grace covers a manager whose copy of the swarm store lags the
leader that allocated the network.

**Names reach the netmaster.**  Docker's driver calls never carry the
container's name, so on each container ``start`` event (and in every endpoint
pass) the container is inspected and its name, id and labels are sent to the
netmaster (``/plugin/updateEndpoint``), where DNS finds them.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Set

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from drivers.docker.names import (LABEL_MANAGED, Placement, placement_from_labels,
                                  placement_labels, subnet_of)

log = Logger()

DRIVER = "netplugin"
WATCHED_KINDS = {"network", "endpointGroup", "obj:global", "docknet"}
LABEL_SUBNET = "io.contiv.subnet"


def desired_networks(networks: Dict[str, dict], groups: Dict[str, dict],
                     global_obj: Optional[dict] = None) -> Dict[str, Dict[str, Any]]:
    """Docker network name → create spec, from ``state:network`` and ``state:endpointGroup``."""
    if global_obj and str(global_obj.get("networkInfraType") or "default") != "default":
        return {}  # ACI: Contiv makes no docker networks
    out: Dict[str, Dict[str, Any]] = {}
    usable: Dict[str, dict] = {}
    for key, net in networks.items():
        tenant, _, name = key.partition(":")
        tenant = net.get("tenant") or tenant
        name = net.get("networkName") or name
        if not name or net.get("nwType") == "infra" or not net.get("subnet"):
            continue
        usable[f"{tenant}:{name}"] = net
        spec = _spec(Placement(tenant, name), net)
        out[spec["Name"]] = spec
    for key, grp in groups.items():
        tenant, _, gname = key.partition(":")
        tenant = grp.get("tenant") or tenant
        gname = grp.get("groupName") or gname
        net_key = grp.get("network") or f"{tenant}:{grp.get('networkName', '')}"
        net = usable.get(net_key)
        if net is None or not gname:
            continue
        spec = _spec(Placement(tenant, net_key.partition(":")[2], gname), net)
        out[spec["Name"]] = spec
    return out


def _spec(p: Placement, net: dict) -> Dict[str, Any]:
    subnet, _ = subnet_of(str(net["subnet"]))
    ipam_cfg: Dict[str, str] = {"Subnet": subnet}
    if net.get("gateway"):
        ipam_cfg["Gateway"] = str(net["gateway"])
    encap = str(net.get("encap") or "vxlan")
    tag = net.get("vni") if encap == "vxlan" else net.get("vlan")
    opts = {"tenant": p.tenant, "network": p.network}
    if p.group:
        opts["group"] = p.group
    labels = placement_labels(p)
    labels[LABEL_SUBNET] = str(net["subnet"])
    return {
        "Name": p.docker_name, "CheckDuplicate": True, "Driver": DRIVER, "Attachable": True,
        "IPAM": {"Driver": DRIVER, "Config": [ipam_cfg], "Options": dict(opts)},
        "Options": dict(opts, encap=encap, **{"pkt-tag": str(tag or 0)}),
        "Labels": labels,
    }


def _same(spec: Dict[str, Any], have: Dict[str, Any]) -> bool:
    """Whether an existing network of ours matches the wanted spec (what matters to Docker)."""
    labels = have.get("Labels") or {}
    if placement_from_labels(labels) != placement_from_labels(spec["Labels"]):
        return False
    if labels.get(LABEL_SUBNET) != spec["Labels"][LABEL_SUBNET]:
        return False
    cfg = ((have.get("IPAM") or {}).get("Config") or [{}])[0] or {}
    want = spec["IPAM"]["Config"][0]
    return (cfg.get("Subnet") == want["Subnet"]
            and (cfg.get("Gateway") or "") == want.get("Gateway", "")
            and (have.get("IPAM") or {}).get("Driver") == DRIVER)


class DockerReconciler(Service):
    def __init__(self, docker: Any, store_url: Optional[str], endpoints: Any,
                 reactor: Any = None, interval: float = 30.0, grace: float = 60.0,
                 debounce: float = 0.2, store_factory: Any = None, driver: Any = None,
                 reservation_max_age: float = 600.0, docknet_grace: float = 5.0):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.docker = docker
        self.store_url = store_url
        self.endpoints = endpoints
        self.reactor = reactor
        self.interval = interval
        self.grace = grace
        self.debounce = debounce
        self._store_factory = store_factory
        self.driver = driver
        self.reservation_max_age = reservation_max_age
        self.docknet_grace = docknet_grace
        #: docker network id → when a pass first found its mapping's network gone
        self._docknet_gone: Dict[str, float] = {}
        self._recheck: Optional[Any] = None  # IDelayedCall of that look again
        self.store: Any = None
        self._sub: Any = None
        self._loop: Optional[task.LoopingCall] = None
        self._pending: Optional[Any] = None  # IDelayedCall of a debounced pass
        self._running: Optional[defer.Deferred] = None
        self._again = False
        self._events: Optional[defer.Deferred] = None
        self._watch: Optional[defer.Deferred] = None
        self._connecting: Optional[defer.Deferred] = None
        self.docker_up = False
        #: For tests and status: outcome counters of the passes.
        self.stats = {"passes": 0, "created": 0, "removed": 0, "reaped": 0, "named": 0,
                      "unmapped": 0, "errors": 0}
        self.last_error: Optional[str] = None
        self._first_seen: Dict[str, float] = {}

    # -- service ---------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._watch = defer.ensureDeferred(self._watch_docker())
        self._watch.addErrback(self._watch_ended)
        if self.store_url:
            self._connecting = defer.ensureDeferred(self._connect_store())
            self._connecting.addErrback(self._watch_ended)
        self._loop = task.LoopingCall(self.kick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    @staticmethod
    def _watch_ended(failure: Any) -> None:
        if not failure.check(defer.CancelledError):
            log.failure("docker reconciler task died", failure)

    async def _connect_store(self) -> None:
        from contiv_sdn.store.store import connect_retrying
        self.store = await connect_retrying(self.store_url, lambda: self.running,
                                            "docker reconciler", factory=self._store_factory,
                                            clock=self.reactor)
        if not self.running or self.store is None:
            return
        self._sub = self.store.subscribe(self._on_change, self._resync)

    def _resync(self) -> None:
        """(Re)subscribed: notifications may have been lost, so trust nothing cached."""
        if hasattr(self.endpoints, "forget"):
            self.endpoints.forget()
        self.kick()

    def _on_change(self, kind: str, key: str, op: str, rev: int) -> None:
        if kind == "network" and hasattr(self.endpoints, "forget"):
            store = self.store
            if op == "set" and store is not None and hasattr(self.endpoints, "revalidate"):
                # most sets only change the endpoint count: keep the entry if the shape held
                self.endpoints.revalidate(key, lambda: store.get("network", key))
            else:
                self.endpoints.forget(key)  # its cached inspect is stale now
        if kind in WATCHED_KINDS:
            self.kick(self.debounce)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in (self._pending, self._recheck):
            if call is not None and call.active():
                call.cancel()
        self._pending = self._recheck = None
        for d in (self._events, self._watch, self._connecting):
            if d is not None:
                d.cancel()
        waits = []
        if self._running is not None:
            waiter: defer.Deferred = defer.Deferred()
            self._running.addBoth(lambda r: (waiter.callback(None), r)[1])
            waits.append(waiter)
        if self.store is not None:
            waits.append(defer.ensureDeferred(self.store.close()))
        return defer.DeferredList(waits, consumeErrors=True)

    # -- scheduling ------------------------------------------------------------------
    def kick(self, delay: float = 0.0) -> None:
        """Ask for a pass (coalesced with any already asked for or running)."""
        if not self.running:
            return
        if self._running is not None:
            self._again = True
            return
        if self._pending is not None and self._pending.active():
            return
        self._pending = self.reactor.callLater(delay, self._start_pass)

    def _start_pass(self) -> None:
        self._pending = None
        if not self.running or self._running is not None:
            return
        self._again = False
        d = defer.ensureDeferred(self.run_once())

        def done(result: Any) -> None:
            self._running = None
            if hasattr(result, "getErrorMessage"):
                self.stats["errors"] += 1
                self.last_error = result.getErrorMessage()
                log.warn("docker reconcile pass failed: {err}", err=self.last_error)
            if self._again:
                self.kick(self.debounce)

        self._running = d
        d.addBoth(done)

    def idle(self) -> defer.Deferred:
        """Fires once no pass is running or scheduled (tests)."""
        if self._running is None and not (self._pending and self._pending.active()):
            return defer.succeed(None)
        return task.deferLater(self.reactor, 0.05, self.idle)

    # -- one pass ----------------------------------------------------------------------
    async def run_once(self) -> None:
        if not self.docker_up:
            return
        self.stats["passes"] += 1
        if self.store is not None:
            swarm = await self._swarm()  # once per pass: both steps depend on it
            await self.sync_networks(swarm)
            if self.driver is not None:
                await self.sync_docknets(swarm)
        if getattr(self.endpoints, "ready", True):
            await self.sync_endpoints()
        if self.driver is not None:
            await self.driver.release_stale(self.reservation_max_age)

    async def sync_networks(self, swarm: Optional[Dict[str, Any]] = None) -> None:
        """``swarm``: the engine's swarm membership (:meth:`_swarm`), asked when not given."""
        if swarm is None:
            swarm = await self._swarm()
        networks = await self.store.list("network")
        groups = await self.store.list("endpointGroup")
        global_obj = await self.store.get("obj:global", "global")
        wanted = desired_networks(networks, groups, global_obj)
        wanted_all = wanted
        if swarm.get("LocalNodeState") == "active":
            wanted = {}
        have = {n["Name"]: n for n in await self.docker.list_networks(DRIVER)}
        for name, net in sorted(have.items()):
            ours = (net.get("Labels") or {}).get(LABEL_MANAGED) == "true"
            if not ours:
                continue
            spec = wanted.get(name)
            if spec is not None and _same(spec, await self._full(net)):
                continue
            why = "changed" if spec else ("no longer in contiv" if name not in wanted_all
                                          else "the engine joined a swarm")
            if await self._remove(name, net, why):
                have.pop(name)
        for name, spec in sorted(wanted.items()):
            if name in have:
                if (have[name].get("Labels") or {}).get(LABEL_MANAGED) != "true":
                    log.warn("docker network {name} exists but was not made by netplugin; "
                             "leaving it alone", name=name)
                continue
            try:
                await self.docker.create_network(spec)
                self.stats["created"] += 1
                log.info("docker network {name} created", name=name)
            except Exception as e:
                self.stats["errors"] += 1
                self.last_error = f"create {name}: {e}"
                log.warn("docker network {name} not created: {err}", name=name, err=e)

    async def _swarm(self) -> Dict[str, Any]:
        """The engine's swarm membership ({} when it cannot be told: treated as no swarm)."""
        try:
            return await self.docker.swarm()
        except Exception as e:
            log.info("cannot tell whether dockerd is in a swarm: {err}", err=e)
            return {}

    async def _full(self, net: Dict[str, Any]) -> Dict[str, Any]:
        if "IPAM" in net and "Labels" in net:
            return net
        return await self.docker.inspect_network(net["Id"]) or net

    async def _remove(self, name: str, net: Dict[str, Any], why: str) -> bool:
        full = await self.docker.inspect_network(net["Id"]) or {}
        if full.get("Containers"):
            log.info("docker network {name} {why} but still has {n} container(s); keeping it "
                     "for now", name=name, why=why, n=len(full["Containers"]))
            return False
        try:
            await self.docker.remove_network(net["Id"])
        except Exception as e:
            self.stats["errors"] += 1
            self.last_error = f"remove {name}: {e}"
            log.warn("docker network {name} not removed: {err}", name=name, err=e)
            return False
        self.stats["removed"] += 1
        log.info("docker network {name} removed ({why})", name=name, why=why)
        return True

    async def sync_docknets(self, swarm: Optional[Dict[str, Any]] = None) -> None:
        """Drop the netmaster's mappings of swarm networks swarm no longer has."""
        mappings = await self.store.list("docknet")
        if not mappings:
            self._docknet_gone.clear()
            return
        if swarm is None:
            swarm = await self._swarm()
        if not (swarm.get("ControlAvailable") and swarm.get("LocalNodeState") == "active"):
            return  # a worker sees only the swarm networks its tasks use
        now = time.monotonic()
        uuids = {str(rec.get("docknetUUID") or "") for rec in mappings.values()} - {""}
        for uuid in sorted(uuids):
            try:
                present = await self.docker.inspect_network(uuid) is not None
            except Exception as e:
                log.info("cannot inspect swarm network {id}: {err}", id=uuid[:12], err=e)
                continue
            if present:
                self._docknet_gone.pop(uuid, None)
                continue
            first = self._docknet_gone.setdefault(uuid, now)
            if now - first < self.docknet_grace:
                if first == now and not (self._recheck and self._recheck.active()):
                    # look again once the grace is over
                    self._recheck = self.reactor.callLater(self.docknet_grace, self.kick)
                continue
            try:
                await self.driver.netmaster.delete_docknet(uuid)
            except Exception as e:
                self.stats["errors"] += 1
                log.warn("swarm network {id} is gone but its mapping was not dropped: {err}",
                         id=uuid[:12], err=e)
                continue
            self._docknet_gone.pop(uuid, None)
            self.stats["unmapped"] += 1
            log.info("swarm network {id} is gone (its FreeNetwork never reached the netmaster); "
                     "mapping dropped", id=uuid[:12])
        for uuid in list(self._docknet_gone):
            if uuid not in uuids:
                self._docknet_gone.pop(uuid, None)

    async def sync_endpoints(self) -> None:
        """Reap endpoints Docker forgot; send container names the netmaster lacks."""
        known: Dict[str, Dict[str, Any]] = {}
        nets = await self.docker.list_networks(DRIVER)
        if self.driver is not None:
            self.driver.state.prune_networks({n["Id"] for n in nets})
        for net in nets:
            full = await self.docker.inspect_network(net["Id"]) or {}
            for cid, info in (full.get("Containers") or {}).items():
                if info.get("EndpointID"):
                    known[info["EndpointID"]] = {"container": cid, "name": info.get("Name", "")}
        now = time.monotonic()
        records = await self.endpoints.list()
        current: Set[str] = set()
        for record in records:
            ep_id = record["id"]
            current.add(ep_id)
            if ep_id in known:
                seen = known[ep_id]
                if (record.get("containerName") != seen["name"]
                        or record.get("containerID") != seen["container"]):
                    await self._name(seen["container"])
                continue
            first = self._first_seen.setdefault(ep_id, now)
            if now - first < self.grace:
                continue
            log.info("docker endpoint {id} is unknown to dockerd; reaping it", id=ep_id[:12])
            try:
                await self.endpoints.delete(ep_id)
                self.stats["reaped"] += 1
            except Exception as e:
                self.stats["errors"] += 1
                log.warn("reaping docker endpoint {id} failed: {err}", id=ep_id[:12], err=e)
        for ep_id in list(self._first_seen):
            if ep_id not in current or ep_id in known:
                self._first_seen.pop(ep_id, None)

    # -- container names ------------------------------------------------------------------
    async def _name(self, container_id: str) -> None:
        info = await self.docker.inspect_container(container_id)
        if not info:
            return
        name = str(info.get("Name") or "").lstrip("/")
        labels = {str(k): str(v) for k, v in ((info.get("Config") or {}).get("Labels")
                                                or {}).items()}
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        for net in nets.values():
            ep_id = (net or {}).get("EndpointID")
            if not ep_id:
                continue
            try:
                if await self.endpoints.set_container(ep_id, info.get("Id", container_id), name,
                                                      labels):
                    self.stats["named"] += 1
            except Exception as e:
                log.warn("cannot record container {name} for endpoint {id}: {err}", name=name,
                         id=ep_id[:12], err=e)

    def _on_event(self, event: Dict[str, Any]) -> None:
        action = event.get("Action") or event.get("status")
        typ = event.get("Type")
        if typ == "container" and action == "start":
            cid = event.get("id") or (event.get("Actor") or {}).get("ID")
        elif typ == "network" and action == "connect":
            cid = ((event.get("Actor") or {}).get("Attributes") or {}).get("container")
        else:
            return
        if cid:
            d = defer.ensureDeferred(self._name(cid))
            d.addErrback(lambda f: log.warn("naming container {id}: {err}", id=cid[:12],
                                            err=f.getErrorMessage()))

    # -- dockerd up/down ---------------------------------------------------------------------
    async def _watch_docker(self) -> None:
        """Follow dockerd: when it (re)appears, reconcile and listen to its events."""
        delay = 0.2
        while self.running:
            if not await self.docker.ping():
                if self.docker_up:
                    log.info("dockerd at {path} went away", path=self.docker.path)
                self.docker_up = False
                if not self.running:
                    break  # stopService cancelled the ping: leave no timer behind
                await task.deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            if not self.docker_up:
                log.info("dockerd at {path} is up; reconciling", path=self.docker.path)
            self.docker_up = True
            self.kick()
            self._events = self.docker.events(
                {"type": ["container", "network"], "event": ["start", "connect"]},
                self._on_event)
            try:
                await self._events
            except defer.CancelledError:
                return
            except Exception as e:
                log.info("docker event stream ended: {err}", err=e)
            finally:
                self._events = None
            if not self.running:
                return
            # the stream ends when dockerd stops: look again shortly
            await task.deferLater(self.reactor, 0.2, lambda: None)
