"""A private Open vSwitch instance: its own ovsdb-server and ovs-vswitchd.

Each simulated host of the lab (and each test that needs a switch) runs one of
these.  OVS keeps its sockets, database and logs in ``OVS_RUNDIR``/``OVS_DBDIR``/
``OVS_LOGDIR``; giving every instance its own directory is what lets several run
side by side without clobbering each other's ``br-int.mgmt`` sockets (see
``shared/notes/lab.md``).  When ``netns`` is given, both daemons run inside that
network namespace, so bridges, internal ports and the controller connection live
there.

The calls here are synchronous on purpose: they are used by the lab CLI, by test
set-up and by benchmarks, never on a running reactor's hot path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import List, Optional, Sequence

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class OvsError(RuntimeError):
    pass


def _alive(pid: Optional[int]) -> bool:
    """True if ``pid`` runs; a zombie (exited, not yet reaped by init) counts as gone.

    The daemons detach, so their parent is PID 1, which may reap them late;
    ``kill(pid, 0)`` alone would wait for that.
    """
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class OvsInstance:
    def __init__(self, directory: str, netns: Optional[str] = None):
        self.dir = os.path.abspath(directory)
        self.netns = netns
        self.env = dict(os.environ)
        self.env.update(OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir, OVS_DBDIR=self.dir,
                        OVS_SYSCONFDIR=self.dir)
        self.db_sock = os.path.join(self.dir, "db.sock")

    # -- process control -------------------------------------------------
    def _prefix(self) -> List[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _run(self, argv: Sequence[str], check: bool = True, timeout: float = 30) -> str:
        proc = subprocess.run(list(self._prefix()) + list(argv), env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise OvsError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> "OvsInstance":
        for tool in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool"):
            if shutil.which(tool) is None:
                raise OvsError(f"{tool} not found: install openvswitch-switch (make install)")
        os.makedirs(self.dir, exist_ok=True)
        db = os.path.join(self.dir, "conf.db")
        if not os.path.exists(db):
            subprocess.run(["ovsdb-tool", "create", db, SCHEMA], check=True, env=self.env,
                           capture_output=True)
        self._run([
            "ovsdb-server", db, f"--remote=punix:{self.db_sock}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            f"--pidfile={self.dir}/ovsdb-server.pid", f"--log-file={self.dir}/ovsdb-server.log",
            f"--unixctl={self.dir}/ovsdb-server.ctl", "--detach", "--no-chdir",
        ])
        self.vsctl("--no-wait", "init")
        self._run([
            "ovs-vswitchd", f"unix:{self.db_sock}",
            f"--pidfile={self.dir}/ovs-vswitchd.pid", f"--log-file={self.dir}/ovs-vswitchd.log",
            f"--unixctl={self.dir}/ovs-vswitchd.ctl", "--detach", "--no-chdir",
        ])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(f"{self.dir}/ovs-vswitchd.ctl"):
                return self
            time.sleep(0.05)
        raise OvsError(f"ovs-vswitchd did not start; see {self.dir}/ovs-vswitchd.log")

    def _pid(self, name: str) -> Optional[int]:
        try:
            with open(os.path.join(self.dir, f"{name}.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return _alive(self._pid("ovs-vswitchd"))

    def stop_vswitchd(self) -> None:
        """Stop only the switch daemon (its flows are lost, the database stays): an OVS restart."""
        self._kill("ovs-vswitchd")

    def restart_vswitchd(self) -> None:
        self.stop_vswitchd()
        self._run([
            "ovs-vswitchd", f"unix:{self.db_sock}",
            f"--pidfile={self.dir}/ovs-vswitchd.pid", f"--log-file={self.dir}/ovs-vswitchd.log",
            f"--unixctl={self.dir}/ovs-vswitchd.ctl", "--detach", "--no-chdir",
        ])

    def _kill(self, name: str) -> None:
        pid = self._pid(name)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def stop(self, remove: bool = False) -> None:
        # Asking the daemons to exit returns in milliseconds ("--cleanup" also removes
        # the datapath and its tap devices); signals are the fallback for a wedged daemon.
        for name, extra in (("ovs-vswitchd", ["--cleanup"]), ("ovsdb-server", [])):
            ctl = os.path.join(self.dir, f"{name}.ctl")
            if _alive(self._pid(name)) and os.path.exists(ctl):
                subprocess.run(self._prefix() + ["ovs-appctl", "-t", ctl, "exit", *extra],
                               env=self.env, capture_output=True, timeout=10)
        self._kill("ovs-vswitchd")
        self._kill("ovsdb-server")
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- tools -------------------------------------------------------------
    def vsctl(self, *args: str) -> str:
        return self._run(["ovs-vsctl", f"--db=unix:{self.db_sock}", "--timeout=20", *args])

    def ofctl(self, *args: str, check: bool = True) -> str:
        return self._run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=check)

    def appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", "-t", f"{self.dir}/ovs-vswitchd.ctl", *args])

    def mgmt(self, bridge: str) -> str:
        """The bridge's management socket, for ovs-ofctl without a controller."""
        return f"unix:{self.dir}/{bridge}.mgmt"

    def add_bridge(self, bridge: str, dpid: Optional[int] = None,
                   controllers: Sequence[str] = (), fail_mode: str = "secure") -> None:
        """Create a userspace (netdev) bridge, with its controllers set in the same transaction.

        Setting controllers later, from none to some, makes OVS flush the bridge's flows,
        so a bridge that will be controlled gets its controllers at creation.
        """
        args = ["--may-exist", "add-br", bridge, "--", "set", "bridge", bridge,
                "datapath_type=netdev", f"fail_mode={fail_mode}", "protocols=OpenFlow13"]
        if dpid is not None:
            args.append(f"other_config:datapath-id={dpid:016x}")
        if controllers:
            args += ["--", "set-controller", bridge, *controllers]
        self.vsctl(*args)

    def dump_flows(self, bridge: str) -> List[str]:
        out = self.ofctl("dump-flows", "--no-stats", bridge)
        return [l.strip() for l in out.splitlines() if l.strip() and "NXST_FLOW" not in l
                and "OFPST_FLOW" not in l]
