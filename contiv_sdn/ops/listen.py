"""``--metrics-listen`` of both daemons: one parser, so both take the same forms."""

from __future__ import annotations

from typing import List, Optional

from twisted.python import usage

_ENDPOINT_TYPES = ("tcp:", "tcp6:", "unix:", "ssl:", "systemd:", "tls:")

METRICS_HELP = ("where Prometheus metrics are served (GET /metrics): a Twisted endpoint "
                "string, host:port or :port; 'none' (the default) serves none")


def metrics_endpoint(value: Optional[str], flag: str = "--metrics-listen") -> Optional[str]:
    """``none``/empty → None; ``tcp:9180`` (any endpoint string) kept; ``host:port`` or
    ``:port`` → an endpoint string.  A wrong value is a usage error naming ``flag``."""
    if value is None or value.strip().lower() in ("", "none"):
        return None
    value = value.strip()
    if value.startswith(_ENDPOINT_TYPES):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise usage.UsageError(f"{flag}: {value!r} is neither host:port, :port, an endpoint "
                               f"string (tcp:9180:interface=127.0.0.1) nor 'none'")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return f"tcp:{port}"
    if ":" in host:
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={host}"


def endpoint_fields(endpoint: str) -> List[str]:
    """A Twisted endpoint string split on its unescaped colons, escapes removed
    (``tcp6:9999:interface=\\:\\:1`` → ``["tcp6", "9999", "interface=::1"]``): the
    one reading of listen strings for the REST, metrics and OpenFlow listeners."""
    out, cur, i = [], "", 0
    while i < len(endpoint):
        c = endpoint[i]
        if c == "\\" and i + 1 < len(endpoint):
            cur += endpoint[i + 1]
            i += 2
            continue
        if c == ":":
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return out
