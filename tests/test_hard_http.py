"""Issue 18 item 7: the netmaster's HTTP edges answer like Contiv's Go netmaster.

A real netmaster process on a real redis-server, driven with raw sockets so
that requests no HTTP client library would send (made-up methods, raw
``%0d%0a`` / ``%ff`` paths, 16 KiB headers, lying bodies) reach it as bytes.
Go's answers: anything unrouted is ``404 page not found`` as text; headers
too large are ``431`` (``net/http``'s exact status line and body), then the
connection closes; a malformed request is a plain ``400``; a body over the
limit is ``413`` before it is read; a Redis that does not answer is ``503``
with the store's message.  The log after a hostile batch has no traceback and
at most one line per refused request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import Dict, Iterable, List, Optional, Tuple

from twisted.trial import unittest

from contiv_sdn.api.site import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADERS
from contiv_sdn.testing import RedisServer
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.wait import wait_until

NOT_FOUND = b"404 page not found\n"
TEXT = "text/plain; charset=utf-8"
#: Go net/http's answer to headers over its limit, byte for byte (plus our Content-Length).
GO_431_STATUS = b"HTTP/1.1 431 Request Header Fields Too Large"
GO_431_BODY = b"431 Request Header Fields Too Large"


class Response:
    def __init__(self, raw: bytes):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status_line = lines[0]
        parts = lines[0].split(b" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")

    def __repr__(self) -> str:
        return f"Response({self.raw[:300]!r})"


class HttpEdgeCase(unittest.TestCase):
    def setUp(self) -> None:
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.nm = NetmasterProcess(redis_url=self.redis.url).start()
        self.addCleanup(self.nm.stop)

    # -- raw HTTP -------------------------------------------------------------
    def exchange(self, data: bytes, timeout: float = 30.0) -> Response:
        """Send ``data``, read until the server closes (every request here asks
        for ``Connection: close`` or is refused, so a server that does not
        close fails the test by timeout)."""
        with socket.create_connection(("127.0.0.1", self.nm.port), timeout=timeout) as s:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before we finished sending: read the answer
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
        return Response(out)

    def request(self, method: str, path: str, body: bytes = b"",
                headers: Iterable[bytes] = (), timeout: float = 30.0) -> Response:
        head = (f"{method} {path} HTTP/1.1\r\nHost: netmaster\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n").encode("latin-1")
        for h in headers:
            head += h + b"\r\n"
        return self.exchange(head + b"\r\n" + body, timeout)

    def assertNotFound(self, r: Response, what) -> None:
        self.assertEqual(r.status, 404, (what, r))
        self.assertEqual(r.headers.get("content-type"), TEXT, (what, r))
        self.assertEqual(r.body, NOT_FOUND, (what, r))

    def assertGoRefusal(self, r: Response, status_line: bytes, body: bytes, what) -> None:
        self.assertEqual(r.status_line, status_line, (what, r))
        self.assertEqual(r.headers.get("content-type"), TEXT, (what, r))
        self.assertEqual(r.headers.get("connection"), "close", (what, r))
        self.assertEqual(r.body, body, (what, r))


class UnroutedTests(HttpEdgeCase):
    def test_unrouted_methods_are_404_text(self):
        """Klein answered these with werkzeug's HTML 405; gorilla answers 404."""
        for method, path in [("TRACE", "/"), ("TRACE", "/version"),
                             ("PROPFIND", "/api/v1/networks/"), ("MKCOL", "/api/v1/tenants/x/"),
                             ("CONNECT", "/version"), ("CONNECT", "netmaster:443"),
                             ("FROBNICATE", "/api/v1/tenants/default/"),
                             ("get", "/version"), ("OPTIONS", "/version"),
                             ("PATCH", "/api/v1/tenants/default/"), ("HEAD", "/info")]:
            r = self.request(method, path)
            self.assertEqual(r.status, 404, (method, path, r))
            self.assertEqual(r.headers.get("content-type"), TEXT, (method, path, r))
            if method != "HEAD":
                self.assertEqual(r.body, NOT_FOUND, (method, path, r))
            self.assertNotIn(b"<", r.body)

    def test_unroutable_paths_are_404_text(self):
        """CR/LF (werkzeug's HTML 404), non-UTF-8 (Klein's HTML 400 plus a
        logged traceback), NUL and long paths: all gorilla's plain 404."""
        long_path = "/" + "a" * (MAX_HEADER_BYTES // 2)
        for path in ["/%0d%0a", "/%0d%0aSet-Cookie:%20x", "/api/v1/networks/%0d%0a/",
                     "/api/v1/networks/default:a%0ab/", "/api/v1/inspect/networks/%0d/",
                     "/api/v1/%ff/", "/api/v1/networks/%ff/", "/api/v1/networks/default:%c3%28/",
                     "/%ff%fe", "/%00", "/api/v1/tenants/a%00b/", "/version%00",
                     "/api/v1/networks/%7f/", long_path, "/api/v1/" + "x" * 5000 + "/",
                     "http://netmaster/version"]:
            self.assertNotFound(self.request("GET", path), path)
        # the netmaster still serves the real routes
        r = self.request("GET", "/version")
        self.assertEqual(r.status, 200, r)
        self.assertIn("Version", json.loads(r.body))
        self.assertEqual(self.request("GET", "/api/v1/tenants/default/").status, 200)

    def test_star_target(self):
        """``OPTIONS *`` is Go's empty 200; ``GET *`` is the router's 404 (Twisted: 405)."""
        r = self.request("OPTIONS", "*")
        self.assertEqual((r.status, r.body), (200, b""), r)
        for method in ("GET", "POST", "TRACE"):
            self.assertNotFound(self.request(method, "*"), method + " *")

    def test_percent_decoded_unicode_key_still_routes(self):
        """Refusing undecodable paths does not refuse valid UTF-8 keys."""
        r = self.request("GET", "/api/v1/networks/default:%c3%a9t%c3%a9/")
        self.assertEqual((r.status, r.body), (500, b"network not found\n"), r)


class LimitTests(HttpEdgeCase):
    def test_one_16k_header_is_431_then_close(self):
        """Twisted's LineReceiver dropped the connection without a word."""
        r = self.request("GET", "/version", headers=[b"X-Big: " + b"a" * 16384])
        self.assertGoRefusal(r, GO_431_STATUS, GO_431_BODY, "16 KiB header")

    def test_headers_over_total_size_are_431(self):
        """Many medium headers: each line fits, their sum does not (Twisted: bare 400)."""
        hdrs = [b"X-H%d: %s" % (i, b"b" * 1000) for i in range(MAX_HEADER_BYTES // 1000 + 2)]
        r = self.request("GET", "/version", headers=hdrs)
        self.assertGoRefusal(r, GO_431_STATUS, GO_431_BODY, "total size")

    def test_too_many_headers_are_431(self):
        r = self.request("GET", "/version", headers=[b"X-%d: a" % i for i in range(MAX_HEADERS + 1)])
        self.assertGoRefusal(r, GO_431_STATUS, GO_431_BODY, "header count")
        # at the limit is fine (3 headers of our own + the rest)
        r = self.request("GET", "/version", headers=[b"X-%d: a" % i for i in range(MAX_HEADERS - 3)])
        self.assertEqual(r.status, 200, r)

    def test_overlong_request_line_is_431(self):
        r = self.request("GET", "/" + "a" * (MAX_HEADER_BYTES + 10))
        self.assertGoRefusal(r, GO_431_STATUS, GO_431_BODY, "request line")
        # without a line end at all (the line never completes)
        r = self.exchange(b"GET /" + b"a" * (MAX_HEADER_BYTES * 2))
        self.assertGoRefusal(r, GO_431_STATUS, GO_431_BODY, "unterminated line")

    def test_malformed_requests_are_plain_400(self):
        for raw in [b"\x00\x01\x02 garbage\r\n\r\n",
                    b"GET /version HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                    b"GET /version HTTP/1.1\r\nno colon here\r\n\r\n",
                    b"GET /version HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                    b"POST /version HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]:
            r = self.exchange(raw)
            self.assertGoRefusal(r, b"HTTP/1.1 400 Bad Request", b"400 Bad Request", raw)

    def test_declared_oversized_body_is_413_before_it_is_sent(self):
        """The answer comes after the headers alone: the body is never read."""
        with socket.create_connection(("127.0.0.1", self.nm.port), timeout=30) as s:
            s.sendall(b"POST /api/v1/tenants/big/ HTTP/1.1\r\nHost: n\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        r = Response(out)
        self.assertEqual(r.status_line, b"HTTP/1.1 413 Request Entity Too Large", r)
        self.assertEqual(r.headers.get("content-type"), TEXT, r)
        self.assertIn(b"request body too large", r.body)
        self.assertIn(str(MAX_BODY_BYTES).encode(), r.body)
        self.assertEqual(self.request("GET", "/api/v1/tenants/big/").body,
                         b"tenant not found\n")

    def test_chunked_oversized_body_is_413(self):
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        n = MAX_BODY_BYTES // 65536 + 2
        r = self.exchange(b"POST /api/v1/tenants/big/ HTTP/1.1\r\nHost: n\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + chunk * n + b"0\r\n\r\n")
        self.assertEqual(r.status_line, b"HTTP/1.1 413 Request Entity Too Large", r)
        self.assertEqual(self.request("GET", "/api/v1/tenants/big/").body,
                         b"tenant not found\n")

    def test_body_under_the_limit_is_served(self):
        """The limit leaves room: a valid object padded to near 1 MiB is created."""
        doc = json.dumps({"tenantName": "big"}).encode()
        body = doc[:-1] + b" " * (MAX_BODY_BYTES - len(doc)) + b"}"
        self.assertEqual(len(body), MAX_BODY_BYTES)
        r = self.request("POST", "/api/v1/tenants/big/", body,
                         headers=[b"Content-Type: application/json"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["tenantName"], "big")


class StoreUnavailableTests(HttpEdgeCase):
    def test_redis_not_answering_is_503_with_the_store_text(self):
        """A stopped (SIGSTOP) redis-server: reads, model writes and /plugin
        calls each answer 503 with the store's message; after SIGCONT, 200."""
        pid = self.redis.proc.pid
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(self._cont, pid)
        json_ct = [b"Content-Type: application/json"]
        for method, path, body, hdrs in [
                ("GET", "/api/v1/networks/", b"", []),
                ("GET", "/api/v1/tenants/default/", b"", []),
                ("POST", "/api/v1/tenants/t503/", b'{"tenantName":"t503"}', json_ct),
                ("POST", "/plugin/allocAddress",
                 b'{"AddressPool":"","NetworkID":"net.default","PreferredIPv4Address":""}',
                 json_ct)]:
            r = self.request(method, path, body, hdrs, timeout=60)
            self.assertEqual(r.status, 503, (method, path, r))
            self.assertEqual(r.headers.get("content-type"), TEXT, (method, path, r))
            self.assertIn(b"state store", r.body, (method, path, r))
            self.assertIn(b"retry", r.body, (method, path, r))
            self.assertTrue(r.body.endswith(b"\n"), r)
        self._cont(pid)
        # the store reconnects on its own; wait for it, bounded
        last: list = []

        def answered() -> bool:
            last[:] = [self.request("GET", "/api/v1/tenants/default/")]
            return last[0].status == 200
        wait_until(answered, "the API to answer again once Redis continued", timeout=30,
                   detail=lambda: repr(last))
        self.assertNotIn("Traceback", self.nm.log_text())

    @staticmethod
    def _cont(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


class RefusalLogTests(HttpEdgeCase):
    MARKER = "default:zz-end-of-hostile-batch"

    def hostile_batch(self) -> List[Tuple[str, Optional[Response]]]:
        """Refused requests of every kind; returns (label, response) per request."""
        json_ct = [b"Content-Type: application/json"]
        deep = b"[" * 5000 + b"]" * 5000
        out: List[Tuple[str, Optional[Response]]] = []

        def req(label, method, path, body=b"", headers=()):
            out.append((label, self.request(method, path, body, headers)))

        def raw(label, data):
            out.append((label, self.exchange(data)))

        for m in ("TRACE", "PROPFIND", "CONNECT", "XYZZY"):
            req("method " + m, m, "/api/v1/networks/")
        for p in ("/%0d%0a", "/api/v1/%ff/", "/%00", "/" + "a" * 8000):
            req("path", "GET", p)
        req("16k header", "GET", "/version", headers=[b"X-Big: " + b"a" * 16384])
        req("many headers", "GET", "/version", headers=[b"X-%d: a" % i for i in range(600)])
        raw("garbage", b"\x00\x01\x02 garbage\r\n\r\n")
        raw("413", b"POST /api/v1/tenants/x/ HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        for body in (b"{bad", b"", b"[]", b'{"tenantName":5}', b'{"tenantName":"x","defaultNetwork":[1]}',
                     b'{"tenantName":NaN}', deep, b'{"tenantName":1e400}'):
            req("model body", "POST", "/api/v1/tenants/x/", body)
        req("key mismatch", "POST", "/api/v1/networks/default:n1/",
            b'{"tenantName":"default","networkName":"other","subnet":"10.9.0.0/24"}')
        req("unknown object", "GET", "/api/v1/networks/default:nope/")
        req("unknown inspect", "GET", "/api/v1/inspect/endpointGroups/default:nope/")
        req("unknown delete", "DELETE", "/api/v1/tenants/nope/")
        req("unknown service", "GET", "/service/nope")
        req("epcleanup category", "DELETE", "/debug/epcleanup/tenant/default/bogus/x")
        for name, body in [("allocAddress", b'{"AddressPool":5}'),
                           ("releaseAddress", b'{"NetworkID":5}'),
                           ("deleteEndpoint", b'{"EndpointID":[1]}'),
                           ("createEndpoint", b'{"EndpointID":NaN}'),
                           ("createEndpoint", deep),
                           ("allocAddress", b'{"AddressPool":"","NetworkID":"nope.default"}')]:
            req("plugin " + name, "POST", "/plugin/" + name, body, json_ct)
        # clients that hang up before the answer (Klein cancelled the handler
        # mid-write: a CancelledError traceback each, and maybe half a change)
        for i in range(5):
            body = json.dumps({"tenantName": f"hangup{i}"}).encode()
            with socket.create_connection(("127.0.0.1", self.nm.port), timeout=10) as s:
                s.sendall(b"POST /api/v1/tenants/hangup%d/ HTTP/1.1\r\nContent-Length: %d\r\n"
                          b"\r\n%s" % (i, len(body), body))
            out.append(("hang-up", None))
        return out

    def test_hostile_batch_logs_no_traceback_and_one_line_per_refusal_at_most(self):
        before = len(self.nm.log_text())
        batch = self.hostile_batch()
        for label, r in batch:
            if r is None:
                continue
            self.assertIn(r.status, (400, 404, 413, 431, 500), (label, r))
            self.assertEqual(r.headers.get("content-type"), TEXT, (label, r))
            self.assertNotIn(b"<html", r.body.lower(), (label, r))
            self.assertNotIn(b"Traceback", r.body, (label, r))
            self.assertNotIn(b"internal error", r.body, (label, r))
        # a last refusal whose line marks the end of the batch in the log
        r = self.request("GET", f"/api/v1/networks/{self.MARKER}/")
        self.assertEqual(r.body, b"network not found\n")
        wait_until(lambda: self.MARKER in self.nm.log_text()[before:],
                   "the marker request in the netmaster's log", timeout=10, interval=0.05)
        log = self.nm.log_text()[before:]
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled", log)
        lines = [ln for ln in log.splitlines() if ln.strip()]
        self.assertLessEqual(len(lines), len(batch) + 1, "\n".join(lines))
        for ln in lines:
            self.assertLess(len(ln), 600, ln)
            self.assertNotIn("\r", ln)
        # the hung-up writes ran to completion, and the netmaster still works
        for i in range(5):  # a POST may still be committing: wait for it, bounded
            wait_until(lambda: self.request("GET", f"/api/v1/tenants/hangup{i}/").status == 200,
                       f"tenant hangup{i} written by the hung-up request", timeout=10, interval=0.05)
        self.assertEqual(self.request("GET", "/version").status, 200)
