"""The CNI plugin's client for the local netplugin API (HTTP/1.0 over its UNIX socket).

A CNI plugin is a short-lived process with no event loop, so this is a plain
blocking socket with a timeout, and deliberately stdlib-only and tiny
(``http.client`` alone costs more import time than the request itself).
"""

from __future__ import annotations

import json
import socket
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time in a process run per container
    from typing import Any, Optional, Tuple

class Unreachable(Exception):
    """No netplugin answers on the socket."""


def request(path_sock: str, method: str, path: str, body: Any = None,
            timeout: float = 120.0) -> Tuple[int, Any]:
    """``(status, decoded JSON or None)``; raises :class:`Unreachable`."""
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.0\r\nHost: netplugin\r\n"
            f"Content-Length: {len(data)}\r\n")
    if body is not None:
        head += "Content-Type: application/json\r\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path_sock)
        except OSError as e:
            raise Unreachable(f"netplugin is not running (no answer on {path_sock}: "
                              f"{e.strerror or e})") from None
        s.sendall(head.encode() + b"\r\n" + data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except socket.timeout:
        raise Unreachable(f"netplugin on {path_sock} did not answer within {timeout:g} s") \
            from None
    finally:
        s.close()
    raw = b"".join(chunks)
    header, _, payload = raw.partition(b"\r\n\r\n")
    try:
        status = int(header.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise Unreachable(f"netplugin on {path_sock} sent no HTTP answer") from None
    answer: Optional[Any] = None
    if payload.strip():
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = {"error": payload.decode("utf-8", "replace").strip()}
    return status, answer
