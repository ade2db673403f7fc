"""Several netmasters in the lab (issue 15): ``up --netmasters N [--redis-sentinel]``.

Netmaster number i (0-based) serves REST on ``netmaster_port + i`` and OpenFlow on
``ofp_port + i`` (on the underlay gateway), with its own directory (``netmaster``
for the first, whose service key stays ``netmaster`` so everything that knows one
netmaster keeps working, then ``netmaster2``, ``netmaster3`` as ``netmaster:2``…).
Every netplugin gets all of them as ``--controller`` targets and ``--netmaster``
URLs; the switch lease (:mod:`contiv_sdn.controller.lease`) makes one of them
MASTER of every ``br-int``.

Redis: a netmaster's embedded redis-server is its own (a private process under its
``--state-dir``, restarted by that netmaster): sharing it would tie every netmaster's
state to the first one's life.  So with several netmasters the lab runs Redis
itself, as lab processes under ``<root>/redis`` (pidfiles there: ``down`` finds
them also after a crash):

* ``--redis-sentinel``: a primary, 2 replicas and 3 sentinels
  (:class:`~contiv_sdn.testing.redisgroup.RedisGroup`'s command lines) bound to the
  underlay gateway so the hosts' namespaces reach them; every service gets
  ``--redis sentinel://gw:p1,gw:p2,gw:p3/contiv``;
* ``--netmasters N`` alone: one redis-server on a UNIX socket (no failover of the
  store: the netmasters are redundant, Redis is not).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING, Dict, List, Optional

from contiv_sdn.lab import http
from contiv_sdn.lab.ovs import OvsError
from contiv_sdn.lab.procs import Service
from contiv_sdn.lab.sh import LabError

if TYPE_CHECKING:
    from contiv_sdn.lab.core import Lab

SENTINEL_NAME = "contiv"
#: bound to the underlay gateway (not loopback) without a password, Redis's protected
#: mode would refuse the replicas, the sentinels and the hosts: the lab's underlay is a
#: private bridge on this machine (--secure is the authenticated lab)
UNPROTECTED = ["--protected-mode", "no"]


def enabled(lab: "Lab") -> bool:
    """Whether the lab runs its own Redis (several netmasters, or Sentinel)."""
    return lab.config.netmasters > 1 or lab.config.redis_sentinel


def check(lab: "Lab") -> None:
    """Refuse the combinations the HA lab does not build (say what to change)."""
    c = lab.config
    if c.netmasters < 1:
        raise LabError("--netmasters must be at least 1")
    if not enabled(lab):
        return
    if not c.start_services:
        raise LabError("--netmasters/--redis-sentinel start services: leave out --no-services")
    if c.secure:
        raise LabError("--secure with --netmasters/--redis-sentinel is not built yet (the "
                       "secure lab's Redis ACL belongs to the embedded redis-server): use one "
                       "or the other")


# -- netmasters -----------------------------------------------------------------
def keys(lab: "Lab") -> List[str]:
    """Service keys of the netmasters, the first one's being ``netmaster``."""
    return ["netmaster"] + [f"netmaster:{i + 1}" for i in range(1, lab.config.netmasters)]


def index_of(key: str) -> int:
    return 0 if key == "netmaster" else int(key.split(":", 1)[1]) - 1


def directory(lab: "Lab", index: int) -> str:
    return os.path.join(lab.root, "netmaster" if index == 0 else f"netmaster{index + 1}")


def rest_port(lab: "Lab", index: int) -> int:
    return lab.config.netmaster_port + index


def ofp_port(lab: "Lab", index: int) -> int:
    return lab.config.ofp_port + index


def url(lab: "Lab", index: int) -> str:
    """Netmaster ``index``'s REST URL from the root namespace."""
    return f"http://127.0.0.1:{rest_port(lab, index)}"


def target(lab: "Lab", index: int) -> str:
    """Netmaster ``index``'s OpenFlow target as the hosts' OVS names it."""
    return f"tcp:{lab.subnet.gateway}:{ofp_port(lab, index)}"


def urls(lab: "Lab") -> List[str]:
    return [url(lab, i) for i in range(lab.config.netmasters)]


def underlay_urls(lab: "Lab") -> str:
    """``--netmaster`` of the netplugins: every netmaster over the underlay."""
    return ",".join(f"http://{lab.subnet.gateway}:{rest_port(lab, i)}"
                    for i in range(lab.config.netmasters))


def controller_targets(lab: "Lab") -> str:
    """``--controller`` of the netplugins: every netmaster's OpenFlow listener."""
    return ",".join(target(lab, i) for i in range(lab.config.netmasters))


def netmaster_options(lab: "Lab") -> List[tuple]:
    """Options every netmaster gets on top of the lab's usual ones."""
    return [("redis", redis_url(lab))]


def start_standbys(lab: "Lab") -> None:
    """Netmasters 2..N (the first is started by the lab as always)."""
    for i in range(1, lab.config.netmasters):
        svc = lab._netmaster_service(i)
        svc.start()
        lab._register(keys(lab)[i], svc)
    for i in range(1, lab.config.netmasters):
        wait_netmaster(lab, i)


def wait_netmaster(lab: "Lab", index: int) -> None:
    svc = lab.services[keys(lab)[index]]

    def ready() -> bool:
        status, _ = http.request("GET", "/version", base_url=url(lab, index), timeout=2)
        return status == 200

    lab._wait(f"netmaster {index + 1}", svc, ready, timeout=30)
    lab.progress(f"netmaster {index + 1}: {url(lab, index)}, OpenFlow {target(lab, index)} "
                 f"(pid {svc.pid}, log {svc.logfile})")


def kill_netmaster(lab: "Lab", key: str) -> None:
    """SIGKILL one netmaster (for tests: a crashed leader)."""
    svc = lab.services.get(key)
    if svc is None:
        raise LabError(f"no netmaster {key!r} (netmasters: {', '.join(keys(lab))})")
    svc.stop(lab.root, kill=True)


def start_netmaster(lab: "Lab", key: str) -> None:
    """Start a stopped netmaster again with the same command line."""
    svc = lab.services.get(key)
    if svc is None:
        raise LabError(f"no netmaster {key!r} (netmasters: {', '.join(keys(lab))})")
    if svc.alive(lab.root):
        raise LabError(f"{key} is running (pid {svc.current_pid(lab.root)})")
    svc = svc.fresh()
    svc.start()
    lab._update(lambda: lab.services.__setitem__(key, svc))
    wait_netmaster(lab, index_of(key))


def roles(lab: "Lab") -> Dict[str, Dict[str, str]]:
    """host -> {netmaster key: OVS's role for its connection ("" not connected)}.

    OVS refreshes this column every few seconds: right after a takeover it may
    still show the old view."""
    by_target = {target(lab, i): k for i, k in enumerate(keys(lab))}
    out: Dict[str, Dict[str, str]] = {}
    for h in lab.hosts:
        try:
            text = h.ovs.vsctl("--format=csv", "--data=bare", "--no-headings",
                               "--columns=target,role,is_connected", "list", "controller")
        except (OvsError, subprocess.TimeoutExpired, OSError):
            continue
        seen: Dict[str, str] = {}
        for line in text.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[0] in by_target:
                seen[by_target[parts[0]]] = parts[1] if parts[2] == "true" else ""
        out[h.name] = seen
    return out


def leader(lab: "Lab") -> Optional[str]:
    """The netmaster every host's br-int has as MASTER (None: none, or they disagree)."""
    found = set()
    for seen in roles(lab).values():
        masters = [k for k, r in seen.items() if r == "master"]
        if len(masters) != 1:
            return None
        found.add(masters[0])
    return found.pop() if len(found) == 1 else None


def status(lab: "Lab") -> dict:
    """For ``lab status``: each netmaster with its role, and the Redis URL."""
    r = roles(lab)
    nms = []
    for i, k in enumerate(keys(lab)):
        svc = lab.services.get(k)
        role = {h: seen.get(k, "") for h, seen in r.items()}
        vals = set(role.values())
        nms.append({"key": k, "url": url(lab, i), "target": target(lab, i),
                    "alive": bool(svc and svc.alive(lab.root)),
                    "pid": svc.current_pid(lab.root) if svc else None,
                    "role": (vals.pop().upper() or "NOT CONNECTED") if len(vals) == 1
                    else ("MIXED " + str(role) if vals else "-")})
    out = {"netmasters": nms, "redis_url": redis_url(lab)}
    if lab.config.redis_sentinel:
        out["redis_primary"] = redis_primary(lab)
    return out


# -- Redis ----------------------------------------------------------------------
def redis_dir(lab: "Lab") -> str:
    return os.path.join(lab.root, "redis")


def _ports(lab: "Lab", kind: str) -> List[int]:
    return [int(k.split(":", 1)[1]) for k in lab.services if k.startswith(kind + ":")]


def data_ports(lab: "Lab") -> List[int]:
    return sorted(_ports(lab, "redis"))


def sentinel_ports(lab: "Lab") -> List[int]:
    return sorted(_ports(lab, "sentinel"))


def redis_url(lab: "Lab") -> str:
    if lab.config.redis_sentinel:
        hosts = ",".join(f"{lab.subnet.gateway}:{p}" for p in sentinel_ports(lab))
        return f"sentinel://{hosts}/{SENTINEL_NAME}"
    return f"unix://{os.path.join(redis_dir(lab), 'redis.sock')}"


def _group(lab: "Lab", data: Optional[List[int]] = None, sentinels: Optional[List[int]] = None):
    from contiv_sdn.testing.redisgroup import RedisGroup
    g = RedisGroup(root=redis_dir(lab), name=SENTINEL_NAME, host=lab.subnet.gateway)
    if data is not None:
        g.data_ports = data
    if sentinels is not None:
        g.sentinel_ports = sentinels
    return g


def _data_service(lab: "Lab", port: int, replica_of: Optional[int]) -> Service:
    d = redis_dir(lab)
    pidfile = os.path.join(d, f"redis-{port}.pid")
    argv = _group(lab).data_argv(port, replica_of) + [
        "--pidfile", pidfile, "--logfile", os.path.join(d, f"redis-{port}.log")] + UNPROTECTED
    return Service(f"redis-{port}", argv, d, pidfile=pidfile)


def start_redis(lab: "Lab") -> None:
    """The lab's own Redis, before any netmaster (they all connect to it)."""
    d = redis_dir(lab)
    os.makedirs(d, exist_ok=True)
    if not lab.config.redis_sentinel:
        sock = os.path.join(d, "redis.sock")
        pidfile = os.path.join(d, "redis.pid")
        argv = ["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
                "--dir", d, "--appendonly", "yes", "--save", "", "--daemonize", "no",
                "--pidfile", pidfile, "--logfile", os.path.join(d, "redis.log")]
        svc = Service("redis", argv, d, pidfile=pidfile)
        svc.start()
        lab._register("redis", svc)

        lab._wait("redis", svc, lambda: _ping_unix(sock), timeout=20)
        lab.progress(f"redis: {redis_url(lab)} (pid {svc.pid})")
        return
    g = _group(lab)
    primary = g.data_ports[0]
    for p in g.data_ports:
        svc = _data_service(lab, p, None if p == primary else primary)
        svc.start()
        lab._register(f"redis:{p}", svc)
    for p in g.sentinel_ports:
        pidfile = os.path.join(d, f"sentinel-{p}.pid")
        argv = g.sentinel_argv(p, primary) + [
            "--pidfile", pidfile, "--logfile", os.path.join(d, f"sentinel-{p}.log")] + UNPROTECTED
        svc = Service(f"sentinel-{p}", argv, d, pidfile=pidfile)
        svc.start()
        lab._register(f"sentinel:{p}", svc)
    first = lab.services[f"redis:{primary}"]
    lab._wait("the Redis Sentinel group (primary, 2 replicas online, 3 sentinels agreeing)",
              first, lambda: g.ready(primary) and all(
                  s.alive() for k, s in lab.services.items()
                  if k.startswith(("redis:", "sentinel:"))), timeout=40)
    lab.progress(f"redis: primary {lab.subnet.gateway}:{primary}, replicas "
                 f"{', '.join(str(p) for p in g.data_ports[1:])}; {redis_url(lab)}")


def _ping_unix(sock: str) -> bool:
    import socket
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(sock)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_primary(lab: "Lab") -> Optional[int]:
    """The data port a majority of the sentinels names as primary now."""
    return _group(lab, data_ports(lab), sentinel_ports(lab)).primary_port()


def kill_redis(lab: "Lab", port: int) -> None:
    """SIGKILL one data node (for tests: a dead primary)."""
    lab.services[f"redis:{port}"].stop(lab.root, kill=True)


def wait_redis_failover(lab: "Lab", old: int, timeout: float = 30.0) -> int:
    """The new primary once a majority of the sentinels names one other than ``old``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = redis_primary(lab)
        if p is not None and p != old:
            return p
        time.sleep(0.1)
    raise LabError(f"no Sentinel failover away from port {old} within {timeout:g} s "
                   f"(logs in {redis_dir(lab)})")


def restart_redis_as_replica(lab: "Lab", port: int) -> None:
    """Start a killed data node again, as a replica of the current primary."""
    primary = redis_primary(lab)
    if primary is None:
        raise LabError("the sentinels name no primary: cannot rejoin a replica")
    svc = _data_service(lab, port, primary)
    svc.start()
    lab._update(lambda: lab.services.__setitem__(f"redis:{port}", svc))
