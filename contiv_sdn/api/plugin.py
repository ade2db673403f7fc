"""The non-model netmaster endpoints: ``/plugin/*`` for the agents, ``/version``,
``/info``, ``/services``, ``/service/{id}`` and the two debug routes.

With ``--auth``, a ``/plugin/*`` call from a ``node`` user (a host agent; see
:mod:`contiv_sdn.api.auth`) is run for that host only: the host-bound calls get
the node's name and refuse (403, :class:`~contiv_sdn.master.hosts.NotThisHost`)
anything on another host, so a stolen or forged node credential reaches no
further than its own host.  Admins (and a netmaster without ``--auth``) are
not restricted.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict, List, Optional

from twisted.logger import Logger

from contiv_sdn import __version__
from contiv_sdn.master.hosts import NotThisHost, is_live
from contiv_sdn.api.http import HttpError
from contiv_sdn.master import Master
from contiv_sdn.master.oper import endpoint_oper
from contiv_sdn.master.servicelb import providers
from contiv_sdn.model import ModelError
from contiv_sdn.model.plugin_api import DELETE_ENDPOINT, REQUESTS

log = Logger()

#: The calls bound to a host: they take the calling node's name (``node=``).
HOST_BOUND = frozenset({"createEndpoint", "deleteEndpoint", "updateEndpoint", "registerHost"})

def local_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class PluginRoutes:
    def __init__(self, master: Master, listen_address: Callable[[], str]):
        self.master = master
        self.listen_address = listen_address
        self.calls: Dict[str, Callable] = {
            "allocAddress": master.endpoints.alloc_address,
            "releaseAddress": master.endpoints.release_address,
            "createEndpoint": master.endpoints.create_endpoint,
            "deleteEndpoint": master.endpoints.delete_endpoint,
            "updateEndpoint": master.endpoints.update_endpoint,
            # ours, not Contiv's (its netplugin wrote its node into etcd itself): hosts
            # write only through the netmaster, see contiv_sdn.master.hosts
            "registerHost": master.hosts.register,
            # ours too (swarm mode): a manager's plugin reports which docker network maps
            # to which Contiv object (Contiv's netplugin wrote oper/docknet itself); not
            # host-bound, a node may report any swarm network it is asked to allocate
            "createDocknet": master.endpoints.create_docknet,
            "deleteDocknet": master.endpoints.delete_docknet,
        }

    async def plugin(self, name: str, body: bytes, principal: Optional[Any] = None) -> Any:
        """Decode the body into the call's declared shape (Go's texts on refusal),
        then run it: nothing reaches the semantics or the store untyped.

        ``principal`` (:class:`contiv_sdn.api.auth.Principal`, with ``--auth``): a
        ``node``'s host-bound calls run for its host only."""
        shape = REQUESTS[name]
        try:
            req = shape.load(body)
        except ModelError as e:
            raise HttpError(str(e))
        node = principal.user if principal is not None and principal.role == "node" else None
        if node is None or name not in HOST_BOUND:
            return await self.calls[name](req)
        try:
            return await self.calls[name](req, node=node)
        except NotThisHost as e:
            log.info("refused {call} to node {node}: {reason}", call=name, node=node,
                     reason=str(e)[:200])
            raise

    def version(self) -> dict:
        return {"GitCommit": "unknown", "Version": __version__, "BuildTime": ""}

    async def info(self) -> dict:
        """Only live registrations (refreshed in time, see ``is_live``): a dead
        netmaster or netplugin is not a node, though a host's record stays."""
        store = self.master.store
        now = await store.server_time()
        hosts = {k: h for k, h in (await store.list("host")).items() if is_live(h, now)}
        masters = [k for k, m in (await store.list("netmaster")).items() if is_live(m, now)]
        me = self.listen_address()
        return {
            "local-ip": local_ip(),
            "leader-ip": me,
            # every netmaster serves writes (Redis arbitrates), so each is a leader
            "current-state": "leader",
            "netplugin-nodes": sorted(str(h.get("vtepIP") or name) for name, h in hosts.items()),
            "netmaster-nodes": sorted(masters),
        }

    async def services(self) -> List[dict]:
        states = await self.master.store.list("serviceLB")
        endpoints = await self.master.store.list("endpoint")
        out = []
        for key in sorted(states):
            st = states[key]
            provs = {}
            for ep in providers(endpoints, st["tenant"], st.get("selectors") or {}):
                provs[ep["id"]] = {
                    "IPAddress": ep.get("ipAddress", ""), "ContainerID": ep.get("containerID", ""),
                    "Tenant": ep.get("tenant", ""), "Network": ep.get("networkName", ""),
                    "Labels": ep.get("labels") or {}, "EpIDKey": ep["id"],
                }
            out.append({
                "servicename": st["serviceName"], "tenantname": st["tenant"],
                "network": st["networkName"], "ports": st.get("ports") or [],
                "selectors": st.get("selectors") or {}, "ipaddress": st.get("ipAddress", ""),
                "providers": provs,
            })
        return out

    async def service(self, ident: str) -> dict:
        for svc in await self.services():
            if ident in (f"{svc['servicename']}:{svc['tenantname']}", svc["servicename"]):
                return svc
        raise HttpError("service not found")

    async def epcleanup(self, tenant: str, category: str, ident: str) -> Any:
        """Force-remove stale endpoint records (Contiv PR #958), releasing their addresses."""
        endpoints = await self.master.store.list("endpoint")
        if category not in ("net", "group", "ep"):
            raise HttpError(f"invalid category {category}")
        victims = []
        for ep_id, ep in sorted(endpoints.items()):
            if ep.get("tenant") != tenant:
                continue
            if (category == "net" and ep.get("networkName") == ident) or \
                    (category == "group" and ep.get("groupName") == ident) or \
                    (category == "ep" and ident in (ep_id, ep.get("containerID"))):
                victims.append(ep)
        for ep in victims:
            await self.master.endpoints.delete_endpoint(
                DELETE_ENDPOINT.coerce({"EndpointID": ep["id"]}))
        return [endpoint_oper(ep) for ep in victims]
