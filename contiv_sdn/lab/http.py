"""Small blocking JSON-over-HTTP client for the lab (TCP or a UNIX socket).

The lab talks to netmaster (``/version``) and to each host's netplugin, whose
local API listens on a root-only UNIX socket.  The lab is synchronous (no
reactor), so the standard library's ``http.client`` is enough.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any, Optional, Tuple
from urllib.parse import urlsplit


class ApiError(RuntimeError):
    """An HTTP answer >= 400; ``status`` and the decoded ``body`` are kept for callers."""

    def __init__(self, method: str, where: str, status: int, body: Any):
        self.status = status
        self.body = body
        detail = body.get("error", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {where} -> {status}: {detail}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(method: str, path: str, body: Any = None, *, unix: Optional[str] = None,
            base_url: Optional[str] = None, timeout: float = 30, ca: Optional[str] = None,
            token: Optional[str] = None) -> Tuple[int, Any]:
    """One request; returns (status, decoded JSON or text). Raises OSError if unreachable.

    An ``https://`` base URL is verified against ``ca`` (a PEM file; the lab's own CA
    in ``--secure`` mode) or the system's trust store; ``token`` is sent as
    ``X-Auth-Token`` (netmaster's ``--auth``)."""
    if unix:
        conn: http.client.HTTPConnection = _UnixConnection(unix, timeout)
        prefix = ""
    else:
        u = urlsplit(base_url or "")
        if u.scheme == "https":
            context = ssl.create_default_context(cafile=ca)
            conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout,
                                               context=context)
        else:
            conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
        prefix = u.path.rstrip("/")
    headers = {"Accept": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, prefix + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except http.client.HTTPException as e:
        raise OSError(f"bad HTTP answer: {e}") from e
    finally:
        conn.close()
    text = raw.decode(errors="replace")
    try:
        decoded: Any = json.loads(text) if text.strip() else None
    except ValueError:
        decoded = text
    return resp.status, decoded


def call(method: str, path: str, body: Any = None, *, unix: Optional[str] = None,
         base_url: Optional[str] = None, timeout: float = 30, ca: Optional[str] = None,
         token: Optional[str] = None) -> Any:
    """Like :func:`request` but raise :class:`ApiError` on an HTTP error status."""
    status, decoded = request(method, path, body, unix=unix, base_url=base_url, timeout=timeout,
                              ca=ca, token=token)
    if status >= 400:
        raise ApiError(method, f"{unix or base_url}{path}", status, decoded)
    return decoded
