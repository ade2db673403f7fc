"""The shared wait helpers (contiv_sdn.testing.wait): what every test's "eventually" rests on.

A wait that returns too early, swallows a real error, or runs forever would make
every test built on it meaningless, so its rules are proved here: it returns the
first true value, accepts Deferreds, coroutines and blocking checks, fails with
what was awaited, and its bound is a deadline on the clock (a fake clock here,
so nothing depends on this machine's speed).
"""

from __future__ import annotations

import threading

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.testing import wait
from contiv_sdn.testing.wait import wait_for, wait_until
from tests.test_fnd_helpers import async_test


class FakeTime:
    """Stands in for the ``time`` module inside ``wait``: a clock only the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Countdown:
    """A predicate that is false ``n`` times, then returns ``value``."""

    def __init__(self, n: int, value="done") -> None:
        self.n, self.value, self.calls = n, value, 0

    def __call__(self):
        self.calls += 1
        return self.value if self.calls > self.n else None


class WaitFor(unittest.TestCase):
    @async_test
    async def test_returns_the_first_true_value(self):
        check = Countdown(3, value={"ready": True})
        self.assertEqual(await wait_for(check, what="ready", every=0), {"ready": True})
        self.assertEqual(check.calls, 4)

    @async_test
    async def test_awaits_deferred_and_coroutine_predicates(self):
        answers = iter([0, 0, 7])
        self.assertEqual(await wait_for(lambda: defer.succeed(next(answers)), every=0), 7)

        async def later():
            await wait.sleep(0)
            return "coro"
        self.assertEqual(await wait_for(later, every=0), "coro")

    @async_test
    async def test_in_thread_runs_the_blocking_check_off_the_reactor_thread(self):
        reactor_thread = threading.get_ident()
        seen = await wait_for(threading.get_ident, in_thread=True)
        self.assertNotEqual(seen, reactor_thread)

    @async_test
    async def test_gives_up_on_a_deadline_in_time_and_says_what(self):
        clock = FakeTime()
        self.patch(wait, "time", clock)

        calls = []

        def never():
            calls.append(clock.now)
            clock.now += 0.4  # each check "costs" 0.4 s: a loop count would be wrong here
            return False
        with self.assertRaises(AssertionError) as e:
            await wait_for(never, timeout=1.0, what="ep3's flows", every=0,
                           detail=lambda: "last dump: (none)")
        self.assertEqual(str(e.exception), "gave up after 1 s: ep3's flows\nlast dump: (none)")
        self.assertEqual(len(calls), 3)  # the third check ends at +1.2 s, past the deadline

    @async_test
    async def test_an_error_fails_at_once_unless_retried(self):
        def broken():
            raise ValueError("bad check")
        with self.assertRaises(ValueError):
            await wait_for(broken, every=0)
        clock = FakeTime()
        self.patch(wait, "time", clock)

        def refusing():
            clock.now += 1
            raise ConnectionRefusedError("not listening yet")
        with self.assertRaises(AssertionError) as e:
            await wait_for(refusing, timeout=2, what="the API", every=0, retry_errors=True)
        self.assertIn("gave up after 2 s: the API", str(e.exception))
        self.assertIn("not listening yet", str(e.exception))
        answers = iter([ConnectionRefusedError(), None, "up"])

        def starting():
            a = next(answers)
            if isinstance(a, Exception):
                raise a
            return a
        self.assertEqual(await wait_for(starting, every=0, retry_errors=True), "up")

    @async_test
    async def test_a_failing_detail_does_not_hide_the_timeout(self):
        clock = FakeTime()
        self.patch(wait, "time", clock)

        def never():
            clock.now += 1
        with self.assertRaises(AssertionError) as e:
            await wait_for(never, timeout=0.5, what="x", every=0, detail=lambda: 1 / 0)
        self.assertIn("gave up after 0.5 s: x", str(e.exception))
        self.assertIn("no detail: ZeroDivisionError", str(e.exception))


class WaitUntil(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = FakeTime()
        self.patch(wait, "time", self.clock)

    def test_returns_the_first_true_value_sleeping_between_tries(self):
        check = Countdown(2)
        self.assertEqual(wait_until(check, "done", interval=0.25), "done")
        self.assertEqual((check.calls, self.clock.slept), (3, [0.25, 0.25]))

    def test_gives_up_on_a_deadline_in_time_and_says_what(self):
        check = Countdown(10 ** 6)
        with self.assertRaises(AssertionError) as e:
            wait_until(check, "the flows on h1 never settled", timeout=1.0, interval=0.3)
        self.assertEqual(str(e.exception), "gave up after 1 s: the flows on h1 never settled")
        self.assertEqual(check.calls, 5)  # at 0, 0.3, 0.6, 0.9 and 1.2 s

    def test_an_error_fails_at_once_unless_retried(self):
        def broken():
            raise OSError("gone")
        with self.assertRaises(OSError):
            wait_until(broken, "x")
        self.assertEqual(self.clock.slept, [])
        with self.assertRaises(AssertionError) as e:
            wait_until(broken, "the socket", timeout=1, interval=0.5, retry_errors=True)
        self.assertIn("last error: OSError('gone')", str(e.exception))
