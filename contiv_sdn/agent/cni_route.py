"""``POST /v1/cni``: the CNI plugin's logic run inside netplugin, for the C shim.

A container runtime executes ``contiv-cni`` for every command (podman: VERSION, ADD,
VERSION, DEL per ``run --rm``).  As a Python program each run paid 8-20 ms of
interpreter and import start-up before any work, which made podman through contiv-cni
1.31x the reference ``bridge`` plugin (target: 1.1x).  The executable is therefore a
small C program (``drivers/cni/shim.c``) that forwards the call here, where everything
is loaded already; the CNI logic is still :func:`drivers.cni.main.answer`, the very
function the Python plugin runs, so both give the same bytes.

The body is binary (the shim writes it from the process's environment and stdin)::

    NAME=VALUE \\0  NAME=VALUE \\0 ...  \\0  <stdin bytes>

Names and values are C strings (no NUL), so the framing is exact; it is decoded
strictly (:func:`decode_call`) and anything malformed is a 400, which the shim answers
by running the Python plugin instead.  The reply is ``200`` with the plugin's stdout as
its body and its exit status in ``X-CNI-Exit``.

The function runs in a worker thread of a pool of its own, bounded at
:data:`THREADS`: it makes blocking calls back to this process's own socket
(``/v1/endpoints``), which the reactor serves meanwhile, and those calls need the
reactor's default thread pool (veth plumbing) to stay free — sharing it could deadlock.
Nothing in the function reads or changes process state (the environment is passed in,
stdout is returned); CHECK's ``nsenter`` runs in a subprocess.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet import threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from contiv_sdn.ops import metrics

log = Logger()

#: Concurrent plugin runs (each mostly waits on this process's own API).
THREADS = 8
#: Plugin runs waiting for a thread beyond which the route answers 503 (the shim then
#: runs the Python plugin, which asks this process directly).
MAX_WAITING = 256
#: Largest body accepted: the shim sends at most 4 MiB of stdin plus the CNI_* variables.
MAX_BODY = 8 << 20


class BadCall(ValueError):
    """The body is not a CNI call as the shim frames it."""


def decode_call(body: bytes) -> Tuple[Dict[str, str], bytes]:
    """``(environment, stdin)`` of a framed call; :class:`BadCall` when malformed.

    Values are decoded as Python decodes its own environment (UTF-8 with
    ``surrogateescape``), so bytes that are not UTF-8 reach the plugin exactly as
    ``os.environ`` would hold them; the first of a repeated name wins, as in
    ``os.environ``."""
    if len(body) > MAX_BODY:
        raise BadCall(f"the body is larger than {MAX_BODY >> 20} MiB")
    env: Dict[str, str] = {}
    pos = 0
    while True:
        nul = body.find(b"\0", pos)
        if nul < 0:
            raise BadCall("the environment is not terminated by an empty entry")
        entry = body[pos:nul]
        pos = nul + 1
        if not entry:
            break
        name, sep, value = entry.partition(b"=")
        if not sep or not name:
            raise BadCall(f"environment entry {entry[:60]!r} is not NAME=VALUE")
        key = name.decode("utf-8", "surrogateescape")
        env.setdefault(key, value.decode("utf-8", "surrogateescape"))
    return env, body[pos:]


class CNIRoute:
    """Runs the CNI plugin's answer (:func:`drivers.cni.main.answer`, attached by
    drivers/netplugin.py) off the reactor, at most :data:`THREADS` at a time."""

    def __init__(self, reactor: Any = None,
                 answer: Optional[Callable[[Dict[str, str], bytes], Tuple[bytes, int]]] = None):
        #: the plugin's ``(env, stdin) -> (stdout, status)``: given by whoever assembles
        #: netplugin (drivers/netplugin.py: the agent imports no driver); None answers
        #: 404, and the shim runs the Python plugin instead
        self.answer = answer
        if reactor is None:
            from twisted.internet import reactor as default
            reactor = default
        self.reactor = reactor
        self._pool: Optional[ThreadPool] = None
        self._trigger: Any = None
        self._waiting = 0
        #: calls answered with the plugin's answer (tests tell the route from the fallback)
        self.answered = 0

    def _started_pool(self) -> ThreadPool:
        if self._pool is None:
            pool = ThreadPool(minthreads=0, maxthreads=THREADS, name="cni")
            pool.start()
            self._trigger = self.reactor.addSystemEventTrigger("during", "shutdown",
                                                               self.stop)
            self._pool = pool
        return self._pool

    async def call(self, body: bytes) -> Tuple[int, Dict[str, str], bytes]:
        """``(HTTP status, headers, body)`` of one ``POST /v1/cni``."""
        started = time.perf_counter()
        try:
            env, stdin = decode_call(body)
        except BadCall as e:
            log.info("cni call refused: {err}", err=e)
            metrics.plugin_call("agent", "cni", "refused", time.perf_counter() - started)
            return 400, {}, f"the CNI call is malformed: {e}".encode()
        if self._waiting >= MAX_WAITING:
            log.info("cni call refused: {n} calls waiting", n=self._waiting)
            metrics.plugin_call("agent", "cni", "refused", time.perf_counter() - started)
            return 503, {}, b"too many CNI calls waiting; the plugin runs by itself"
        answer = self.answer
        if answer is None:
            metrics.plugin_call("agent", "cni", "refused", time.perf_counter() - started)
            return 404, {}, b"this netplugin serves no CNI plugin; the shim runs it by itself"
        self._waiting += 1
        try:
            out, status = await threads.deferToThreadPool(self.reactor, self._started_pool(),
                                                          answer, env, stdin)
        finally:
            self._waiting -= 1
        self.answered += 1
        metrics.plugin_call("agent", "cni", "ok" if status == 0 else "refused",
                            time.perf_counter() - started)
        return 200, {"X-CNI-Exit": str(status)}, out

    def stop(self) -> None:
        """Let the worker threads go once their runs end, without waiting here: a run in
        progress may be waiting for this very reactor to answer its call (netplugin's
        stopService and the reactor's shutdown both call this)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            self.reactor.removeSystemEventTrigger(self._trigger)
        except (ValueError, KeyError, TypeError):
            pass  # the shutdown is what called us
        threading.Thread(target=pool.stop, name="cni pool stop", daemon=True).start()
