"""Bounded waiting, the one way every test (and the lab's test helpers) waits for a condition.

Things in this system happen *eventually* (flows after a store write, a port's
ofport after ``add-port``, a record after a restart), so a test waits for the
condition itself rather than sleeping a fixed time and hoping: a fixed sleep is
either too short on a loaded CI machine or wasted time everywhere else.

Why one module: each test file had grown its own poll loop, some bounded by a
count of iterations (which stretches with the predicate's own cost: 200 tries of
an ``ovs-ofctl`` dump is not "10 s") and some failing with a bare "condition not
reached".  Here the bound is a deadline on the monotonic clock, and a failure
says *what* never happened (plus, optionally, the last error or a diagnosis).
The timeout only bounds a broken run; no test asserts how long a wait took.

Two flavours with the same rules:

* :func:`wait_for` — async, for tests running on the reactor.  The predicate may
  return a Deferred or a coroutine; a blocking predicate (a subprocess, a
  synchronous socket) is run with ``in_thread=True`` so the reactor keeps serving
  the very services being waited for.
* :func:`wait_until` — blocking, for ``SynchronousTestCase`` s that never run a
  reactor (the lab and e2e tests) and for set-up code in a thread.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from twisted.internet import defer, reactor, task, threads


def sleep(seconds: float) -> defer.Deferred:
    """A pause that lets the reactor run (never ``time.sleep`` on the reactor thread).

    For polling inside :func:`wait_for` and for the rare wait that has no
    condition to await (e.g. "let a refusing peer retry for a while").
    """
    return task.deferLater(reactor, seconds, lambda: None)


class _Deadline:
    """One wait's rules, shared by both flavours: the deadline, errors, the message."""

    def __init__(self, timeout: float, what: str, retry_errors: bool,
                 detail: Optional[Callable[[], str]]) -> None:
        self.timeout, self.what, self.retry_errors, self.detail = timeout, what, retry_errors, detail
        self.end = time.monotonic() + timeout
        self.last: Optional[BaseException] = None

    def error(self, e: Exception) -> None:
        """A try raised: fail now, or (``retry_errors``) remember it as "not yet"."""
        if not self.retry_errors:
            raise e
        self.last = e

    def check(self) -> None:
        """After a try that was not yet true: give up if the deadline has passed."""
        if time.monotonic() <= self.end:
            return
        text = f"gave up after {self.timeout:g} s: {self.what}"
        if self.last is not None:
            text += f" (last error: {self.last!r})"
        if self.detail is not None:
            try:
                text += "\n" + self.detail()
            except Exception as e:  # the diagnosis must not hide the failure
                text += f"\n(no detail: {e!r})"
        raise AssertionError(text)


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
                   every: float = 0.05, in_thread: bool = False, retry_errors: bool = False,
                   detail: Optional[Callable[[], str]] = None) -> Any:
    """Poll ``predicate`` until it returns something true, and return that value.

    ``predicate`` may return a plain value, a Deferred or a coroutine.  With
    ``in_thread`` it runs in the reactor's thread pool (for blocking checks).
    An exception from the predicate fails the wait at once, unless
    ``retry_errors``: then it counts as "not yet" and the last one is reported
    if the deadline passes (for checks against a service still starting).
    On timeout raises :class:`AssertionError` "gave up after N s: <what>", with
    ``detail()`` appended when given; ``what`` names the awaited condition ("ep3's
    flows") or states the failure ("the flows never came back").
    """
    deadline = _Deadline(timeout, what, retry_errors, detail)
    while True:
        value = None
        try:
            value = await threads.deferToThread(predicate) if in_thread else predicate()
            if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
                value = await value
        except Exception as e:
            deadline.error(e)
        if value:
            return value
        deadline.check()
        await sleep(every)


def wait_until(predicate: Callable[[], Any], what: str = "condition", timeout: float = 30.0,
               interval: float = 0.2, retry_errors: bool = False,
               detail: Optional[Callable[[], str]] = None) -> Any:
    """Blocking :func:`wait_for`: poll ``predicate`` with ``time.sleep`` between tries.

    Only for code that does not run on the reactor thread (synchronous test
    cases, a thread started by a test); same rules and message as
    :func:`wait_for`.
    """
    deadline = _Deadline(timeout, what, retry_errors, detail)
    while True:
        value = None
        try:
            value = predicate()
        except Exception as e:
            deadline.error(e)
        if value:
            return value
        deadline.check()
        time.sleep(interval)
