"""A belief that follows the engine (``sync.Following``), with plain data.

The engine's side is a dict that changes as an engine pass would: every change is
first noted (what the sync is told just before), and a send updates the belief
with what the switch now holds, which may already differ from what the engine
desires by then.  The belief must always be what the switch holds.
"""

from twisted.trial.unittest import TestCase

from contiv_sdn.openflow.sync import FlowSync, Following
from contiv_sdn.pipeline.flow import Flow


class _View:
    def __init__(self, table):
        self.t = dict(table)
        self.pass_touched = []  # what the engine's pass in progress changed already

    def touched(self):
        return tuple(self.pass_touched)

    def flow_at(self, ident):
        return self.t.get(ident)

    def table(self):
        return dict(self.t)


def _f(n: int, out: int = 1) -> Flow:
    return Flow(10, n, (("in_port", n),), (("output", out),))


class FollowingTests(TestCase):
    def setUp(self):
        self.a, self.b, self.c = _f(1), _f(2), _f(3)
        self.view = _View({f.identity: f for f in (self.a, self.b)})
        self.switch = {f.identity: f for f in (self.a, self.b)}  # what the switch holds
        self.belief = Following(self.view, 2)

    def engine_sets(self, ident, flow):
        """The engine changes what it desires (told first, as IncrementalCompiler._note does)."""
        self.belief.note(ident, self.view.flow_at(ident))
        if flow is None:
            self.view.t.pop(ident, None)
        else:
            self.view.t[ident] = flow

    def send(self, ident, flow):
        """A delta entry reaches the switch; the sync writes it into the belief."""
        if flow is None:
            self.switch.pop(ident, None)
            self.belief.pop(ident, None)
        else:
            self.switch[ident] = flow
            self.belief[ident] = flow

    def assertAgrees(self):
        self.assertEqual(self.belief.table(), self.switch)
        self.assertEqual(len(self.belief), len(self.switch))
        for ident, f in self.switch.items():
            self.assertIs(self.belief.get(ident), f)

    def test_a_change_not_sent_yet_is_what_the_switch_holds(self):
        b2 = _f(2, out=7)
        self.engine_sets(self.b.identity, b2)
        self.engine_sets(self.c.identity, self.c)
        self.engine_sets(self.a.identity, None)
        self.assertAgrees()
        self.send(self.b.identity, b2)
        self.send(self.c.identity, self.c)
        self.send(self.a.identity, None)
        self.assertAgrees()
        self.assertEqual(self.belief.diff, {}, "all sent: nothing kept apart")

    def test_the_engine_moves_on_while_a_send_is_in_flight(self):
        b2, b3 = _f(2, out=7), _f(2, out=8)
        self.engine_sets(self.b.identity, b2)  # delta 1: b -> b2, handed to the sync
        self.engine_sets(self.b.identity, b3)  # the next pass: b2 -> b3 (noted once: b is kept)
        self.assertAgrees()
        self.send(self.b.identity, b2)  # delta 1 lands: the switch holds b2, the engine wants b3
        self.assertAgrees()
        self.assertIs(self.belief.diff[self.b.identity], b2)
        self.send(self.b.identity, b3)  # delta 2 lands
        self.assertAgrees()
        self.assertEqual(self.belief.diff, {})

    def test_a_flow_the_engine_drops_and_brings_back(self):
        self.engine_sets(self.a.identity, None)
        self.engine_sets(self.a.identity, self.a)  # (noted once: the first value is kept)
        self.assertAgrees()
        self.send(self.a.identity, self.a)
        self.assertAgrees()
        self.assertEqual(self.belief.diff, {})


class _Switch:
    connected = True
    dpid = 1


class BeginFollowingTests(TestCase):
    def test_following_begun_in_the_middle_of_an_engine_pass(self):
        """The desired set is taken while a pass has changed ``b`` already (the engine
        noted it then, and will not again in this pass) and changes it once more
        before the pass ends: the switch holds what was taken, so must the belief."""
        a, b = _f(1), _f(2)
        b2, b3 = _f(2, out=7), _f(2, out=8)
        view = _View({a.identity: a, b.identity: b2})  # the pass changed b -> b2 already
        view.pass_touched = [b.identity]
        sync = FlowSync(_Switch(), follow=lambda: view)
        desired = view.table()
        sync._begin_following(desired)
        sync._adopt(desired)  # (the pass sent ``desired``: the switch holds b2)
        view.t[b.identity] = b3  # the same pass changes b again: no note this time
        self.assertIs(sync.installed.get(b.identity), b2)
        self.assertEqual(sync.installed.table(), desired)
        sync.installed[b.identity] = b3  # the delta b2 -> b3 lands
        self.assertEqual(sync.installed.diff, {})
        self.assertEqual(len(sync.installed), 2)
