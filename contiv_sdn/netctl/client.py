"""The netmaster REST client behind netctl (stdlib HTTP, synchronous).

netctl is a short-lived CLI, so a blocking ``urllib`` request is the right
tool here; nothing in this module runs inside a reactor. Failures are sorted
the way netctl reports them: the netmaster could not be reached
(RequestError, exit 2), or it answered with an error (ResponseError, exit 3,
carrying the server's message verbatim, as Contiv's Go client did: the body
of a 500, "Page not found!" for 404, "Access denied!" for 403, the status
line otherwise; a 404 on DELETE counts as success).

Several netmasters (``--netmaster URL1,URL2``): every netmaster answers every
request (the state is in Redis), so a request that cannot reach one (refused,
timed out, DNS) or is answered 503 (that netmaster cannot reach Redis now) is
sent to the next; the one that answered is tried first for the next request.
Every request netctl makes is safe to repeat (object writes are create-or-
replace by key, deletes of a missing object succeed).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from contiv_sdn.model.gojson import marshal
from contiv_sdn.netctl.wire import encode_object

API = "/api/v1/"
LOGIN_PATH = "/api/v1/auth_proxy/login/"
DEFAULT_TIMEOUT = 120.0


class ClientError(Exception):
    """Base of the errors netctl turns into an exit code."""

    exit_code = 3


class RequestError(ClientError):
    """The request did not get an HTTP answer (refused, DNS, timeout...)."""

    exit_code = 2


class ResponseError(ClientError):
    """The netmaster answered, but not with success; str() is its message."""

    exit_code = 3


class Response:
    """A raw answer, for the callers that look at the status themselves."""

    def __init__(self, status: int, reason: str, body: bytes):
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}".strip()


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_urls(value: str) -> list[str]:
    """``URL1,URL2`` -> the URLs, without trailing slashes (one URL: a list of one)."""
    urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    return urls or [value.rstrip("/")]


class ContivClient:
    """Talks to a netmaster (or auth_proxy) base URL, or to the first of several that answers."""

    def __init__(self, base_url: str, insecure: bool = False, token: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.base_urls = split_urls(base_url)
        self._current = 0
        self.token = token
        self.timeout = timeout
        self._openers = {u: self._opener_for(u, insecure) for u in self.base_urls}

    @staticmethod
    def _opener_for(base_url: str, insecure: bool) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = []
        host = urllib.parse.urlsplit(base_url).hostname or ""
        if _is_loopback(host):
            # Go's ProxyFromEnvironment never proxies loopback; urllib would.
            handlers.append(urllib.request.ProxyHandler({}))
        if insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=context))
        return urllib.request.build_opener(*handlers)

    @property
    def base_url(self) -> str:
        """The netmaster that answered last (the first one before any request)."""
        return self.base_urls[self._current]

    @property
    def is_https(self) -> bool:
        return all(u.startswith("https://") for u in self.base_urls)

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- raw HTTP ---------------------------------------------------------
    def request(self, method: str, path: str, body: Optional[bytes] = None,
                auth: bool = True) -> Response:
        """Send one request and return the answer, whatever its status; with several
        netmasters, the next one is tried when one cannot be reached or answers 503."""
        n = len(self.base_urls)
        failures: list[str] = []
        resp: Optional[Response] = None
        for i in range(n):
            index = (self._current + i) % n
            base = self.base_urls[index]
            try:
                resp = self._request_one(base, method, path, body, auth)
            except RequestError as exc:
                failures.append(str(exc))
                continue
            if resp.status == 503 and i < n - 1:
                failures.append(f"{base}: {resp.status_line}")
                continue
            self._current = index
            return resp
        if resp is not None:
            return resp
        if n == 1:
            raise RequestError(failures[0])
        raise RequestError("Unable to reach any netmaster: " + "; ".join(
            f.split(". Set its URL")[0] for f in failures) + ". Set their URLs with --netmaster "
            "URL1,URL2 (before the command) or the NETMASTER environment variable.")

    def _request_one(self, base: str, method: str, path: str, body: Optional[bytes],
                     auth: bool) -> Response:
        url = base + path
        req = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if auth and self.token is not None:
            req.add_header("X-Auth-Token", self.token)
        try:
            with self._openers[base].open(req, timeout=self.timeout) as resp:
                return Response(resp.status, resp.reason or "", resp.read())
        except urllib.error.HTTPError as exc:
            try:
                data = exc.read()
            except (OSError, http.client.HTTPException):
                data = b""
            return Response(exc.code, str(exc.reason or ""), data)
        except urllib.error.URLError as exc:
            raise RequestError(self._unreachable(exc.reason, base)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise RequestError(self._unreachable(exc, base)) from None

    def _unreachable(self, reason: Any, base: Optional[str] = None) -> str:
        base = base or self.base_url
        if isinstance(reason, ssl.SSLCertVerificationError):
            return (f"Unable to verify the TLS certificate of {base}: "
                    f"{reason.verify_message or reason}. Use --insecure to skip the check.")
        if isinstance(reason, ssl.SSLError):
            why = f"TLS error ({reason.reason or reason})"
        elif isinstance(reason, socket.timeout) or isinstance(reason, TimeoutError):
            why = "timed out"
        elif isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, socket.gaierror):
            why = f"cannot resolve host ({reason.strerror or reason})"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror.lower()
        else:
            why = str(reason) or reason.__class__.__name__
        return (f"Unable to reach the netmaster at {base}: {why}. "
                "Set its URL with --netmaster URL (before the command) "
                "or the NETMASTER environment variable.")

    def _check(self, method: str, resp: Response) -> None:
        if resp.status == 200:
            return
        if resp.status == 404:
            if method == "DELETE":
                return
            raise ResponseError("Page not found!")
        if resp.status == 403:
            raise ResponseError("Access denied!")
        if resp.status == 401:
            # Contiv's client printed the status line only; the netmaster's text says
            # what to do (log in again).
            text = resp.body.decode("utf-8", "replace").strip()
            raise ResponseError(text or f"{resp.status_line}: log in with `netctl "
                                        f"--netmaster {self.base_url} login`")
        if resp.status == 500:
            raise ResponseError(resp.body.decode("utf-8", "replace"))
        raise ResponseError(resp.status_line)

    def _json(self, resp: Response) -> Any:
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ResponseError(f"invalid JSON from the netmaster: {exc}") from None

    # -- the contivmodel client operations --------------------------------
    def get(self, path: str) -> Any:
        resp = self.request("GET", path)
        self._check("GET", resp)
        return self._json(resp)

    def post(self, path: str, body: Any) -> None:
        resp = self.request("POST", path, marshal(body).encode("utf-8"))
        self._check("POST", resp)

    def delete(self, path: str) -> None:
        resp = self.request("DELETE", path)
        self._check("DELETE", resp)

    def list(self, collection: str) -> list[Any]:
        """GET the collection; a JSON null reads as an empty list (as in Go)."""
        value = self.get(f"{API}{collection}/")
        if value is None:
            return []
        if not isinstance(value, list):
            raise ResponseError(f"json: cannot unmarshal {type(value).__name__} into a list "
                                f"of {collection}")
        return value

    def get_object(self, collection: str, key: str) -> Any:
        return self.get(f"{API}{collection}/{key}/")

    def inspect(self, collection: str, key: str) -> Any:
        return self.get(f"{API}inspect/{collection}/{key}/")

    def post_object(self, collection: str, key: str, values: dict[str, Any]) -> None:
        self.post(f"{API}{collection}/{key}/", encode_object(collection, values))

    def delete_object(self, collection: str, key: str) -> None:
        self.delete(f"{API}{collection}/{key}/")

    def login(self, username: str, password: str) -> Response:
        body = json.dumps({"username": username, "password": password}).encode("utf-8")
        return self.request("POST", LOGIN_PATH, body, auth=False)
