"""The CNI plugin's client for the local netplugin API (HTTP/1.0 over its UNIX socket).

A CNI plugin is a short-lived process with no event loop, so this is a plain
blocking socket, and deliberately stdlib-only and tiny (``http.client`` alone
costs more import time than the request itself).

netplugin is a separate process, so its replies are input like any other: each
is bounded (time: one deadline for the whole exchange, not per ``recv``, so a
peer trickling bytes cannot hold the plugin; size: :data:`MAX_REPLY`), parsed
strictly and type-checked against the shapes declared here before the plugin
uses it.  A reply that fails any of that raises :class:`Malformed`, which the
plugin reports as "netplugin sent a malformed reply: ..." rather than passing a
``"5/[]"`` address on to the runtime.
"""

from __future__ import annotations

import json
import socket
import time
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time in a process run per container
    from typing import Any, Dict, List, Tuple

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import BOOL, INT, STR, STR_MAP, Struct, loads
from drivers.cni.spec import DNS

#: Longest whole request/answer exchange with netplugin (an ADD plumbs a veth,
#: asks the netmaster for an address and waits for OVS: seconds, not minutes).
TIMEOUT = 120.0
#: Largest reply accepted (GC lists every endpoint of the host: ~1 KiB each).
MAX_REPLY = 64 << 20

#: An endpoint record, as far as the plugin reads it (agent/endpoints.py writes it).
ENDPOINT = Struct("Endpoint", [
    ("id", STR), ("containerID", STR), ("ifname", STR), ("intfName", STR),
    ("ipAddress", STR), ("prefixLen", INT), ("gateway", STR), ("ipv6Address", STR),
    ("macAddress", STR), ("hostMac", STR), ("labels", STR_MAP), ("dns", DNS),
])
#: ``GET /v1/status``.
STATUS = Struct("Status", [("ready", BOOL)])
#: Every 4xx/5xx answer of the agent's API.
ERROR = Struct("Error", [("error", STR)])


class Unreachable(Exception):
    """No netplugin answers on the socket (in time)."""


class Malformed(Exception):
    """netplugin answered, but not with what its API promises."""


def request(path_sock: str, method: str, path: str, body: Any = None,
            timeout: float = TIMEOUT) -> Tuple[int, bytes]:
    """``(HTTP status, payload)`` of one exchange, all of it within ``timeout``
    seconds; raises :class:`Unreachable` or :class:`Malformed`."""
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.0\r\nHost: netplugin\r\n"
            f"Content-Length: {len(data)}\r\n")
    if body is not None:
        head += "Content-Type: application/json\r\n"
    deadline = time.monotonic() + timeout
    chunks: List[bytes] = []
    size = 0
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path_sock)
        except (OSError, ValueError) as e:  # ValueError: a NUL in the path
            if isinstance(e, socket.timeout):
                raise
            raise Unreachable(f"netplugin is not running (no answer on {path_sock}: "
                              f"{getattr(e, 'strerror', None) or e})") from None
        s.sendall(head.encode() + b"\r\n" + data)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_REPLY:
                raise Malformed(f"the reply is larger than {MAX_REPLY >> 20} MiB")
            chunks.append(chunk)
    except socket.timeout:
        raise Unreachable(f"netplugin on {path_sock} did not answer within {timeout:g} s") \
            from None
    except OSError as e:
        raise Unreachable(f"netplugin on {path_sock} broke off the exchange: "
                          f"{e.strerror or e}") from None
    finally:
        s.close()
    raw = b"".join(chunks)
    header, sep, payload = raw.partition(b"\r\n\r\n")
    line = header.split(b"\r\n", 1)[0].split(b" ", 2)
    if (not sep or len(line) < 2 or not line[0].startswith(b"HTTP/")
            or len(line[1]) != 3 or not line[1].isdigit() or not 100 <= int(line[1]) <= 599):
        if not raw:
            raise Unreachable(f"netplugin on {path_sock} closed the connection without "
                              "answering")
        raise Malformed("no HTTP status line")
    return int(line[1]), payload


def _struct(shape: Struct, payload: bytes) -> Dict[str, Any]:
    try:
        return shape.load(payload)
    except DecodeError as e:
        raise Malformed(str(e)) from None


def decode_endpoint(payload: bytes) -> Dict[str, Any]:
    """An endpoint record whose address is usable as a CNI result (else :class:`Malformed`)."""
    record = _struct(ENDPOINT, payload)
    check_endpoint(record)
    return record


def decode_endpoints(payload: bytes) -> List[Dict[str, Any]]:
    """``GET /v1/endpoints``: a list of endpoint records (only their ids and labels are used)."""
    try:
        doc = loads(payload)
        if not isinstance(doc, list):
            kind = ("object" if isinstance(doc, dict) else "string" if isinstance(doc, str)
                    else "bool" if isinstance(doc, bool) else "null" if doc is None
                    else "number")
            raise DecodeError(f"json: cannot unmarshal {kind} into Go value of type "
                              "[]Endpoint")
        records = [ENDPOINT.coerce(item) for item in doc]
    except DecodeError as e:
        raise Malformed(str(e)) from None
    for record in records:
        if not record["id"]:
            raise Malformed("an endpoint in the list has no id")
    return records


def decode_status(payload: bytes) -> Dict[str, Any]:
    return _struct(STATUS, payload)


def error_text(status: int, payload: bytes) -> str:
    """The agent's ``{"error": ...}`` text of a 4xx/5xx answer, or what was wrong with it."""
    try:
        text = ERROR.load(payload)["error"]
    except DecodeError as e:
        return f"HTTP {status} (netplugin sent a malformed reply: {e})"
    return text or f"HTTP {status}"


def check_endpoint(record: Dict[str, Any]) -> None:
    """The addresses of a record are what they claim to be: an IPv4 address and prefix
    length, an IPv4 gateway (or none), an IPv6 interface address (or none), MACs."""
    import ipaddress
    try:
        ipaddress.IPv4Address(record["ipAddress"])
    except ValueError:
        raise Malformed("ipAddress " + json.dumps(record["ipAddress"][:100])
                        + " is not an IPv4 address") from None
    if not 0 < record["prefixLen"] <= 32:
        raise Malformed(f"prefixLen {record['prefixLen']} is not between 1 and 32")
    if record["gateway"]:
        try:
            ipaddress.IPv4Address(record["gateway"])
        except ValueError:
            raise Malformed("gateway " + json.dumps(record["gateway"][:100])
                            + " is not an IPv4 address") from None
    if "/" in record["ipv6Address"]:
        try:
            ipaddress.IPv6Interface(record["ipv6Address"])
        except ValueError:
            raise Malformed("ipv6Address " + json.dumps(record["ipv6Address"][:100])
                            + " is not an IPv6 address/prefix") from None
    for key in ("macAddress", "hostMac"):
        if record[key] and not _is_mac(record[key]):
            raise Malformed(f"{key} " + json.dumps(record[key][:100]) + " is not a MAC address")
    for key in ("intfName", "ifname"):
        if len(record[key]) > 15 or any(c.isspace() or c == "/" for c in record[key]):
            raise Malformed(f"{key} " + json.dumps(record[key][:100])
                            + " is not an interface name")


def _is_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF"
                                                        for c in p) for p in parts)
