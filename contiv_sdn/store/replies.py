"""Redis replies parsed in the turn they arrive, not one reactor turn per element.

txredisapi's line receiver hands each bulk string to ``rawDataReceived`` together
with whatever followed it in the same read; when a bulk string ends, the rest of
the read goes back through ``setLineMode(extra)``, which *pauses the transport and
schedules the rest for the next reactor turn* (``callLater(0, ...)``).  A reply of
N bulk strings therefore takes N reactor turns, and every reply queued behind it
on the connection waits for all of them.  On an idle reactor a turn is
microseconds; while the controller compiles and sends in 10 ms slices it is
milliseconds, so an ``HSCAN`` step of 400 strings, or a run's few hundred ``HGET``
replies arriving in one read, took seconds: REST calls on the same connection
got no reply within their 5 s and were answered 503 (1000x20k fill), and the switch
lease's renewals queued 0.3-0.6 s behind bulk replies.

:class:`WholeReads` parses everything a read holds in one go: in line mode it
splits lines itself, and in raw mode it gives ``rawDataReceived`` no more than the
bulk string still needs, so txredisapi never has "extra" to postpone.  The reply
objects, their order and txredisapi's own handling of each line and bulk string
are unchanged (``tests/test_store_replies.py`` checks them against a real Redis
with every read cut at random places).
"""

from __future__ import annotations

from typing import Any

import txredisapi

_CRLF = b"\r\n"


class WholeReads:
    """Mixin over a txredisapi protocol: see the module doc."""

    _rx = b""  # the start of a line not complete yet

    def dataReceived(self, data: bytes, unpause: bool = False) -> Any:
        if unpause:  # (txredisapi's own postponing: never caused here, kept in order)
            self.paused = False
            buf = data + self._rx
        else:
            buf = self._rx + data if self._rx else data
        self._rx = b""
        pos, end = 0, len(buf)
        while pos < end:
            if self.line_mode:
                i = buf.find(_CRLF, pos)
                if i < 0:
                    if end - pos > self.MAX_LENGTH:
                        return self.lineLengthExceeded(buf[pos:])
                    break
                line = buf[pos:i]
                pos = i + 2
                why = self.lineReceived(line.decode())
                if why or (self.transport is not None and self.transport.disconnecting):
                    self._rx = buf[pos:]
                    return why
            else:
                need = self.bulk_length
                take = end - pos if need <= 0 else min(end - pos, need)
                self.rawDataReceived(buf[pos:pos + take])
                pos += take
        if pos < end:
            self._rx = buf[pos:]
        return None


class RedisProtocol(WholeReads, txredisapi.RedisProtocol):
    """txredisapi's command protocol, parsing whole reads."""


class SubscriberProtocol(WholeReads, txredisapi.SubscriberProtocol):
    """txredisapi's pub/sub protocol, parsing whole reads."""
