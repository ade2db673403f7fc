"""``lab up --swarm``: the lab hosts' dockerds as one Docker swarm (issue 17).

Docker's swarm mode is what replaced the seed README's classic Swarm: node1's
engine is the manager (``docker swarm init --advertise-addr <node1 underlay IP>``),
every other host's engine joins it over the underlay (``docker swarm join --token
… <node1>:2377``), and each engine gets the managed plugin ``netplugin:swarm``
(:mod:`drivers.docker.v2plugin`), which forwards to that host's netplugin.  Users
then point the docker CLI at the manager (the ``DOCKER_HOST`` printed) and create
swarm networks with ``--driver netplugin:swarm --ipam-driver netplugin:swarm
--opt contiv-tag=TAG --ipam-opt contiv-tag=TAG``.

Choices, each forced by the engine or by the lab:

* the engines run without ``--live-restore`` (refused in swarm mode: "--live-restore
  daemon configuration is incompatible with swarm mode"); a restarted engine's tasks
  come back because swarm schedules them again;
* ``--data-path-port`` is not VXLAN's 4789: every host's OVS already owns that UDP
  port in the host's namespace for Contiv's tunnels, and swarm's own overlay
  (its ingress network) must not take it;
* ``--default-addr-pool``: swarm's own networks (ingress) come from a range the lab's
  Contiv networks do not use;
* all swarm state is in each engine's data folder under the lab root, so ``down``
  (which removes the engines' folders) leaves nothing; the nodes leave the swarm
  first so no engine waits for a manager that is gone.

Synchronous (subprocesses), like the rest of the lab.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, List

from drivers.docker import v2plugin
from drivers.docker.service import default_swarm_socket

if TYPE_CHECKING:
    from contiv_sdn.lab.core import Host, Lab

#: The UDP port of swarm's own VXLAN data path (not 4789, which OVS holds).
DATA_PATH_PORT = 7789
#: Where swarm's own networks (ingress) take their subnets.
DEFAULT_ADDR_POOL = "10.250.0.0/16"
#: The manager's swarm API port (Docker's default).
MANAGER_PORT = 2377


class SwarmError(RuntimeError):
    """The swarm could not be formed; the text says which engine and what it answered."""


def _docker_of(lab: "Lab", host: str) -> Callable[..., object]:
    """``docker(*args, check=…)`` against one host's engine, for :func:`v2plugin.install`."""
    def docker(*args: str, check: bool = True) -> object:
        return lab.docker(host, *args, check=check, timeout=120)
    return docker


def manager(lab: "Lab") -> "Host":
    return lab.hosts[0]


def docker_host(lab: "Lab") -> str:
    """The ``DOCKER_HOST`` of the swarm manager (node1's engine)."""
    return "unix://" + lab.docker_socket(manager(lab).name)


def install_plugin(lab: "Lab", h: "Host") -> None:
    """The managed plugin on one engine, forwarding to that host's netplugin swarm socket."""
    v2plugin.install(_docker_of(lab, h.name), os.path.join(h.dir, "swarm-plugin"),
                     default_swarm_socket(lab.plugin_socket(h.name)))


def form(lab: "Lab", timeout: float = 90.0) -> str:
    """Install the plugin everywhere, init the swarm on node1, join the others, wait until
    every node is Ready; returns the manager's ``DOCKER_HOST``."""
    first = manager(lab)
    for h in lab.hosts:
        install_plugin(lab, h)
        lab.progress(f"{h.name}: plugin {v2plugin.PLUGIN_NAME} enabled")
    lab.docker(first.name, "swarm", "init", "--advertise-addr", first.vtep_ip,
               "--listen-addr", f"{first.vtep_ip}:{MANAGER_PORT}",
               "--data-path-port", str(DATA_PATH_PORT),
               "--default-addr-pool", DEFAULT_ADDR_POOL, timeout=120)
    token = lab.docker(first.name, "swarm", "join-token", "-q", "worker").stdout.strip()
    for h in lab.hosts[1:]:
        lab.docker(h.name, "swarm", "join", "--token", token, "--advertise-addr", h.vtep_ip,
                   "--listen-addr", f"{h.vtep_ip}:{MANAGER_PORT}",
                   f"{first.vtep_ip}:{MANAGER_PORT}", timeout=120)
        lab.progress(f"{h.name}: joined the swarm")
    wait_ready(lab, timeout)
    host = docker_host(lab)
    lab.progress(f"swarm: manager {first.name} ({first.vtep_ip}), {len(lab.hosts)} nodes; "
                 f"export DOCKER_HOST={host}")
    return host


def ready_nodes(lab: "Lab") -> List[str]:
    """The node ids the manager sees Ready."""
    out = lab.docker(manager(lab).name, "node", "ls", "--format", "{{.ID}} {{.Status}}",
                     check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1] == "Ready"]


def wait_ready(lab: "Lab", timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = ready_nodes(lab)
        if len(ready) >= len(lab.hosts):
            return
        if time.monotonic() > deadline:
            raise SwarmError(f"swarm: {len(ready)} of {len(lab.hosts)} nodes Ready after "
                             f"{timeout:g} s; see the engines' dockerd.log under {lab.root}")
        time.sleep(0.5)


def node_id(lab: "Lab", host: str) -> str:
    """The swarm node id of a host's engine."""
    return lab.docker(host, "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()


def leave(lab: "Lab") -> None:
    """Every engine leaves the swarm (workers first), best effort: part of ``down``."""
    for h in list(lab.hosts[1:]) + [manager(lab)]:
        if os.path.exists(lab.docker_socket(h.name)):
            lab.docker(h.name, "swarm", "leave", "--force", check=False, timeout=60)


__all__ = ["DATA_PATH_PORT", "DEFAULT_ADDR_POOL", "SwarmError", "form", "leave", "docker_host",
           "install_plugin", "ready_nodes", "wait_ready", "node_id"]
