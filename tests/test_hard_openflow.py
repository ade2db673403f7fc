"""Hostile OFPT_ERROR bodies from a switch (issue 18, item 7).

An error whose body is too short for its type (an experimenter error without its
experimenter id, an error without type and code) used to go to os-ken, which
raised; the connection was dropped and a traceback logged.  Its framing is fine
and it still says "your message xid N failed", so now: one brief log line, the
request fails with :class:`OpenFlowError`, and the connection stays up.
"""

from __future__ import annotations

import logging
import struct

from os_ken.ofproto import ofproto_v1_3 as ofp
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from contiv_sdn.openflow.protocol import OpenFlowError, parse_error
from tests.test_ofp_protocol import FakeSwitch, make_factory, msg

EXP = ofp.OFPET_EXPERIMENTER  # 0xffff


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class MalformedErrorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        # os-ken logs through the standard library (LOG.exception on parse errors)
        self.pylog = _Captured()
        root = logging.getLogger()
        root.addHandler(self.pylog)
        self.addCleanup(root.removeHandler, self.pylog)
        self.sw = FakeSwitch(make_factory())
        self.sw.handshake()
        self.sw.sent()
        self.events.clear()

    def _error_lines(self) -> list:
        return [e for e in self.events if "OFPT_ERROR" in (e.get("log_format") or "")]

    def _assert_no_traceback(self) -> None:
        for e in self.events:
            self.assertNotIn("log_failure", e, formatEvent(e))
            self.assertNotIn("Traceback", formatEvent(e) or "")
        self.assertEqual([r.getMessage() for r in self.pylog.records if r.name.startswith("os_ken")], [])

    def _still_served(self) -> None:
        """The connection is up: echo answered, a barrier completes."""
        self.assertFalse(self.sw.closed)
        self.sw.feed(msg(ofp.OFPT_ECHO_REQUEST, 77, b"ping"))
        self.assertIn((ofp.OFPT_ECHO_REPLY, 77), [(t, x) for t, x, _d in self.sw.sent()])
        d = self.sw.proto.barrier()
        (_t, xid, _d), = self.sw.sent()
        self.sw.feed(msg(ofp.OFPT_BARRIER_REPLY, xid))
        self.assertIsNone(self.successResultOf(d))

    def _barrier_then_error(self, body: bytes):
        d = self.sw.proto.barrier()
        (_t, xid, _d), = self.sw.sent()
        self.sw.feed(msg(ofp.OFPT_ERROR, xid, body))
        return d, xid

    def test_experimenter_error_without_experimenter_id(self):
        d, xid = self._barrier_then_error(struct.pack("!HH", EXP, 7))
        err = self.failureResultOf(d, OpenFlowError).value
        self.assertEqual((err.type, err.code, err.xid), (EXP, 7, xid))
        lines = self._error_lines()
        self.assertEqual(len(lines), 1, [formatEvent(e) for e in lines])
        self.assertEqual(lines[0]["log_level"], LogLevel.warn)
        text = formatEvent(lines[0])
        self.assertIn("malformed OFPT_ERROR", text)
        self.assertIn("without its experimenter id", text)
        self.assertNotIn("\n", text)
        self._assert_no_traceback()
        self._still_served()

    def test_error_without_type_and_code(self):
        for body in (b"", b"\xff", b"\x00\x01\x02"):
            self.events.clear()
            d, xid = self._barrier_then_error(body)
            err = self.failureResultOf(d, OpenFlowError).value
            self.assertEqual((err.type, err.code), (None, None))
            self.assertIn("without type and code", str(err))
            self.assertEqual(len(self._error_lines()), 1)
            self._assert_no_traceback()
            self._still_served()

    def test_unsolicited_malformed_error_is_counted_not_fatal(self):
        before = self.sw.proto.factory.errors_seen
        self.sw.feed(msg(ofp.OFPT_ERROR, 4242, struct.pack("!HH", EXP, 1)))
        self.assertEqual(self.sw.proto.factory.errors_seen, before + 1)
        self.assertEqual(len(self._error_lines()), 1)
        self._assert_no_traceback()
        self._still_served()

    def test_malformed_error_inside_a_bundle_fails_the_commit(self):
        b = self.sw.proto.bundle()
        (_t, open_xid, _d), = self.sw.sent()
        body = struct.pack("!IIIHH", 0x4F4E4600, ofp.ONF_ET_BUNDLE_CONTROL, b.id, ofp.ONF_BCT_OPEN_REPLY, 0)
        self.sw.feed(msg(ofp.OFPT_EXPERIMENTER, open_xid, body))
        inner_xid = self.sw.proto.next_xid()
        b.add(struct.pack("!BBHI", 4, ofp.OFPT_BARRIER_REQUEST, 8, inner_xid))
        b.flush()
        self.sw.feed(msg(ofp.OFPT_ERROR, inner_xid, struct.pack("!HH", EXP, 3)))
        self.assertEqual(len(b.errors), 1)
        self.assertEqual((b.errors[0].type, b.errors[0].code), (EXP, 3))
        self._assert_no_traceback()
        self.assertFalse(self.sw.closed)

    def test_well_formed_errors_are_unchanged(self):
        d, xid = self._barrier_then_error(struct.pack("!HHI", EXP, 2, 0x4F4E4600) + b"\x04\x14\x00\x08")
        err = self.failureResultOf(d, OpenFlowError).value
        self.assertEqual((err.type, err.code), (EXP, 2))
        d, xid = self._barrier_then_error(struct.pack("!HH", ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE))
        err = self.failureResultOf(d, OpenFlowError).value
        self.assertEqual(str(err).split(" for ")[0], "OFPET_BAD_REQUEST/OFPBRC_BAD_TYPE")
        lines = self._error_lines()
        self.assertEqual([e["log_level"] for e in lines], [LogLevel.error, LogLevel.error])
        self._assert_no_traceback()
        self._still_served()


class ParseErrorTests(unittest.TestCase):
    def test_fields_and_what_is_missing(self):
        hdr = b"\x04\x01\x00\x00\x00\x00\x00\x01"
        self.assertEqual(parse_error(hdr + struct.pack("!HH", 4, 9) + b"abc"), (4, 9, b"abc", ""))
        self.assertEqual(parse_error(hdr + struct.pack("!HHI", EXP, 9, 5) + b"x"), (EXP, 9, b"x", ""))
        t, c, data, why = parse_error(hdr + struct.pack("!HH", EXP, 9) + b"\0\0")
        self.assertEqual((t, c, data), (EXP, 9, b""))
        self.assertIn("experimenter id", why)
        t, c, data, why = parse_error(hdr + b"\0")
        self.assertEqual((t, c), (None, None))
        self.assertIn("shorter than type and code", why)
