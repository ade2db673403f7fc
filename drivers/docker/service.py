"""The Docker side of ``twistd netplugin``, as one service the agent adds to itself.

Wiring it into the agent is two lines in ``contiv_sdn/agent/service.py``
(``NetpluginService.__init__``), given ``--docker-plugin`` / ``--docker``
options::

    from drivers.docker.service import make_docker_plugin_service
    if options.get("docker-plugin"):
        self.docker = make_docker_plugin_service(self, options["docker-plugin"],
                                                 options["docker"])
        self.docker.setServiceParent(self)

It serves the ``netplugin`` network + IPAM driver on ``socket_path`` (Docker finds
``/run/docker/plugins/netplugin.sock``; in the lab each host's dockerd sees its
own plugin folder there) and runs the reconciler that keeps the engine at
``docker_socket`` in step with Contiv.

It also serves the same driver with global scope on ``swarm_socket`` (default
:func:`default_swarm_socket`), which the managed plugin ``netplugin:swarm``
forwards to (:mod:`drivers.docker.v2plugin`): Docker accepts only managed
plugins for swarm-scoped networks, and a legacy plugin with global scope would
break the reconciler's per-host networks ("Cannot create a multi-host network
from a worker node").
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from twisted.application.service import MultiService
from twisted.internet import defer

from contiv_sdn.agent.netmaster import NetmasterSession

from drivers.docker.client import DockerClient
from drivers.docker.driver import DockerDriver
from drivers.docker.endpoints import DockerEndpoints
from drivers.docker.netmaster import PluginNetmaster
from drivers.docker.reconciler import DockerReconciler
from drivers.docker.resource import plugin_server, plugin_site
from drivers.docker.state import DriverState

DEFAULT_PLUGIN_SOCKET = "/run/docker/plugins/netplugin.sock"
DEFAULT_DOCKER = "unix:///var/run/docker.sock"


def default_swarm_socket(socket_path: str) -> str:
    """``<parent of the plugin folder>/netplugin-swarm/netplugin.sock``: beside the legacy
    plugin folder, not in it (dockerd would find it there as a legacy plugin too)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(socket_path)))
    return os.path.join(folder, "netplugin-swarm", "netplugin.sock")


def agent_session(agent: Any) -> Optional[NetmasterSession]:
    """The netmaster session of the agent's own client (one login shared by every client
    of the process); else one from its options (an agent without a client, in tests)."""
    session = getattr(getattr(agent, "netmaster", None), "session", None)
    if isinstance(session, NetmasterSession):
        return session
    config = getattr(agent, "config", None)
    return NetmasterSession.from_options(config) if isinstance(config, Mapping) else None


class DockerPluginService(MultiService):
    """Plugin socket + reconciler; parts reachable as attributes (``driver``, ``reconciler``…)."""

    def __init__(self, agent: Any, socket_path: str, docker_socket: str,
                 store_url: Optional[str] = None, reactor: Any = None,
                 reconcile_interval: float = 30.0, grace: float = 60.0,
                 swarm_socket: Optional[str] = None):
        super().__init__()
        reactor = reactor or getattr(agent, "reactor", None)
        config = getattr(agent, "config", {}) or {}
        self.socket_path = socket_path
        self.docker = DockerClient(docker_socket, reactor=reactor)
        # the agent's session: its node credential and TLS trust (--netmaster-*), so the
        # driver's calls reach an HTTPS --auth netmaster as the agent's own do
        self.netmaster = PluginNetmaster(config.get("netmaster", "http://127.0.0.1:9999"),
                                         reactor=reactor, session=agent_session(agent))
        self.endpoints = DockerEndpoints(agent, self.netmaster)
        state_dir = getattr(agent, "state_dir", None) or config.get("state-dir")
        self.state = DriverState(os.path.join(state_dir, "docker-driver.json")
                                 if state_dir else None)
        self.driver = DockerDriver(self.endpoints, self.netmaster, self.state, self.docker,
                                   host=getattr(agent, "host", ""))
        self.site = plugin_site(self.driver)
        self.server = plugin_server(socket_path, self.site)
        self.server.setServiceParent(self)
        self.swarm_socket = swarm_socket or default_swarm_socket(socket_path)
        os.makedirs(os.path.dirname(self.swarm_socket), exist_ok=True)
        self.swarm_driver = DockerDriver(self.endpoints, self.netmaster, self.state,
                                         self.docker, host=getattr(agent, "host", ""),
                                         scope="global")
        self.swarm_site = plugin_site(self.swarm_driver)
        self.swarm_server = plugin_server(self.swarm_socket, self.swarm_site)
        self.swarm_server.setServiceParent(self)
        if store_url is None:
            store_url = config.get("redis")
        self.reconciler = DockerReconciler(self.docker, store_url, self.endpoints,
                                           reactor=reactor, interval=reconcile_interval,
                                           grace=grace, driver=self.driver)
        self.reconciler.setServiceParent(self)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        yield super().stopService()
        self.site.close_connections()
        self.swarm_site.close_connections()
        yield self.docker.close()
        yield self.netmaster.close()


def make_docker_plugin_service(agent: Any, socket_path: str = DEFAULT_PLUGIN_SOCKET,
                               docker_socket: str = DEFAULT_DOCKER,
                               store_url: Optional[str] = None, **kw: Any) -> DockerPluginService:
    """The service the agent adds (see the module docstring for the two lines)."""
    return DockerPluginService(agent, socket_path, docker_socket, store_url=store_url, **kw)
