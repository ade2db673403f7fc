"""The lab: N simulated hosts (network namespaces, each with its own OVS) and the services.

``Lab`` is the one Python API behind ``python -m contiv_sdn.lab``, the end-to-end
tests, ``make demo`` and the benchmarks.  It is synchronous on purpose (plain
subprocesses with timeouts): callers on a reactor run it in a thread.

Everything it creates is named from its prefixes and recorded in
``<root>/state.json`` as it goes, so ``down`` can remove exactly that, also
after a crashed ``up`` (it then scans for the names and pidfiles it would have
created) and never anything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

from contiv_sdn.lab import http, topology
from contiv_sdn.lab.ovs import OvsError, OvsInstance
from contiv_sdn.lab.procs import (Service, alive, belongs_to, pidfiles_under, read_pidfile,
                                  stop_pids)
from contiv_sdn.lab.sh import LabError, ip, run
from contiv_sdn.lab.topology import Names, Subnet

if TYPE_CHECKING:
    from contiv_sdn.lab.docker import Dockerd, Podman

DEFAULT_ROOT = os.environ.get("CONTIV_LAB_ROOT", "/run/contiv-lab")
STATE_FILE = "state.json"
UNDERLAY_BRIDGE_OVS = "br-ul"
INTEGRATION_BRIDGE = "br-int"
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass
class LabConfig:
    """What defines a lab; stored in the state file so later commands find the same lab."""

    hosts: int = 2
    root: str = DEFAULT_ROOT
    start_services: bool = True
    prefix: str = "node"
    link_prefix: str = "ctv"
    subnet: str = "192.168.50.0/24"
    netmaster_port: int = 9999
    ofp_port: int = 6653
    mtu: int = 1500
    python: str = sys.executable
    docker: bool = False
    #: ACI mode: a stand-in APIC (drivers/aci/standin.py, not an APIC) on loopback, and
    #: netmaster started with --infra aci pointing at it
    aci: bool = False
    apic_port: int = 8181
    #: netmaster's Prometheus /metrics on 127.0.0.1 at this port (--metrics-listen); 0: none
    metrics_port: int = 0
    #: every channel authenticated: HTTPS + --auth, node users, OpenFlow TLS, Redis ACL
    #: (contiv_sdn/lab/secure.py)
    secure: bool = False
    #: the dockerds form a Docker swarm (manager node1) with the plugin netplugin:swarm
    #: (contiv_sdn/lab/swarm.py); needs docker
    swarm: bool = False
    #: Kubernetes mode (contiv_sdn/lab/kube.py): the API server stand-in on
    #: 127.0.0.1:kubeapi_port, netmaster --mode kubernetes, a kubelet stand-in per host
    kubernetes: bool = False
    kubeapi_port: int = 6443
    #: several netmasters (REST on netmaster_port+i, OpenFlow on ofp_port+i) on a Redis
    #: the lab runs itself; with redis_sentinel a Sentinel group (contiv_sdn/lab/ha.py)
    netmasters: int = 1
    redis_sentinel: bool = False
    #: netplugin --host-access: each host's root namespace reaches the default tenant's
    #: containers and VIPs through contivh0 (contiv_sdn/agent/hostport.py)
    host_access: bool = False


@dataclass
class Container:
    """A "container": a network namespace on a host with an endpoint made by that host's netplugin."""

    host: str
    name: str
    netns: str
    id: str
    network: str
    tenant: str = "default"
    group: str = ""
    ip: Optional[str] = None
    mac: Optional[str] = None
    endpoint: Dict[str, Any] = field(default_factory=dict)

    def exec(self, *cmd: str, timeout: float = 30, check: bool = False,
             input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the container's namespace; output captured as text."""
        return run(cmd, netns=self.netns, timeout=timeout, check=check, input=input)

    def to_json(self) -> dict:
        return asdict(self)


class Host:
    """One simulated host: namespace ``name``, its own OVS, optionally a netplugin."""

    def __init__(self, lab: "Lab", index: int):
        self.lab = lab
        self.index = index
        self.name = lab.names.host(index)
        self.netns = self.name
        self.vtep_ip = lab.subnet.host_ip(index)
        self.dir = os.path.join(lab.root, self.name)
        self.ovs = OvsInstance(os.path.join(self.dir, "ovs"), netns=self.netns)
        self.socket = os.path.join(self.dir, "netplugin.sock")

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.vtep_ip}>"

    @property
    def service_key(self) -> str:
        return f"netplugin:{self.name}"

    @property
    def ovs_env(self) -> Dict[str, str]:
        """Makes plain ``ovs-vsctl``/``ovs-ofctl br-int``/``ovs-appctl`` reach this host's OVS."""
        return {"OVS_RUNDIR": self.ovs.dir, "OVS_LOGDIR": self.ovs.dir, "OVS_DBDIR": self.ovs.dir}

    def exec(self, *cmd: str, timeout: float = 30, check: bool = False,
             input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the host's namespace (OVS tools find its OVS); output as text."""
        return run(cmd, netns=self.netns, timeout=timeout, check=check, input=input,
                   env=self.ovs_env)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """Call this host's netplugin API (UNIX socket); raises ``http.ApiError`` on >= 400."""
        try:
            return http.call(method, path, body, unix=self.socket, timeout=timeout)
        except OSError as e:
            raise LabError(f"netplugin on {self.name} does not answer on {self.socket}: {e}") from e

    def controllers(self, bridge: str = INTEGRATION_BRIDGE) -> Dict[str, bool]:
        """The bridge's controller targets and whether each is connected."""
        try:
            out = self.ovs.vsctl("--format=json", "--columns=target,is_connected", "list",
                                 "controller")
            targets = set(self.ovs.vsctl("get-controller", bridge).split())
        except (OvsError, subprocess.TimeoutExpired):
            return {}
        rows = json.loads(out).get("data", [])
        return {str(t): bool(c) for t, c in rows if str(t) in targets}

    def flow_count(self, bridge: str = INTEGRATION_BRIDGE) -> Optional[int]:
        try:
            return len(self.ovs.dump_flows(bridge))
        except (OvsError, subprocess.TimeoutExpired):
            return None


def ping_argv() -> List[str]:
    """``ping`` if installed, else busybox's (Debian's busybox-static is in the install list)."""
    if shutil.which("ping"):
        return ["ping"]
    if shutil.which("busybox"):
        return ["busybox", "ping"]
    raise LabError("no ping: install iputils-ping or busybox-static")


def twistd_argv(python: str) -> List[str]:
    """``twistd`` of the given Python's environment (``python -m twisted`` is ``twist``)."""
    script = os.path.join(os.path.dirname(python), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [python, "-c", "from twisted.scripts.twistd import run; run()"]


def plugin_options(plugin: str) -> Optional[set]:
    """The long options of ``twistd PLUGIN`` (None: no such plugin in this tree).

    The services are written in parallel with the lab, so the lab passes only the
    options a plugin has.  Read from the plugin's Options class in this process
    (a ``--help`` subprocess costs a Python start-up per plugin).
    """
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    for maker in getPlugins(IServiceMaker):
        if getattr(maker, "tapname", None) == plugin:
            return {o.rstrip("=") for o in maker.options().longOpt}
    return None


def _config_kwargs(d: dict) -> dict:
    """A stored config as ``Lab`` arguments (keys of other versions ignored)."""
    known = {f for f in LabConfig.__dataclass_fields__}
    return {k: v for k, v in d.items() if k in known}


class Lab:
    """N hosts as network namespaces with their own OVS, joined by an underlay, plus services."""

    def __init__(self, hosts: int = 2, root: str = DEFAULT_ROOT, start_services: bool = True,
                 prefix: str = "node", link_prefix: str = "ctv",
                 subnet: str = "192.168.50.0/24", netmaster_port: int = 9999,
                 ofp_port: int = 6653, mtu: int = 1500, python: str = sys.executable,
                 docker: bool = False, progress: Optional[Progress] = None,
                 aci: bool = False, apic_port: int = 8181, metrics_port: int = 0,
                 secure: bool = False, swarm: bool = False, kubernetes: bool = False,
                 kubeapi_port: int = 6443, netmasters: int = 1, redis_sentinel: bool = False,
                 host_access: bool = False):
        if hosts < 1:
            raise LabError("a lab needs at least one host")
        if swarm and not (docker and start_services):
            raise LabError("--swarm needs the hosts' dockerds (leave out --no-docker and "
                           "--no-services)")
        self.config = LabConfig(hosts=hosts, root=os.path.abspath(root),
                                start_services=start_services, prefix=prefix,
                                link_prefix=link_prefix, subnet=subnet,
                                netmaster_port=netmaster_port, ofp_port=ofp_port, mtu=mtu,
                                python=python, docker=docker, aci=aci, apic_port=apic_port,
                                metrics_port=metrics_port, secure=secure, swarm=swarm,
                                kubernetes=kubernetes, kubeapi_port=kubeapi_port,
                                netmasters=netmasters, redis_sentinel=redis_sentinel,
                                host_access=host_access)
        self.root = self.config.root
        self.names = Names(prefix=prefix, link_prefix=link_prefix)
        self.subnet = Subnet(subnet)
        self.progress: Progress = progress or _quiet
        from contiv_sdn.lab.secure import LabSecurity
        #: the secure mode's secrets and arguments (None: the lab speaks in clear)
        self.security = LabSecurity(self.root, self.subnet.gateway) if secure else None
        self.hosts: List[Host] = [Host(self, i) for i in range(1, hosts + 1)]
        self.services: Dict[str, Service] = {}
        self.containers: Dict[str, Container] = {}
        self.phase = "down"
        from contiv_sdn.lab import ha
        ha.check(self)

    @property
    def ha(self) -> bool:
        """Several netmasters / Sentinel: the lab runs Redis itself (contiv_sdn/lab/ha.py)."""
        from contiv_sdn.lab import ha
        return ha.enabled(self)

    # -- construction from the state file ---------------------------------
    @classmethod
    def load(cls, root: str = DEFAULT_ROOT, progress: Optional[Progress] = None) -> "Lab":
        """The lab recorded under ``root`` (for commands after ``up``)."""
        state = cls._read_state_file(os.path.abspath(root))
        if state is None:
            raise LabError(f"no lab under {root} (no {STATE_FILE}): run `up` first")
        lab = cls(progress=progress, **_config_kwargs(state["config"]))
        lab._apply_state(state)
        return lab

    def _check_root(self) -> None:
        """Refuse to build in or remove a directory that is not a lab's (``--root /``...)."""
        if not os.path.isdir(self.root) or not os.listdir(self.root):
            return
        if os.path.exists(os.path.join(self.root, STATE_FILE)) or \
                os.path.exists(os.path.join(self.root, ".lock")):
            return
        raise LabError(f"{self.root} exists and is not a lab directory: choose another --root")

    @staticmethod
    def _read_state_file(root: str) -> Optional[dict]:
        try:
            with open(os.path.join(root, STATE_FILE)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LabError(f"unreadable {root}/{STATE_FILE}: {e}; `down` still cleans up") from e

    def _apply_state(self, state: dict) -> None:
        self.phase = state.get("phase", "down")
        self.services = {k: Service.from_json(v) for k, v in state.get("services", {}).items()}
        self.containers = {k: Container(**v) for k, v in state.get("containers", {}).items()}

    def _state(self) -> dict:
        return {"version": 1, "phase": self.phase, "config": asdict(self.config),
                "services": {k: s.to_json() for k, s in self.services.items()},
                "containers": {k: c.to_json() for k, c in self.containers.items()}}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise state changes between lab commands running at the same time."""
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, ".lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _save(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, STATE_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self._state(), f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def _update(self, change: Callable[[], None]) -> None:
        """Re-read the file (another command may have changed it), apply, write."""
        with self._locked():
            state = self._read_state_file(self.root)
            if state is not None:
                # containers are what concurrent commands change; services stay ours
                self.containers = {k: Container(**v)
                                   for k, v in state.get("containers", {}).items()}
            change()
            self._save()

    # -- accessors ----------------------------------------------------------
    def __enter__(self) -> "Lab":
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")

    @property
    def web_url(self) -> str:
        """The netmaster's web view of the fabric."""
        return self.netmaster_url + "/web/"

    @property
    def metrics_url(self) -> str:
        """The netmaster's Prometheus metrics ("" when started without them)."""
        port = self.config.metrics_port
        return f"http://127.0.0.1:{port}/metrics" if port else ""

    @property
    def _scheme(self) -> str:
        return "https" if self.security else "http"

    @property
    def netmaster_url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.config.netmaster_port}"

    @property
    def netmaster_underlay_url(self) -> str:
        """How the hosts reach netmaster: the underlay bridge's address in the root namespace."""
        if self.ha:  # every netmaster, comma-separated: the clients fail over
            from contiv_sdn.lab import ha
            return ha.underlay_urls(self)
        return f"{self._scheme}://{self.subnet.gateway}:{self.config.netmaster_port}"

    def netctl_env(self) -> Dict[str, str]:
        """Environment for ``netctl`` against this lab's netmaster (URL; in secure mode
        also the CA and the home whose token file the lab's login wrote)."""
        if self.ha:
            from contiv_sdn.lab import ha
            return {"NETMASTER": ",".join(ha.urls(self))}
        if self.security:
            return self.security.netctl_env(self.netmaster_url)
        return {"NETMASTER": self.netmaster_url}

    def netmaster_http(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`http.call` for netmaster (URL, CA, token)."""
        if self.security:
            return self.security.http_kwargs(self.netmaster_url)
        return {"base_url": self.netmaster_url}

    @property
    def controller_target(self) -> str:
        if self.ha:  # every netmaster: the switch lease picks the MASTER
            from contiv_sdn.lab import ha
            return ha.controller_targets(self)
        return f"tcp:{self.subnet.gateway}:{self.config.ofp_port}"

    @property
    def redis_dir(self) -> str:
        # The netmaster's embedded redis-server (no --redis): the first run needs no set-up,
        # and it outlives a SIGKILLed netmaster, whose successor adopts it.
        return os.path.join(self.root, "netmaster", "state")

    @property
    def redis_socket(self) -> str:
        return os.path.join(self.redis_dir, "redis.sock")

    @property
    def redis_url(self) -> str:
        if self.ha:
            from contiv_sdn.lab import ha
            return ha.redis_url(self)
        return f"unix://{self.redis_socket}"

    def container(self, target: str) -> Container:
        """A container by namespace (``node1-web``) or by name (``web``, if unique)."""
        if target in self.containers:
            return self.containers[target]
        found = [c for c in self.containers.values() if c.name == target]
        if len(found) == 1:
            return found[0]
        if found:
            raise LabError(f"{target!r} is on several hosts: say "
                           + " or ".join(c.netns for c in found))
        raise LabError(f"no container {target!r}")

    def exec_env(self, target: str) -> Dict[str, str]:
        """Environment for commands in ``target``: a host's OVS tools find its own OVS."""
        for h in self.hosts:
            if h.name == target:
                return h.ovs_env
        return {}

    def netns_of(self, target: str) -> str:
        """The namespace of a host (``node1``), a container (``node1-web`` / ``web``) or,
        in Kubernetes mode, a pod (``namespace/name``)."""
        if self.config.kubernetes and "/" in target:
            from contiv_sdn.lab import kube
            return kube.pod_netns(self, target)
        for h in self.hosts:
            if h.name == target:
                return h.netns
        try:
            return self.container(target).netns
        except LabError as e:
            if self.containers or "several" in str(e):
                raise
            raise LabError(f"no host or container {target!r} (hosts: "
                           f"{', '.join(h.name for h in self.hosts)})") from None

    # -- up -------------------------------------------------------------------
    def up(self) -> "Lab":
        """Build hosts, underlay, OVS and (unless disabled) the services; undo all on failure."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, OVS)")
        for tool in ("ip", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl") + \
                (("redis-server",) if self.config.start_services else ()):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} not found: run `make install`")
        self.names.check(len(self.hosts))
        previous = self._read_state_file(self.root)
        self._check_root()
        if previous is not None:
            old = Lab(progress=_quiet, **_config_kwargs(previous["config"]))
            old._apply_state(previous)
            if previous.get("phase") in ("starting", "up") and old._anything_alive():
                raise LabError(f"a lab is already up under {self.root} "
                               f"({previous['config']['hosts']} hosts): run `down` first")
            old._teardown(quiet=True)
        # leftovers of a crashed run with our names: remove them before building
        self._teardown(quiet=True)
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        open(os.path.join(self.root, ".lock"), "a").close()  # also marks the dir as a lab's
        self.services, self.containers, self.phase = {}, {}, "starting"
        self._save()
        try:
            self._build_underlay()
            for h in self.hosts:
                self._build_host(h)
            self._check_underlay()
            if self.config.start_services:
                self._start_services()
            self.phase = "up"
            self._save()
            self.progress(f"lab up: {len(self.hosts)} hosts"
                          + (f", netmaster {self.netmaster_url}" if self.config.start_services
                             else " (no services)"))
            if self.config.kubernetes and self.config.start_services:
                from contiv_sdn.lab import kube
                self.progress(f"kubeconfig: {kube.kubeconfig_path(self)} (kubectl --kubeconfig "
                              f"{kube.kubeconfig_path(self)} get nodes)")
        except BaseException as e:
            self.progress(f"up failed ({type(e).__name__}); tearing down what was started")
            try:
                self.down()
            except Exception as e2:  # report the first failure, not the cleanup's
                self.progress(f"down after failed up: {e2}")
            raise
        return self

    def _supported_options(self, plugin: str) -> set:
        opts = plugin_options(plugin)
        if opts is None:
            raise LabError(f"`twistd {plugin}` is not available in this tree "
                           f"(twisted/plugins/contiv_{plugin}.py); use --no-services")
        return opts

    def _build_underlay(self) -> None:
        topology.create_bridges(self.names, self.subnet, self.config.mtu)
        self.progress(f"underlay: bridge {self.names.underlay_bridge} "
                      f"{self.subnet.gateway}/{self.subnet.prefixlen}, "
                      f"VLAN trunk bridge {self.names.trunk_bridge}")

    def _build_host(self, h: Host) -> None:
        topology.create_netns(h.netns)
        topology.create_netns(self.names.dns_netns(h.name))
        self._save()
        topology.create_host_links(self.names, h.name, self.config.mtu)
        try:
            h.ovs.start()
        except (OvsError, OSError, subprocess.SubprocessError) as e:
            raise LabError(f"{h.name}: OVS did not start: {e} (logs in {h.ovs.dir})") from e
        h.ovs.add_bridge(UNDERLAY_BRIDGE_OVS, fail_mode="standalone")
        h.ovs.vsctl("--may-exist", "add-port", UNDERLAY_BRIDGE_OVS, "eth0")
        ip("addr", "replace", f"{h.vtep_ip}/{self.subnet.prefixlen}", "dev", UNDERLAY_BRIDGE_OVS,
           netns=h.netns)
        ip("link", "set", UNDERLAY_BRIDGE_OVS, "mtu", str(self.config.mtu), "up", netns=h.netns)
        self.progress(f"{h.name}: namespace, underlay {h.vtep_ip}/{self.subnet.prefixlen} on OVS "
                      f"{UNDERLAY_BRIDGE_OVS} (eth0 <-> {self.names.host_underlay_link(h.name)}), "
                      f"trunk eth1 <-> {self.names.host_trunk_link(h.name)}, "
                      f"OVS in {h.ovs.dir}")

    def _check_underlay(self, tries: int = 20) -> None:
        """Every host reaches the gateway and every other host over the underlay."""
        ping = " ".join(ping_argv())
        for h in self.hosts:
            targets = [self.subnet.gateway] + [o.vtep_ip for o in self.hosts if o is not h]
            script = (f"for ip in {' '.join(targets)}; do n=0; "
                      f"until {ping} -c 1 -W 1 $ip >/dev/null 2>&1; do "
                      f"n=$((n+1)); [ $n -ge {tries} ] && {{ echo $ip; exit 1; }}; done; done")
            res = h.exec("sh", "-c", script, timeout=tries * 2 * len(targets) + 10)
            if res.returncode != 0:
                raise LabError(f"{h.name} ({h.vtep_ip}) cannot ping {res.stdout.strip()} "
                               f"over the underlay")
        self.progress(f"underlay: all {len(self.hosts)} hosts reach {self.subnet.gateway} "
                      "and each other")

    def warm_tunnels(self, hosts: Optional[List[Host]] = None) -> None:
        """Fill OVS's tunnel neighbour cache on ``hosts`` (default all) for every remote VTEP.

        The userspace tunnel resolves a remote VTEP's MAC itself and drops the packet
        that triggered the lookup, so a container's first ping across hosts would be
        lost.  OVS learns neighbours by snooping ARP replies on its bridges, but only
        once a tunnel port exists (the agent makes ``vxlan0``), and only if the kernel
        actually ARPs: so flush the host's neighbour entries on ``br-ul`` and ping.
        """
        if len(self.hosts) < 2:
            return
        ping = " ".join(ping_argv())
        for h in hosts or self.hosts:
            others = " ".join(o.vtep_ip for o in self.hosts if o is not h)
            h.exec("sh", "-c", f"ip neigh flush dev {UNDERLAY_BRIDGE_OVS}; for ip in {others}; "
                   f"do {ping} -c 1 -W 1 $ip >/dev/null 2>&1; done",
                   timeout=2 * len(self.hosts) + 10)

    # -- services -------------------------------------------------------------
    def _twistd_argv(self, name: str, plugin: str, directory: str) -> List[str]:
        return twistd_argv(self.config.python) + [
                "-n", f"--pidfile={directory}/{name}.pid", f"--logfile={directory}/{name}.log", plugin]

    def _start_services(self) -> None:
        if self.config.aci:
            self._start_apic()
        if self.config.kubernetes:
            from contiv_sdn.lab import kube
            kube.start_apiserver(self)
        if self.ha:
            from contiv_sdn.lab import ha
            ha.start_redis(self)
        self._start_netmaster()
        if self.ha:
            ha.start_standbys(self)
        if self.config.docker:
            self._start_dockerds()
        self._start_netplugins()
        if self.config.swarm:  # the plugin's forwarder needs the netplugins' swarm sockets
            from contiv_sdn.lab import swarm
            swarm.form(self)
        if self.config.kubernetes:
            kube.start_kubelets(self)

    def _wait(self, what: str, service: Service, ready: Callable[[], bool],
              timeout: float = 30) -> None:
        """Poll ``ready`` until true; fail early (with its log) if the process died."""
        start = time.monotonic()
        last = start
        while True:
            try:
                if ready():
                    return
            except OSError:
                pass
            now = time.monotonic()
            if not service.alive():
                raise LabError(f"{what} exited during start-up:\n{service.log_tail()}")
            if now - start > timeout:
                raise LabError(f"{what} not ready after {timeout:g} s:\n{service.log_tail()}")
            if now - last >= 2:
                self.progress(f"waiting for {what} ({now - start:.0f}/{timeout:g} s)")
                last = now
            time.sleep(0.1)

    def _register(self, key: str, service: Service) -> None:
        self.services[key] = service
        self._save()

    # -- docker (one private engine per host) --------------------------------------
    def docker_socket(self, host: str) -> str:
        """The host's Docker engine: ``docker -H unix://<this>``."""
        return os.path.join(self.host(host).dir, "docker.sock")

    def plugin_socket(self, host: str) -> str:
        """Where the host's netplugin serves the Docker driver; that engine's plugin folder."""
        return os.path.join(self.host(host).dir, "plugins", "netplugin.sock")

    def dockerd(self, host: str) -> "Dockerd":
        from contiv_sdn.lab.docker import Dockerd
        h = self.host(host)
        # --dns: the engine's upstream must be an address a container routes to
        # (its embedded resolver forwards from the container's namespace); which
        # one does not matter, br-int hands every port-53 packet to the host's
        # netplugin DNS (contiv_sdn/agent/dnsport.py), which relays names not ours
        # to --dns-upstream
        return Dockerd(os.path.join(h.dir, "docker"), netns=h.netns,
                       plugin_dir=os.path.dirname(self.plugin_socket(host)),
                       socket_path=self.docker_socket(host), name=h.name,
                       # swarm mode refuses --live-restore (contiv_sdn/lab/swarm.py)
                       live_restore=not self.config.swarm,
                       extra_args=("--dns", self.subnet.gateway))

    def docker(self, host: str, *args: str, check: bool = True,
               timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run the docker CLI against the host's engine."""
        from contiv_sdn.lab.docker import docker_cli
        return docker_cli(self.docker_socket(host), *args, check=check, timeout=timeout)

    def podman(self, host: str) -> "Podman":
        """The host's podman (private configuration, CNI backend with contiv-cni), set up on
        first use with a ``contiv-net`` network and the ``busybox:local`` image.

        More networks: ``lab.podman(h).add_network(NAME, conflist)`` with a conflist like
        ``plugins/cni/contiv.conflist`` whose ``network`` names the Contiv network.
        """
        from contiv_sdn.lab.docker import Podman
        h = self.host(host)
        podman = Podman(os.path.join(h.dir, "podman"), netns=h.netns)
        if not os.path.exists(podman.conf):
            podman.setup()
            podman.add_network("contiv-net", {
                "cniVersion": "1.0.0", "name": "contiv-net",
                "plugins": [{"type": "contiv-cni", "socket": h.socket, "tenant": "default",
                             "network": "contiv-net", "capabilities": {"ips": True}}]})
            self.progress(f"{h.name}: podman configured (CNI: contiv-cni, network contiv-net)")
        podman.import_busybox()
        return podman

    def _stop_podmans(self, say: Progress) -> None:
        """Remove podman containers (their CNI DEL needs the netplugins still running)."""
        from contiv_sdn.lab.docker import Podman
        for h in self.hosts:
            root = os.path.join(h.dir, "podman")
            if os.path.isdir(root):
                try:
                    Podman(root, netns=h.netns).cleanup()
                    say(f"{h.name}: podman containers removed")
                except Exception as e:  # keep tearing down the rest
                    say(f"{h.name}: podman cleanup: {e}")

    def _start_dockerds(self) -> None:
        from contiv_sdn.lab.docker import import_busybox
        for h in self.hosts:
            d = self.dockerd(h.name)
            d.start()
            self.progress(f"{h.name}: dockerd ready (docker -H unix://{d.socket})")
            import_busybox(d.socket)
            self.progress(f"{h.name}: image busybox:local imported")

    def _stop_dockerds(self, say: Progress) -> None:
        """Stop each host's engine (containers first, while the drivers still answer)."""
        for h in self.hosts:
            if os.path.isdir(os.path.join(h.dir, "docker")):
                try:
                    self.dockerd(h.name).cleanup()
                    say(f"{h.name}: dockerd stopped")
                except Exception as e:  # keep tearing down the rest
                    say(f"{h.name}: dockerd cleanup: {e}")

    def _netmaster_service(self, index: int = 0) -> Service:
        """Netmaster ``index`` (0 unless --netmasters: REST and OpenFlow ports + index)."""
        d = os.path.join(self.root, "netmaster" if index == 0 else f"netmaster{index + 1}")
        opts = self._supported_options("netmaster")
        argv = self._twistd_argv("netmaster", "netmaster", d)
        wanted = [("listen", f"tcp:{self.config.netmaster_port + index}"),
                  ("ofp-listen", f"tcp:{self.config.ofp_port + index}"
                                 f":interface={self.subnet.gateway}"),
                  ("state-dir", os.path.join(d, "state"))]
        if self.ha:
            from contiv_sdn.lab import ha
            wanted += ha.netmaster_options(self)
        if self.config.aci:
            wanted += [("infra", "aci"), ("apic-url", self.apic_url),
                       ("apic-password-file", self._apic_password_file())]
        if self.config.swarm:  # §3.10: mapped networks and groups cannot be deleted
            wanted.append(("mode", "swarm-mode"))
        if self.config.kubernetes:
            from contiv_sdn.lab import kube
            wanted += kube.netmaster_options(self)
        if self.config.metrics_port:
            wanted.append(("metrics-listen",
                           f"tcp:{self.config.metrics_port}:interface=127.0.0.1"))
        skipped = [o for o, _ in wanted if o not in opts]
        if skipped:
            self.progress(f"netmaster: this build has no {', '.join('--' + o for o in skipped)}")
        for opt, value in wanted:
            if opt in opts:
                argv += [f"--{opt}", value]
        if self.security:  # HTTPS + --auth, OpenFlow TLS, Redis ACL: nothing in clear
            self.security.prepare()
            for opt, value in self.security.netmaster_args():
                argv += [f"--{opt}"] + ([value] if value is not None else [])
        elif "insecure" in opts:  # the lab's agents reach the API over the underlay, in clear
            argv.append("--insecure")
        return Service("netmaster", argv, d)

    # -- ACI: a stand-in APIC (NOT an APIC) for netmaster to mirror intent into ----------
    @property
    def apic_url(self) -> str:
        return f"http://127.0.0.1:{self.config.apic_port}"

    def _apic_password_file(self) -> str:
        d = os.path.join(self.root, "apic")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "password")
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("contiv-lab\n")
        return path

    def _start_apic(self) -> None:
        d = os.path.join(self.root, "apic")
        argv = [self.config.python, "-m", "drivers.aci.standin",
                "--listen", f"tcp:{self.config.apic_port}:interface=127.0.0.1",
                "--user", "admin", "--password-file", self._apic_password_file(),
                "--state", os.path.join(d, "mit.json")]
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        svc = Service("apic", argv, d, env={"PYTHONPATH": repo})
        svc.start()
        self._register("apic", svc)

        def ready() -> bool:
            try:
                status, _ = http.request("GET", "/api/class/fvTenant.json",
                                         base_url=self.apic_url, timeout=2)
            except OSError:
                return False
            return status == 403  # up, and asking for a login as an APIC does

        self._wait("stand-in APIC", svc, ready, timeout=30)
        self.progress(f"stand-in APIC (not an APIC): {self.apic_url}, user admin, password "
                      f"in {self._apic_password_file()} (pid {svc.pid}, log {svc.outfile})")

    def _start_netmaster(self) -> None:
        svc = self._netmaster_service()
        svc.start()
        self._register("netmaster", svc)
        self._wait_netmaster(svc)
        if self.security:
            from contiv_sdn.lab.secure import netctl_argv
            argv = netctl_argv(self.config.python)
            self.security.login(argv, self.netmaster_url)
            for h in self.hosts:
                self.security.add_node_user(argv, self.netmaster_url, h.name, h.dir)
            sec = self.security
            self.progress(f"secure: HTTPS + --auth, node users, OpenFlow TLS, Redis ACL; log in "
                          f"with SSL_CERT_FILE={sec.ca_cert} netctl --netmaster "
                          f"{self.netmaster_url} login --username admin (password in "
                          f"{sec.admin_password_file})")

    def _wait_netmaster(self, svc: Service) -> None:
        def ready() -> bool:
            status, _ = http.request("GET", "/version", timeout=2,
                                     **dict(self.netmaster_http(), token=None))
            # with --auth an unauthenticated /version is 401: up, and asking for a login
            return status == 200 or (self.security is not None and status == 401)

        self._wait("netmaster", svc, ready, timeout=30)
        self.progress(f"netmaster: {self.netmaster_url} (pid {svc.pid}, log {svc.logfile})")

    def _netplugin_service(self, h: Host, opts: set) -> Service:
        argv = self._twistd_argv("netplugin", "netplugin", h.dir)
        wanted = [("host", h.name), ("vtep-ip", h.vtep_ip),
                  ("netmaster", self.netmaster_underlay_url),
                  ("controller", self.controller_target), ("redis", self.redis_url),
                  ("ovs-db", f"unix:{h.ovs.db_sock}"), ("datapath-type", "netdev"),
                  ("uplink", "eth1"), ("underlay-mtu", str(self.config.mtu)),
                  ("socket", h.socket),
                  ("state-dir", os.path.join(h.dir, "netplugin")),
                  # DNS service discovery and its serving path; names not ours go to
                  # whatever serves port 53 on the underlay gateway (tests run one)
                  ("dns-listen", "127.0.0.1:53"),
                  ("dns-netns", self.names.dns_netns(h.name)),
                  ("dns-upstream", f"{self.subnet.gateway}:53")]
        if self.config.docker:
            wanted += [("docker-plugin", self.plugin_socket(h.name)),
                       ("docker", "unix://" + self.docker_socket(h.name))]
        if self.security:  # node user, switch certificate, Redis as the read-only agent
            wanted = [(o, v) for o, v in wanted if o != "redis"]
            wanted += [(o, v) for o, v in self.security.netplugin_args(h.name, h.dir)]
            wanted.append(("redis", self.security.agent_redis_url(self.redis_dir,
                                                                  self.redis_socket)))
        for opt, value in wanted:
            if opt in opts:
                argv += [f"--{opt}", value]
        if self.config.host_access:
            argv.append("--host-access")
        return Service("netplugin", argv, h.dir, netns=h.netns, env=h.ovs_env)

    def _start_netplugins(self) -> None:
        opts = self._supported_options("netplugin")
        for h in self.hosts:
            svc = self._netplugin_service(h, opts)
            svc.start()
            self._register(h.service_key, svc)
        for h in self.hosts:
            self._wait_netplugin(h)
        self.warm_tunnels()

    def _netplugin_ready(self, h: Host) -> bool:
        status, body = http.request("GET", "/v1/status", unix=h.socket, timeout=2)
        return status == 200 and isinstance(body, dict) and body.get("ready") is True

    def _wait_netplugin(self, h: Host) -> None:
        svc = self.services[h.service_key]
        self._wait(f"netplugin on {h.name}", svc, lambda: self._netplugin_ready(h), timeout=30)
        self.progress(f"{h.name}: netplugin ready (pid {svc.pid}, socket {h.socket})")

    # -- restarts (for tests: convergence after a control-plane process restarts) --
    def restart_netmaster(self, kill: bool = True) -> None:
        svc = self.services.get("netmaster")
        if svc is None:
            raise LabError("this lab has no netmaster")
        svc.stop(self.root, kill=kill)
        svc = svc.fresh()
        svc.start()
        self._update(lambda: self.services.__setitem__("netmaster", svc))
        self._wait_netmaster(svc)

    def restart_netplugin(self, host: str, kill: bool = True) -> None:
        h = self.host(host)
        svc = self.services.get(h.service_key)
        if svc is None:
            raise LabError(f"{host} has no netplugin")
        svc.stop(self.root, kill=kill)
        svc = svc.fresh()
        svc.start()
        self._update(lambda: self.services.__setitem__(h.service_key, svc))
        self._wait_netplugin(h)

    def set_host_access(self, on: bool = True) -> None:
        """Restart every netplugin with (or without) ``--host-access``: each host's root
        namespace gets the ``contivh0`` port and routes to the default tenant's
        containers and VIPs (``contiv_sdn/agent/hostport.py``); turning it off leaves
        the port and routes in place (remove them by hand if needed)."""
        for h in self.hosts:
            svc = self.services.get(h.service_key)
            if svc is None:
                raise LabError(f"{h.name} has no netplugin")
            argv = [a for a in svc.argv if a != "--host-access"] + (["--host-access"] if on else [])
            if argv == svc.argv:
                continue
            svc.stop(self.root, kill=False)
            svc = Service(svc.name, argv, svc.dir, netns=svc.netns, pidfile=svc.pidfile,
                          logfile=svc.logfile, env=svc.env)
            svc.start()
            self._update(lambda k=h.service_key, s=svc: self.services.__setitem__(k, s))
            self._wait_netplugin(h)

    def restart_ovs(self, host: str) -> None:
        """Restart only ovs-vswitchd (flows are lost, the database stays), like an OVS upgrade."""
        h = self.host(host)
        h.ovs.restart_vswitchd()
        deadline = time.monotonic() + 20
        while True:
            try:
                h.ovs.appctl("version")
                break
            except (OvsError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise LabError(f"{host}: ovs-vswitchd did not come back "
                                   f"(see {h.ovs.dir}/ovs-vswitchd.log)")
                time.sleep(0.1)
        if self.config.start_services:
            self.warm_tunnels([h])
        self.progress(f"{host}: ovs-vswitchd restarted")

    # -- containers -------------------------------------------------------------
    def add_container(self, host: str, name: str, network: str, group: Optional[str] = None,
                      tenant: str = "default", ip: Optional[str] = None) -> Container:
        """A namespace ``HOST-NAME`` with an endpoint in ``network`` made by HOST's netplugin."""
        h = self.host(host)
        if not CONTAINER_NAME.fullmatch(name):
            raise LabError(f"bad container name {name!r}: letters, digits, '_', '.', '-'")
        netns = self.names.container_netns(h.name, name)
        if netns in self.containers:
            raise LabError(f"container {netns} exists")
        topology.create_netns(netns)
        ep_id = secrets.token_hex(32)
        body: Dict[str, Any] = {"id": ep_id, "netns": f"/var/run/netns/{netns}", "ifname": "eth0",
                                "tenant": tenant, "network": network, "group": group or "",
                                "name": name, "containerID": ep_id}
        if ip:
            body["ip"] = ip
        try:
            ep = h.api("POST", "/v1/endpoints", body)
        except BaseException:
            topology.delete_netns(netns)
            raise
        ep = ep if isinstance(ep, dict) else {}
        addr = ep.get("ipAddress") or ep.get("ip")
        c = Container(host=h.name, name=name, netns=netns, id=ep_id, network=network,
                      tenant=tenant, group=group or "",
                      ip=addr.split("/")[0] if addr else None,
                      mac=ep.get("macAddress") or ep.get("mac"), endpoint=ep)
        self._update(lambda: self.containers.__setitem__(netns, c))
        self.progress(f"{netns}: {c.ip} {c.mac} in {tenant}/{network}"
                      + (f" group {group}" if group else ""))
        return c

    def remove_container(self, target: str, name: Optional[str] = None) -> None:
        """Delete the endpoint (through the host's netplugin) and the namespace."""
        c = self.container(self.names.container_netns(target, name) if name else target)
        h = self.host(c.host)
        h.api("DELETE", f"/v1/endpoints/{c.id}")
        self._kill_netns(c.netns)
        self._update(lambda: self.containers.pop(c.netns, None))
        self.progress(f"{c.netns}: removed")

    # -- status ---------------------------------------------------------------
    def status(self) -> dict:
        existing = set(topology.list_netns())
        out: dict = {"root": self.root, "phase": self.phase, "hosts": [], "services": {},
                     "containers": []}
        for key, svc in sorted(self.services.items()):
            out["services"][key] = {"alive": svc.alive(self.root),
                                    "pid": svc.current_pid(self.root), "log": svc.logfile}
        if "netmaster" in self.services:
            out["netmaster_url"] = self.netmaster_url
        if self.ha:
            from contiv_sdn.lab import ha
            out["ha"] = ha.status(self)
        if self.config.swarm:
            from contiv_sdn.lab import swarm
            out["swarm"] = {"manager": swarm.manager(self).name,
                            "docker_host": swarm.docker_host(self)}
        if self.security:
            out["secure"] = {"ca": self.security.ca_cert,
                             "admin_password_file": self.security.admin_password_file,
                             "netctl_env": self.netctl_env()}
        for h in self.hosts:
            entry: dict = {"name": h.name, "vtep_ip": h.vtep_ip, "netns": h.netns in existing,
                           "ovs": h.ovs.running(), "bridges": [], "br_int_flows": None}
            if h.service_key in self.services:
                entry["netplugin"] = self.services[h.service_key].alive(self.root)
            if entry["ovs"] and entry["netns"]:
                try:
                    entry["bridges"] = h.ovs.vsctl("list-br").split()
                except (OvsError, subprocess.TimeoutExpired):
                    pass
                if INTEGRATION_BRIDGE in entry["bridges"]:
                    entry["br_int_flows"] = h.flow_count()
                    entry["controllers"] = h.controllers()
            out["hosts"].append(entry)
        for c in sorted(self.containers.values(), key=lambda c: c.netns):
            out["containers"].append({"netns": c.netns, "host": c.host, "name": c.name,
                                      "ip": c.ip, "mac": c.mac, "network": c.network,
                                      "tenant": c.tenant, "group": c.group,
                                      "alive": c.netns in existing})
        return out

    def _anything_alive(self) -> bool:
        if any(s.alive(self.root) for s in self.services.values()):
            return True
        if any(h.ovs.running() for h in self.hosts):
            return True
        existing = set(topology.list_netns())
        return any(h.netns in existing for h in self.hosts)

    # -- down -----------------------------------------------------------------
    def down(self, all: bool = False) -> None:
        """Remove everything this lab created; idempotent; works without a state file."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, OVS)")
        self._check_root()
        with self._locked():
            state = self._read_state_file(self.root) if os.path.isdir(self.root) else None
            if state is not None:
                self._apply_state(state)
            self._teardown(quiet=False)
            self.services, self.containers, self.phase = {}, {}, "down"
            for leftover in (STATE_FILE,):
                try:
                    os.unlink(os.path.join(self.root, leftover))
                except FileNotFoundError:
                    pass
        if all:
            existed = any(n != ".lock" for n in os.listdir(self.root))
            shutil.rmtree(self.root, ignore_errors=True)
            if existed:
                self.progress(f"removed {self.root}")

    def _kill_netns(self, netns: str) -> None:
        """Stop whatever still runs in one of our namespaces, then delete it."""
        stop_pids(topology.netns_pids(netns), timeout=5)
        topology.delete_netns(netns)

    def _teardown(self, quiet: bool) -> None:
        say = _quiet if quiet else self.progress
        if self.config.kubernetes:  # kubelets, then pods (CNI DEL), then the API stand-in
            from contiv_sdn.lab import kube
            kube.teardown(self, say)
        # 1. endpoints, while the netplugins still run (keeps Redis consistent)
        for c in list(self.containers.values()):
            svc = self.services.get(f"netplugin:{c.host}")
            if svc is not None and svc.alive(self.root):
                try:
                    http.call("DELETE", f"/v1/endpoints/{c.id}",
                              unix=os.path.join(self.root, c.host, "netplugin.sock"), timeout=5)
                except (OSError, http.ApiError) as e:
                    say(f"{c.netns}: endpoint not deleted ({e})")
        # 2. Docker engines and podman (their endpoints go while the drivers answer)
        self._stop_podmans(say)
        if self.config.swarm:  # tasks stop with it; swarm state goes with the engines' folders
            from contiv_sdn.lab import swarm
            try:
                swarm.leave(self)
            except Exception as e:  # keep tearing down the rest
                say(f"swarm leave: {e}")
        self._stop_dockerds(say)
        # 3. services: netplugins, then netmaster, then redis
        tiers = [[s for k, s in self.services.items() if k.startswith("netplugin:")],
                 [s for k, s in self.services.items()
                  if k == "netmaster" or k.startswith("netmaster:")],
                 [s for k, s in self.services.items()
                  if k == "redis" or k.startswith(("redis:", "sentinel:"))]]
        for tier in tiers:
            pids = [p for s in tier for p in (s.pid, read_pidfile(s.pidfile))
                    if p and alive(p) and belongs_to(p, self.root)]
            if pids:
                stop_pids(pids)
                say(f"stopped {', '.join(s.name + (' on ' + s.netns if s.netns else '') for s in tier)}")
        # 4. anything else with a pidfile under our root (OVS, services of a lost state)
        if os.path.isdir(self.root):
            pids = {read_pidfile(p) for p in pidfiles_under(self.root)}
            pids = [p for p in pids if p and alive(p) and belongs_to(p, self.root)]
            if pids:
                stop_pids(pids)
                say(f"stopped {len(pids)} more lab processes (OVS and others)")
        # 5. namespaces: containers first, then hosts
        existing = topology.list_netns()
        ours = [n for n in existing if self.names.is_container_netns(n) or n in self.containers]
        ours += [n for n in existing if self.names.is_host_netns(n)]
        for n in ours:
            self._kill_netns(n)
        if ours:
            say(f"deleted namespaces {' '.join(ours)}")
        # 6. root-namespace links
        links = [l for l in topology.list_links() if self.names.is_root_link(l)]
        for l in sorted(links, key=lambda n: n in (self.names.underlay_bridge,
                                                   self.names.trunk_bridge)):
            topology.delete_link(l)
        if links:
            say(f"deleted links {' '.join(sorted(links))}")
