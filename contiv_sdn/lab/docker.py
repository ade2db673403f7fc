"""A private Docker engine per simulated host, a busybox image, and podman set up for CNI.

The lab's hosts are network namespaces on one machine, and each needs its own
``dockerd`` that (a) lives in the host's namespace, so the veths our Docker
driver creates are the ones dockerd moves into containers, and (b) finds *that
host's* netplugin as its ``netplugin`` driver.  Docker discovers legacy plugins
only in machine-wide folders (``/run/docker/plugins``), so each dockerd is
started in a private mount namespace where the host's own plugin folder is
bind-mounted over ``/run/docker/plugins`` (the verified recipe of
``shared/notes/lab.md``).  ``nsenter --net`` is used rather than ``ip netns
exec``, which remounts ``/sys`` and makes dockerd die ("Devices cgroup isn't
mounted").

Layout of one engine (``root_dir``)::

    root_dir/data       --data-root (images, containers, volumes)
    root_dir/exec       --exec-root (containerd socket, sandboxes' netns files)
    root_dir/docker.pid --pidfile
    root_dir/dockerd.log
    socket              -H unix://… (default root_dir/docker.sock; the lab
                        uses /run/contiv-lab/<host>/docker.sock)

``--live-restore`` is on: a dockerd restart must not stop the host's running
containers (the issue's "restarting dockerd keeps running containers
connected").  ``--iptables=false --ip-forward=false --bridge=none``: the engine
must not touch the machine's firewall or create docker0.

There is no image registry here, so :func:`import_busybox` builds
``busybox:local`` from Debian's ``busybox-static``.  :class:`Podman` writes a
private ``containers.conf``/``storage.conf``/CNI folder and passes them through
the environment, so the machine's own podman configuration is never touched.

:class:`~contiv_sdn.lab.core.Lab` with ``docker=True`` runs one of these engines
per host, with that host's netplugin serving the Docker driver.

Everything is synchronous (subprocesses with timeouts): it is used by test
set-up, the lab CLI and benchmarks, never on a running reactor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence

#: Machine-wide folder where dockerd looks for legacy plugin sockets.
DOCKER_PLUGIN_DIR = "/run/docker/plugins"
#: Commands the busybox image links to (see lab.md: its wget segfaults, use nc).
BUSYBOX_APPLETS = ("sh", "ping", "ip", "nc", "nslookup", "httpd", "sleep", "cat", "true",
                   "false", "ifconfig", "route", "hostname", "echo", "ls", "ps", "kill",
                   "grep", "wc", "head", "printf", "env", "netstat", "arp", "ethtool")
BUSYBOX_TAG = "busybox:local"


class DockerdError(RuntimeError):
    """dockerd (or podman) could not do what was asked; the text says what and where to look."""


def _netns_path(netns: Optional[str]) -> Optional[str]:
    if netns is None:
        return None
    return netns if "/" in netns else f"/run/netns/{netns}"


def _ping(sock_path: str, timeout: float = 2.0) -> bool:
    """``GET /_ping`` over the engine's unix socket (no docker CLI start-up cost)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] + b" "
    except OSError:
        return False


def _pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Dockerd:
    """One private Docker engine; see the module docstring for its layout."""

    def __init__(self, root_dir: str, netns: Optional[str] = None,
                 plugin_dir: Optional[str] = None, socket_path: Optional[str] = None,
                 name: Optional[str] = None, live_restore: bool = True,
                 extra_args: Sequence[str] = ()):
        self.root = os.path.abspath(root_dir)
        self.netns = netns
        self.plugin_dir = os.path.abspath(plugin_dir) if plugin_dir else None
        self.socket = os.path.abspath(socket_path) if socket_path else \
            os.path.join(self.root, "docker.sock")
        self.name = name or os.path.basename(self.root.rstrip("/")) or "dockerd"
        self.live_restore = live_restore
        self.extra_args = list(extra_args)
        self.data_root = os.path.join(self.root, "data")
        self.exec_root = os.path.join(self.root, "exec")
        self.pidfile = os.path.join(self.root, "docker.pid")
        self.logfile = os.path.join(self.root, "dockerd.log")
        self.proc: Optional[subprocess.Popen] = None

    # -- process control -----------------------------------------------------
    def argv(self) -> List[str]:
        """The command line: nsenter (host netns + the engine's mount ns) + dockerd."""
        dockerd = [
            "dockerd", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
            "--bridge=none", "--data-root", self.data_root, "--exec-root", self.exec_root,
            "--pidfile", self.pidfile, "-H", f"unix://{self.socket}",
            "--containerd-namespace", f"ctv-{self.name}",
            "--containerd-plugins-namespace", f"ctv-{self.name}-plugins",
            "--userland-proxy=false", "--log-level=info",
        ]
        if self.live_restore:
            dockerd.append("--live-restore")
        dockerd += self.extra_args
        argv = ["nsenter", f"--mount={self.mntns}", f"--wd={self.root}"]
        ns = _netns_path(self.netns)
        if ns:
            argv.append(f"--net={ns}")
        return argv + dockerd

    @property
    def mntns(self) -> str:
        return os.path.join(self.root, "ns", "mnt")

    def setup_mount_namespace(self) -> None:
        """Create (once) the engine's persistent mount namespace.

        It is a slave of the machine's, so nothing mounted in it leaks out, and it
        outlives dockerd: the sandboxes' netns bind mounts dockerd makes there are
        still visible to the next dockerd, which is what lets ``--live-restore``
        restore running containers (a fresh namespace per start loses them:
        "failed to create osl sandbox while trying to restore sandbox").  The
        host's plugin folder is bind-mounted over ``/run/docker/plugins`` in it.
        ``unshare --mount=FILE`` needs FILE on a private mount, hence ``ns/``.
        """
        nsdir = os.path.dirname(self.mntns)
        if _is_mount(self.mntns, "nsfs"):
            return
        os.makedirs(nsdir, exist_ok=True)
        if not _is_mount(nsdir):
            _run(["mount", "--bind", nsdir, nsdir])
        _run(["mount", "--make-private", nsdir])
        open(self.mntns, "a").close()
        script = "true"
        if self.plugin_dir:
            script = (f"mkdir -p {DOCKER_PLUGIN_DIR} && mount --bind "
                      f"{_quote(self.plugin_dir)} {DOCKER_PLUGIN_DIR}")
        try:
            _run(["unshare", f"--mount={self.mntns}", "--propagation", "slave",
                  "sh", "-c", script])
        except DockerdError:
            self.teardown_mount_namespace()
            raise

    def teardown_mount_namespace(self) -> None:
        nsdir = os.path.dirname(self.mntns)
        if _is_mount(self.mntns):
            _run(["umount", self.mntns], check=False)
        if _is_mount(nsdir):
            _run(["umount", nsdir], check=False)

    def pid(self) -> Optional[int]:
        """The running dockerd's pid; a pidfile naming some other process is ignored."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
        return pid if f"--pidfile {self.pidfile}" in cmdline else None

    def running(self) -> bool:
        return _pid_alive(self.pid())

    def start(self, timeout: float = 60.0) -> "Dockerd":
        """Start dockerd and wait until its API answers; raise with the log tail if it dies."""
        for tool in ("dockerd", "nsenter", "unshare"):
            if shutil.which(tool) is None:
                raise DockerdError(f"{tool} not found: install docker.io/util-linux (make install)")
        if self.running():
            raise DockerdError(f"dockerd {self.name} already runs (pid {self.pid()})")
        for d in (self.root, self.data_root, self.exec_root, os.path.dirname(self.socket)):
            os.makedirs(d, exist_ok=True)
        if self.plugin_dir:
            os.makedirs(self.plugin_dir, exist_ok=True)
        self.setup_mount_namespace()
        for stale in (self.socket, self.pidfile):
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.root)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerdError(f"dockerd {self.name} exited ({self.proc.returncode}); "
                                   f"log {self.logfile}:\n{self.log_tail()}")
            if os.path.exists(self.socket) and _ping(self.socket):
                return self
            time.sleep(0.1)
        self.stop(remove_containers=False)
        raise DockerdError(f"dockerd {self.name} did not answer on {self.socket} within "
                           f"{timeout:g} s; log {self.logfile}:\n{self.log_tail()}")

    def stop(self, remove_containers: bool = True, timeout: float = 30.0) -> None:
        """Stop the engine; by default remove its containers first (live-restore keeps them)."""
        pid = self.pid()
        if pid is None:
            return
        if remove_containers and _ping(self.socket):
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
        self._signal(pid, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL dockerd (a crash); with live-restore its containers keep running."""
        pid = self.pid()
        if pid is not None:
            self._signal(pid, signal.SIGKILL, 10)

    def restart(self, timeout: float = 60.0) -> "Dockerd":
        """Stop (keeping the containers, as a restart of the engine does) and start again."""
        self.stop(remove_containers=False)
        return self.start(timeout)

    def _signal(self, pid: int, sig: int, timeout: float) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            if self.proc is not None and self.proc.pid == pid:
                self.proc.poll()
            time.sleep(0.05)
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.pid == pid:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    def cleanup(self) -> None:
        """Stop everything and remove the engine's folders (tests; ``lab down --all``)."""
        self.stop(remove_containers=True)
        # dockerd's mounts (overlays, sandbox netns files) live only in the engine's
        # mount namespace; dropping its last reference (the ns file) frees them.
        self.teardown_mount_namespace()
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass

    # -- tools -----------------------------------------------------------------
    def env(self) -> Dict[str, str]:
        """Environment for the docker CLI to talk to this engine."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0,
               input: Optional[bytes] = None) -> subprocess.CompletedProcess:
        """Run the docker CLI against this engine (from the root namespace: the
        socket is a path, the containers live in the engine's namespace anyway)."""
        return docker_cli(self.socket, *args, check=check, timeout=timeout, input=input)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.logfile, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise DockerdError(f"{' '.join(argv)}: no answer after {timeout:g} s") from e
    if check and proc.returncode != 0:
        raise DockerdError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _is_mount(path: str, fstype: Optional[str] = None) -> bool:
    """Whether ``path`` is a mount point (of ``fstype``) in this mount namespace."""
    path = os.path.abspath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                mnt = fields[4].replace("\\040", " ")
                if mnt != path:
                    continue
                if fstype is None:
                    return True
                sep = fields.index("-")
                if fields[sep + 1] == fstype:
                    return True
    except OSError:
        pass
    return False


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)


def _run_cli(argv: List[str], check: bool, timeout: float, input: Optional[bytes],
             env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run a runtime CLI with a timeout; text output; failures say what ran and what it said."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, input=input, env=env,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise DockerdError(f"{' '.join(argv)}: no answer after {timeout:g} s") from e
    out = subprocess.CompletedProcess(argv, proc.returncode,
                                      proc.stdout.decode(errors="replace"),
                                      proc.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise DockerdError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{(out.stderr or out.stdout).strip()}")
    return out


def docker_cli(sock: str, *args: str, check: bool = True, timeout: float = 60.0,
               input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """``docker -H unix://SOCK ARGS`` with a timeout; output as text."""
    if shutil.which("docker") is None:
        raise DockerdError("docker CLI not found: install docker.io (make install)")
    return _run_cli(["docker", "-H", f"unix://{sock}", *args], check, timeout, input)


def start_dockerd(host_netns: Optional[str], root_dir: str, plugin_dir: Optional[str],
                  socket_path: Optional[str] = None, name: Optional[str] = None,
                  live_restore: bool = True, timeout: float = 60.0) -> Dockerd:
    """Start a private dockerd in ``host_netns`` that sees ``plugin_dir`` as its plugin folder.

    The lab calls it per host as ``start_dockerd("node1", "/run/contiv-lab/node1/docker",
    "/run/contiv-lab/node1/plugins", socket_path="/run/contiv-lab/node1/docker.sock")`` and
    starts that host's netplugin with its Docker driver socket at
    ``/run/contiv-lab/node1/plugins/netplugin.sock``.
    """
    return Dockerd(root_dir, netns=host_netns, plugin_dir=plugin_dir, socket_path=socket_path,
                   name=name or (host_netns if host_netns and "/" not in host_netns else None),
                   live_restore=live_restore).start(timeout)


# -- the busybox image -------------------------------------------------------------
def busybox_binary() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            return path
    raise DockerdError("busybox not found: install busybox-static (make install)")


def busybox_tarball(cache_dir: Optional[str] = None) -> str:
    """A rootfs tarball of busybox-static with applet links (built once, then cached)."""
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "contiv-sdn-busybox")
    os.makedirs(cache_dir, exist_ok=True)
    tarball = os.path.join(cache_dir, "busybox.tar")
    src = busybox_binary()
    if os.path.exists(tarball) and os.path.getmtime(tarball) >= os.path.getmtime(src):
        return tarball
    rootfs = tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir)
    try:
        bindir = os.path.join(rootfs, "bin")
        os.makedirs(bindir)
        for d in ("etc", "tmp", "proc", "sys", "dev", "root", "var/www"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        shutil.copy2(src, os.path.join(bindir, "busybox"))
        for applet in BUSYBOX_APPLETS:
            os.symlink("busybox", os.path.join(bindir, applet))
        with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        tmp = tarball + f".{os.getpid()}"
        subprocess.run(["tar", "-C", rootfs, "-cf", tmp, "."], check=True, timeout=60,
                       capture_output=True)
        os.replace(tmp, tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def import_busybox(docker_sock: str, tag: str = BUSYBOX_TAG) -> str:
    """Import busybox-static as ``tag`` into the engine at ``docker_sock`` (idempotent)."""
    have = docker_cli(docker_sock, "image", "inspect", "--format", "{{.Id}}", tag, check=False)
    if have.returncode == 0:
        return have.stdout.strip()
    with open(busybox_tarball(), "rb") as f:
        data = f.read()
    out = docker_cli(docker_sock, "import", "--change", "CMD [\"/bin/sh\"]",
                     "--change", "ENV PATH=/bin", "-", tag, input=data, timeout=120)
    return out.stdout.strip()


# -- podman as a CNI runtime ------------------------------------------------------------
class Podman:
    """Podman with a private configuration: CNI backend, our plugin, private storage.

    ``CONTAINERS_CONF`` and ``CONTAINERS_STORAGE_CONF`` point podman at files in
    ``root_dir``; the CNI network folder is ``root_dir/cni``; ``cni_plugin_dirs``
    lists ``root_dir/bin`` (our ``contiv-cni``) before the reference plugins.  That
    ``contiv-cni`` is what an operator installs (``python -m drivers.cni.launcher
    --native``): the C shim forwarding each call to netplugin, with the lean Python
    launcher next to it as its fallback (or that launcher alone when no C compiler
    works: :attr:`native_why` says why), or a link to ``cni_binary`` when one is given.
    ``default_ulimits = []`` is needed here, else runc fails on rlimits (lab.md).
    ``static_dir`` is left at its default (inside the private graphroot): podman's
    exit command does not pass it on, and a mismatch makes every ``run --rm``
    wait 20 s for a cleanup that fails.
    """

    def __init__(self, root_dir: str, netns: Optional[str] = None,
                 cni_binary: Optional[str] = None,
                 plugin_dirs: Iterable[str] = ("/usr/lib/cni",)):
        self.root = os.path.abspath(root_dir)
        self.netns = netns
        self.cni_dir = os.path.join(self.root, "cni")
        self.bin_dir = os.path.join(self.root, "bin")
        self.conf = os.path.join(self.root, "containers.conf")
        self.storage_conf = os.path.join(self.root, "storage.conf")
        #: an executable to link as ``contiv-cni``; None: write the launcher there
        self.cni_binary = cni_binary
        #: why ``contiv-cni`` is the Python launcher rather than the C shim ("" if it is not)
        self.native_why = ""
        self.plugin_dirs = [self.bin_dir] + list(plugin_dirs)

    def setup(self) -> "Podman":
        if shutil.which("podman") is None:
            raise DockerdError("podman not found: install podman (make install)")
        for d in (self.root, self.cni_dir, self.bin_dir):
            os.makedirs(d, exist_ok=True)
        link = os.path.join(self.bin_dir, "contiv-cni")
        if self.cni_binary is None:
            from drivers.cni.launcher import write_native
            _, self.native_why = write_native(link)  # replaces what is there
        else:
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(self.cni_binary, link)
        dirs = ", ".join(json.dumps(d) for d in self.plugin_dirs)
        with open(self.conf, "w") as f:
            f.write(
                "[containers]\n"
                "default_ulimits = []\n"
                "log_driver = \"k8s-file\"\n"
                "[network]\n"
                "network_backend = \"cni\"\n"
                f"cni_plugin_dirs = [{dirs}]\n"
                f"network_config_dir = {json.dumps(self.cni_dir)}\n"
                "[engine]\n"
                "cgroup_manager = \"cgroupfs\"\n"
                "events_logger = \"file\"\n"
                f"events_logfile_path = {json.dumps(os.path.join(self.root, 'events.log'))}\n"
                f"tmp_dir = {json.dumps(os.path.join(self.root, 'tmp'))}\n"
            )
        with open(self.storage_conf, "w") as f:
            f.write(
                "[storage]\n"
                "driver = \"overlay\"\n"
                f"graphroot = {json.dumps(os.path.join(self.root, 'storage'))}\n"
                f"runroot = {json.dumps(os.path.join(self.root, 'run'))}\n"
            )
        return self

    def add_network(self, name: str, conflist: dict) -> str:
        """Write ``conflist`` as ``cni/<name>.conflist`` (its ``name`` is set to ``name``)."""
        conflist = dict(conflist, name=name)
        path = os.path.join(self.cni_dir, f"{name}.conflist")
        with open(path, "w") as f:
            json.dump(conflist, f, indent=2)
        return path

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = self.conf
        env["CONTAINERS_STORAGE_CONF"] = self.storage_conf
        env.pop("CONTAINERS_REGISTRIES_CONF", None)
        return env

    def argv(self, *args: str) -> List[str]:
        argv = ["podman", "--cgroup-manager=cgroupfs", *args]
        ns = _netns_path(self.netns)
        if ns:
            argv = ["nsenter", f"--net={ns}"] + argv
        return argv

    def run(self, *args: str, check: bool = True, timeout: float = 90.0,
            input: Optional[bytes] = None) -> subprocess.CompletedProcess:
        return _run_cli(self.argv(*args), check, timeout, input, env=self.env())

    def import_busybox(self, tag: str = BUSYBOX_TAG) -> None:
        if self.run("image", "exists", tag, check=False).returncode == 0:
            return
        self.run("import", "--change", "CMD [\"/bin/sh\"]", "--change", "ENV PATH=/bin",
                 busybox_tarball(), tag, timeout=120)

    def cleanup(self) -> None:
        """Remove every container of this private podman, then its folders."""
        if os.path.exists(self.conf) and shutil.which("podman"):
            self.run("rm", "-a", "-f", "-t", "0", check=False, timeout=120)
            self.run("system", "reset", "--force", check=False, timeout=120)
        # storage may hold overlay mounts of containers that were not removed
        for mnt in _mounts_under(self.root):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(prefix: str) -> List[str]:
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                mnt = line.split()[1].replace("\\040", " ")
                if mnt == prefix or mnt.startswith(prefix.rstrip("/") + "/"):
                    out.append(mnt)
    except OSError:
        pass
    return sorted(out, key=len, reverse=True)


def default_cni_binary() -> str:
    """The ``contiv-cni`` console script of the running venv (or on PATH)."""
    import sys
    here = os.path.join(os.path.dirname(sys.executable), "contiv-cni")
    if os.path.exists(here):
        return here
    found = shutil.which("contiv-cni")
    if found:
        return found
    raise DockerdError("contiv-cni not found: pip install -e . (make install)")
