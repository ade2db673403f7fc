"""HTTP response helpers with Go's exact wire behaviour.

Contiv's netmaster is Go ``net/http`` + gorilla/mux: success bodies come from
``json.NewEncoder(w).Encode`` (compact, trailing newline), errors from
``http.Error`` (status 500, ``text/plain; charset=utf-8``, message + newline,
``X-Content-Type-Options: nosniff``), and anything no route matches — an
unknown path, a missing trailing slash, a wrong method — is
``404 page not found``.  One status is ours: a state store that does not
answer in time is ``503`` with the store's message (Contiv's etcd client
would hang), so clients can tell "try again" from "you asked wrong".
Connection-level refusals (431, 400, 413) are :mod:`contiv_sdn.api.site`'s.
"""

from __future__ import annotations

from typing import Any

from contiv_sdn.model import encode_json

NOT_FOUND_BODY = b"404 page not found\n"


class HttpError(Exception):
    """A response other than 200: ``status`` and a text body (without newline)."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message = message
        self.status = status


class NotFound(HttpError):
    def __init__(self) -> None:
        super().__init__("404 page not found", 404)


def send_json(request, value: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return encode_json(value)


def send_error(request, message: str, status: int = 500) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return (message + "\n").encode("utf-8")
