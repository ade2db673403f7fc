"""The lab's long-running processes: start detached, find, check, stop.

``python -m contiv_sdn.lab up`` exits while Redis, netmaster and the netplugins
keep running, so every service is started in its own session with its output in
a file, and found again later through the pid the lab recorded or its pidfile.
A pid is only ever signalled after checking that the process is really the lab's
(its command line or working directory names the lab's root directory): a stale
pidfile must never make ``down`` kill somebody else's process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Dict, Iterable, List, Optional, Sequence

from contiv_sdn.lab.sh import LabError, netns_prefix


def read_pidfile(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def alive(pid: Optional[int]) -> bool:
    """True if ``pid`` runs (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def belongs_to(pid: int, root: str) -> bool:
    """Whether process ``pid`` was started by the lab rooted at ``root``."""
    root = root.rstrip("/")
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if root + "/" in cmdline or cmdline.rstrip().endswith(root):
        return True
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == root or cwd.startswith(root + "/")


def finished(pid: int) -> bool:
    """True once ``pid`` is completely gone (reaped here if it is this process's child).

    "Not alive" is not enough before starting a successor: a killed multi-threaded
    process shows as a zombie while its other threads are still exiting, and until
    then ``kill(pid, 0)`` succeeds, so pid-based locks (Twisted's UNIX socket lock)
    still look held.  A service this very process started (tests, restarts) also
    stays a zombie until reaped.
    """
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass  # not our child: its parent (init for the lab's services) reaps it
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state not in ("Z", "X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def stop_pids(pids: Iterable[int], timeout: float = 10, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) all, wait for all together, SIGKILL the ones that stay."""
    pending = [p for p in set(pids) if p and p != os.getpid() and alive(p)]
    for pid in pending:
        try:
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not finished(p)]
        if pending:
            time.sleep(0.05)
    for pid in pending:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not finished(p)]
        if pending:
            time.sleep(0.05)


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


class Service:
    """One lab process: how to start it, where its pid and logs are."""

    def __init__(self, name: str, argv: Sequence[str], directory: str,
                 netns: Optional[str] = None, pidfile: Optional[str] = None,
                 logfile: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                 pid: Optional[int] = None):
        self.name = name
        self.argv = list(argv)
        self.dir = directory
        self.netns = netns
        self.pidfile = pidfile or os.path.join(directory, f"{name}.pid")
        self.logfile = logfile or os.path.join(directory, f"{name}.log")
        self.outfile = os.path.join(directory, f"{name}.out")
        self.env = env
        self.pid = pid

    def to_json(self) -> dict:
        return {"name": self.name, "argv": self.argv, "dir": self.dir, "netns": self.netns,
                "pidfile": self.pidfile, "logfile": self.logfile, "env": self.env,
                "pid": self.pid}

    @classmethod
    def from_json(cls, d: dict) -> "Service":
        return cls(d["name"], d["argv"], d["dir"], netns=d.get("netns"),
                   pidfile=d.get("pidfile"), logfile=d.get("logfile"), env=d.get("env"),
                   pid=d.get("pid"))

    def fresh(self) -> "Service":
        """The same service, not started yet (for a restart with the same command line)."""
        return Service(self.name, self.argv, self.dir, netns=self.netns, pidfile=self.pidfile,
                       logfile=self.logfile, env=self.env)

    def start(self) -> int:
        """Start detached (own session, stdin closed, output to ``NAME.out``)."""
        os.makedirs(self.dir, exist_ok=True)
        if self.alive():
            raise LabError(f"{self.name} is already running (pid {self.current_pid()})")
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        env.update(self.env or {})
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.outfile, "ab") as out:
            try:
                proc = subprocess.Popen(netns_prefix(self.netns) + self.argv, cwd=self.dir,
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env=env)
            except OSError as e:
                raise LabError(f"cannot start {self.name}: {e}") from e
        self.pid = proc.pid
        # The Popen object is dropped on purpose: the process outlives this lab command.
        proc.returncode = 0
        return proc.pid

    def current_pid(self, root: Optional[str] = None) -> Optional[int]:
        """The live pid: the one recorded at start, else the pidfile's (checked against root)."""
        for pid in (self.pid, read_pidfile(self.pidfile)):
            if alive(pid) and (root is None or belongs_to(pid, root)):
                return pid
        return None

    def alive(self, root: Optional[str] = None) -> bool:
        return self.current_pid(root) is not None

    def stop(self, root: str, kill: bool = False, timeout: float = 10) -> None:
        pids = [p for p in (self.pid, read_pidfile(self.pidfile))
                if p and alive(p) and belongs_to(p, root)]
        stop_pids(pids, timeout=timeout, kill=kill)

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for path in (self.logfile, self.outfile):
            if os.path.exists(path) and os.path.getsize(path):
                parts.append(f"--- {path} (last {lines} lines)\n{tail(path, lines)}")
        return "\n".join(parts) or f"(nothing logged; see {self.logfile} and {self.outfile})"


def pidfiles_under(root: str) -> List[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found += [os.path.join(dirpath, f) for f in files if f.endswith(".pid")]
    return found
