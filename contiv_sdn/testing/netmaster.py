"""A real netmaster process for tests: ``twistd -n netmaster`` in a subprocess.

Synchronous on purpose (like :class:`contiv_sdn.testing.RedisServer`) so a
test can start it in ``setUp``; ``start`` returns once ``GET /version``
answers and raises with the log tail if the process dies first.  Without a
``redis_url`` the netmaster runs its own embedded redis-server in
``state_dir``; keep the directory across ``stop``/``start`` (``stop(remove=
False)``) to test a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, Optional, Sequence

from contiv_sdn.testing import free_tcp_port

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _twistd() -> list:
    exe = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class NetmasterProcess:
    def __init__(self, redis_url: Optional[str] = None, port: Optional[int] = None,
                 state_dir: Optional[str] = None, extra_args: Sequence[str] = (),
                 ofp_listen: str = "none", env: Optional[Dict[str, str]] = None):
        self.redis_url = redis_url
        #: Tests run many netmasters side by side: no OpenFlow listener unless asked for.
        self.ofp_listen = ofp_listen
        self.port = port or free_tcp_port()
        self._own_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="contiv-netmaster-")
        self.extra_args = list(extra_args)
        #: environment overrides for the process (e.g. a PATH without redis-server)
        self.env = dict(env or {})
        self.logfile = os.path.join(self.state_dir, "netmaster.log")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list:
        args = _twistd() + ["-n", "--pidfile=", f"--logfile={self.logfile}", "netmaster",
                            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                            "--state-dir", self.state_dir, "--ofp-listen", self.ofp_listen]
        if self.redis_url:
            args += ["--redis", self.redis_url]
        return args + self.extra_args

    def start(self, timeout: float = 30.0) -> "NetmasterProcess":
        os.makedirs(self.state_dir, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.env)
        self.proc = subprocess.Popen(self.command(), cwd=self.state_dir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"netmaster exited with {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/version", timeout=2) as r:
                    if r.status == 200:
                        return self
            except urllib.error.HTTPError as e:
                if e.code == 401:  # --auth: it is up, and asks for a token
                    return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"netmaster did not answer /version in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0, remove: bool = True) -> None:
        """SIGTERM and wait (the embedded Redis is stopped by the netmaster).

        ``remove=False`` keeps a temporary state directory for a restart.
        """
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if remove:
            self.cleanup()

    def terminate(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM and wait up to ``timeout``: the exit status, or None if the
        process was still running (it is then SIGKILLed)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def redis_pid(self) -> Optional[int]:
        """The pid of the embedded redis-server (from its pid file), if any."""
        try:
            with open(os.path.join(self.state_dir, "redis.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL: a crash.  An embedded redis-server survives and is adopted on restart."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def cleanup(self) -> None:
        """Remove a temporary state dir, stopping an orphaned embedded redis-server first."""
        if not self._own_dir or not os.path.isdir(self.state_dir):
            return
        pidfile = os.path.join(self.state_dir, "redis.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10  # then the directory goes regardless
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]
