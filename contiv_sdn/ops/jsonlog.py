"""JSON-lines logs: every ``twisted.logger`` event as one JSON object per line.

Why beside the text log rather than instead of it: twistd sets up its text log
before any plugin option is parsed, so ``--log-json FILE`` adds a second
observer for log shippers (one event per line, ``log_level``, ``log_namespace``,
``log_format`` and the event's own keys such as ``kind``/``key``), while
operators keep the readable log.  Secrets never reach an event in the first
place (passwords and tokens are not logged anywhere), so this observer does not
filter.
"""

from __future__ import annotations

import io
from typing import Optional

from twisted.logger import ILogObserver, globalLogPublisher, jsonFileLogObserver

LOG_JSON_HELP = ("also write every log event as JSON lines to this file (for log shippers; "
                 "the text log stays as it is)")


def start(path: Optional[str], reactor=None) -> Optional[ILogObserver]:
    """Add a JSON-lines observer writing to ``path`` (appending); ``None``: nothing.

    The file is line-buffered so a crash loses at most the event being written,
    and closed when the reactor shuts down.
    """
    if not path:
        return None
    out: io.TextIOWrapper = open(path, "a", buffering=1, encoding="utf-8")
    observer = jsonFileLogObserver(out, recordSeparator="")
    globalLogPublisher.addObserver(observer)
    if reactor is None:
        from twisted.internet import reactor as _reactor
        reactor = _reactor

    def stop() -> None:
        globalLogPublisher.removeObserver(observer)
        out.close()

    reactor.addSystemEventTrigger("after", "shutdown", stop)
    return observer


__all__ = ["start", "LOG_JSON_HELP"]
