"""The netplugin process as assembled: the host agent plus the drivers its options ask for.

The agent (:mod:`contiv_sdn.agent`) knows nothing of drivers, and drivers build only
on the agent's public API; this is the one place that puts them together, used by
``twistd netplugin`` and by tests that run the whole process in-process.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional


def make_service(options: Mapping[str, Any], host_netns: Optional[str] = None) -> Any:
    """The agent from parsed ``contiv_sdn.agent.options.Options``, with the Docker
    network/IPAM driver attached when ``--docker-plugin`` names its socket.

    ``host_netns`` (tests only): see :func:`contiv_sdn.agent.service.make_service`.
    """
    from contiv_sdn.agent.service import make_service as make_agent

    agent = make_agent(options, host_netns=host_netns)
    attach_cni(agent)
    if options.get("docker-plugin"):
        from drivers.docker.service import make_docker_plugin_service

        make_docker_plugin_service(agent, options["docker-plugin"],
                                   options["docker"]).setServiceParent(agent)
    return agent


def attach_cni(agent: Any) -> None:
    """The CNI plugin runs in netplugin for the C shim's calls (``POST /v1/cni``,
    drivers/cni/shim.c): the same function the Python plugin runs."""
    from drivers.cni.main import answer

    agent.api.cni.answer = answer
