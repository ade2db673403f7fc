"""Docker endpoints on the agent: the veth is left in the host for dockerd to move.

For CNI and the local API the agent creates the container's interface straight
in the container's namespace and configures it.  Docker works differently: the
remote driver's ``Join`` only *names* an interface in dockerd's own namespace
and dockerd moves it into the sandbox, renames it (``eth0``) and gives it the
address and gateway the driver reported (lab.md: "the plugin must create the
veth in the namespace where that dockerd runs").  So the container end is
created in the host namespace under a name derived from the endpoint id
(``ct`` + 12 hex, next to the host end ``cv`` + 12 hex) with MAC, MTU and TX
offload set (those survive the move), but without address or route.

Everything else is the agent's: its one create path
(:meth:`~contiv_sdn.agent.endpoints.EndpointManager.create` with ``handoff=True``:
the allocation, the veth made while the netmaster allocates, the OVS port, the
rollback), its delete, and — crucially — the record format (the OVS port's
``external_ids``), so ``GET /v1/endpoints``, deletion and the agent's reaper
treat Docker endpoints like any other.  What this module adds is Docker's side:
the container end's name, the cache of network shapes kept in step with Redis'
change feed, and the container's name and labels once Docker started it.  The
recorded namespace is the host's own; the agent reaps a Docker endpoint when its
host-side veth disappears, i.e. when the container's namespace (holding the
other end) died without Docker telling us.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.logger import Logger

from contiv_sdn.agent.endpoints import BadRequest, EndpointRequest, port_name, prefix_len
from contiv_sdn.agent.locks import KeyedLocks

from drivers.docker.names import Placement
from drivers.docker.netmaster import PluginNetmaster
from drivers.docker.protocol import DriverError

log = Logger()

#: Marks a Docker endpoint in its record (``owner``), so reconcilers can tell them apart.
OWNER = "docker"


def network_shape(net: Dict[str, Any]) -> tuple:
    """What an endpoint takes from its network: (prefix length, gateway, encapsulation).

    Works on the netmaster's inspect ``Config`` and on the network's state record in
    Redis alike (same field names); an unreadable subnet is a shape of its own.
    """
    try:
        plen: Any = prefix_len(str(net.get("subnet", "")))
    except ValueError:
        plen = None
    return (plen, str(net.get("gateway") or ""), str(net.get("encap") or "vxlan"))


def container_ifname(endpoint_id: str) -> str:
    """The container end's name while it waits in the host namespace: ``ct`` + 12 hex."""
    return "ct" + port_name(endpoint_id)[2:]


class CreateFailed(DriverError):
    """``released`` tells whether the address given to create was released by the undo."""

    def __init__(self, message: str, released: bool, status: int = 500):
        super().__init__(message, status)
        self.released = released


class DockerEndpoints:
    """Create/delete/look up Docker endpoints through the agent's parts (see module doc)."""

    def __init__(self, agent: Any, netmaster: PluginNetmaster):
        self.manager = agent.endpoints
        self.netmaster = netmaster
        self._locks = KeyedLocks()
        self._networks: Dict[str, Dict[str, Any]] = {}
        #: Networks whose change notification is being checked (see :meth:`revalidate`).
        self._checking: Dict[str, defer.Deferred] = {}
        #: Bumped by every forget/revalidate, so an answer read before is not cached after.
        self._epoch = 0

    @property
    def ready(self) -> bool:
        return bool(self.manager.ready)

    def _require_ready(self) -> None:
        if not self.ready:
            raise DriverError(f"netplugin on {self.manager.host} is still setting up its bridge; "
                              "retry in a moment")

    async def _locked(self, endpoint_id: str, fn: Any) -> Any:
        return await self._locks.run(endpoint_id, fn)

    # -- queries -------------------------------------------------------------------
    async def get(self, endpoint_id: str) -> Optional[Dict[str, Any]]:
        self._require_ready()
        return await self.manager.get(endpoint_id)

    async def list(self) -> list:
        self._require_ready()
        return [r for r in await self.manager.list() if r.get("owner") == OWNER]

    # -- create ----------------------------------------------------------------------
    async def create(self, endpoint_id: str, placement: Placement, ip: str,
                     mac: str = "") -> Dict[str, Any]:
        """Allocate (netmaster), make the veth in the host, attach the host end to br-int."""
        self._require_ready()
        return await self._locked(endpoint_id,
                                  lambda: self._create(endpoint_id, placement, ip, mac))

    async def network(self, p: Placement) -> Dict[str, Any]:
        """The network's configuration, cached: only its shape (prefix length, gateway,
        encapsulation) is used, and :meth:`forget` / :meth:`revalidate` keep the cache in step
        with Redis' change feed."""
        key = p.network_key
        net = self._networks.get(key)
        if net is None and key in self._checking:
            # a change notification is being checked: wait for its verdict
            await self._checking[key]
            net = self._networks.get(key)
        if net is None:
            epoch = self._epoch
            net = await self.netmaster.network(p.tenant, p.network)
            if epoch == self._epoch:  # nothing was forgotten while we asked
                self._networks[key] = net
        return net

    def forget(self, network_key: Optional[str] = None) -> None:
        """Drop one cached network (or all): it went, or notifications may have been lost."""
        self._epoch += 1
        if network_key is None:
            self._networks.clear()
        else:
            self._networks.pop(network_key, None)

    def revalidate(self, network_key: str, fetch: Callable[[], Any]) -> None:
        """A network's record changed in Redis: keep its cached entry only if the shape is the same.

        The netmaster rewrites a network's record on every endpoint create and delete (its
        endpoint count), so dropping the entry on each change would empty the cache on every
        attach.  ``fetch`` reads the record from the store; until it answers, the entry is
        out of the cache and :meth:`network` waits for the verdict rather than use it.
        """
        # answers and verdicts in flight predate this change: none of them may fill the cache
        self._epoch += 1
        cached = self._networks.pop(network_key, None)
        if cached is None:
            return
        epoch = self._epoch
        checking = defer.maybeDeferred(fetch)
        done: defer.Deferred = defer.Deferred()
        self._checking[network_key] = done

        def verdict(record: Any) -> None:
            same = (isinstance(record, dict) and epoch == self._epoch
                    and network_key not in self._networks
                    and network_shape(record) == network_shape(cached))
            if same:
                self._networks[network_key] = cached
            else:
                log.info("network {key} changed shape or went; its cache entry is dropped",
                         key=network_key)

        def failed(failure: Any) -> None:
            log.warn("cannot re-read network {key} ({err}); its cache entry is dropped",
                     key=network_key, err=failure.getErrorMessage())

        def finish(_: Any) -> None:
            if self._checking.get(network_key) is done:
                del self._checking[network_key]
            done.callback(None)

        checking.addCallbacks(verdict, failed).addBoth(finish)

    async def _create(self, endpoint_id: str, p: Placement, ip: str,
                      mac: str) -> Dict[str, Any]:
        """The agent's create with the container end handed off to dockerd (module doc)."""
        req = EndpointRequest(id=endpoint_id, netns=self.manager.host_netns, network=p.network,
                              ifname=container_ifname(endpoint_id), tenant=p.tenant,
                              group=p.group, ip=ip, mac=mac, owner=OWNER)
        released: List[bool] = []
        try:
            return await self.manager.create(req, handoff=True,
                                             network=lambda tenant, network: self.network(p),
                                             on_rollback=released.append)
        except Exception as e:
            status = 400 if isinstance(e, BadRequest) else 500
            raise CreateFailed(str(e), bool(released and released[0]), status) from None

    # -- after the container started ---------------------------------------------------
    async def set_container(self, endpoint_id: str, container_id: str, name: str,
                            labels: Optional[Dict[str, str]] = None) -> bool:
        """Record the container behind an endpoint (netmaster + local record); False if unknown."""
        self._require_ready()

        async def run() -> bool:
            record = await self.manager.get(endpoint_id)
            if record is None:
                return False
            if (record.get("containerName") == name and record.get("containerID") == container_id
                    and (labels is None or record.get("labels") == labels)):
                return True
            net = str(record.get("network", ""))
            tenant, _, network = net.partition(":")
            group = str(record.get("group", "")).partition(":")[2]
            p = Placement(tenant or "default", network, group)
            await self.netmaster.update_endpoint(p, endpoint_id, str(record.get("ipAddress", "")),
                                                 container_id, name, labels)
            record.update({"containerID": container_id, "containerName": name})
            if labels is not None:
                record["labels"] = dict(labels)
            await self.manager.update_record(record)
            return True

        return await self._locked(endpoint_id, run)

    # -- delete ------------------------------------------------------------------------
    async def delete(self, endpoint_id: str) -> bool:
        """The agent's delete (port, veth by its host end, netmaster release); idempotent."""
        self._require_ready()

        # the container end exists alone only if the host end was already gone; it goes
        # with the veth (same thread hop), or on its own when the agent knew nothing
        return await self._locked(endpoint_id, lambda: self.manager.delete(
            endpoint_id, also_links=(container_ifname(endpoint_id),)))
