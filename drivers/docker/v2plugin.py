"""The managed (v2) plugin ``netplugin:swarm`` that lets swarm-scoped networks use Contiv.

Docker 20.10 refuses legacy plugins for swarm networks (``docker network create
-d netplugin --scope swarm`` on a manager: "rpc error: code = InvalidArgument
desc = legacy plugin netplugin of type NetworkDriver is not supported in swarm
mode"; see docs/design.md, "Swarm mode").  A managed plugin is a container
Docker runs itself, built locally with ``docker plugin create NAME DIR`` from
``DIR/config.json`` + ``DIR/rootfs`` (no registry).  Ours is only a forwarder:
it listens on the socket Docker gives the plugin and relays every connection,
byte for byte, to the host's netplugin swarm socket
(:func:`drivers.docker.service.default_swarm_socket`), whose folder is bind
mounted into the plugin (the settable mount ``socketdir``).  The driver logic
stays in netplugin, so both plugins share one state.

The forwarder runs the host's ``/usr/bin/python3`` (``/usr`` mounted read-only):
no image to build or ship.  The full plugin name must be used as the driver
(``netplugin:swarm``): swarm's allocator keys drivers by the plugin's full
name ("could not resolve driver netplugin-v2 in registry" for the short one).

Synchronous (subprocesses): used by the lab and by test set-up, never on a
running reactor.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, Sequence

#: The driver (and IPAM driver) name of swarm networks.
PLUGIN_NAME = "netplugin:swarm"
#: Where the plugin sees the host's swarm socket folder.
IN_PLUGIN_DIR = "/run/contiv-host"

FORWARDER = r'''
import os, socket, sys, threading
LISTEN = "/run/docker/plugins/netplugin.sock"
TARGET = os.environ.get("CONTIV_SOCKET", "/run/contiv-host/netplugin.sock")


def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(c):
    u = socket.socket(socket.AF_UNIX)
    try:
        u.connect(TARGET)
    except OSError as e:
        sys.stderr.write(f"netplugin is not serving {TARGET}: {e}; is netplugin running "
                         "with --docker-plugin on this host?\n")
        c.close()
        return
    t = threading.Thread(target=pump, args=(u, c), daemon=True)
    t.start()
    pump(c, u)
    t.join()
    c.close()
    u.close()


try:
    os.unlink(LISTEN)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX)
s.bind(LISTEN)
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def config() -> Dict[str, object]:
    """The plugin's ``config.json`` (Docker's plugin config v1)."""
    return {
        "description": "Contiv netplugin (network + IPAM driver) for Docker swarm mode",
        "documentation": "https://github.com/contiv/netplugin",
        "entrypoint": ["/usr/bin/python3", "-u", "/forwarder.py"],
        "interface": {"socket": "netplugin.sock",
                      "types": ["docker.networkdriver/1.0", "docker.ipamdriver/1.0"]},
        "network": {"type": "host"},
        "mounts": [
            {"source": "/usr", "destination": "/usr", "type": "bind",
             "options": ["rbind", "ro"]},
            {"name": "socketdir", "description": "host folder of netplugin's swarm socket",
             "settable": ["source"], "source": "/run/docker/netplugin-swarm",
             "destination": IN_PLUGIN_DIR, "type": "bind", "options": ["rbind", "rw"]},
        ],
        "env": [{"name": "CONTIV_SOCKET", "settable": ["value"],
                 "value": f"{IN_PLUGIN_DIR}/netplugin.sock"}],
    }


def build(folder: str) -> str:
    """Write ``folder/config.json`` and ``folder/rootfs`` (idempotent); returns ``folder``."""
    rootfs = os.path.join(folder, "rootfs")
    for d in ("usr", "run/docker/plugins", IN_PLUGIN_DIR.lstrip("/"), "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                         ("sbin", "usr/sbin")):
        path = os.path.join(rootfs, link)
        if not os.path.islink(path):
            os.symlink(target, path)
    with open(os.path.join(rootfs, "forwarder.py"), "w") as f:
        f.write(FORWARDER)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config(), f, indent=1)
    return folder


def install(docker: Callable[..., object], folder: str, swarm_socket: str,
            name: str = PLUGIN_NAME) -> None:
    """Create and enable the plugin on one engine, forwarding to ``swarm_socket``.

    ``docker(*args, check=...)`` runs the docker CLI against that engine (e.g.
    :meth:`contiv_sdn.lab.docker.Dockerd.docker`).  An existing plugin of that
    name is replaced, so a changed socket folder takes effect.
    """
    build(folder)
    docker("plugin", "disable", "-f", name, check=False)
    docker("plugin", "rm", "-f", name, check=False)
    docker("plugin", "create", name, folder)
    docker("plugin", "set", name, f"socketdir.source={os.path.dirname(swarm_socket)}",
           f"CONTIV_SOCKET={IN_PLUGIN_DIR}/{os.path.basename(swarm_socket)}")
    docker("plugin", "enable", name)


__all__: Sequence[str] = ("PLUGIN_NAME", "config", "build", "install")
