"""Issue 18, the agent's surfaces: its local API socket and its view of netmaster replies.

Everything real (Redis, netmaster, private OVS, namespaces: :class:`AgentFixture`).
Hostile bodies on ``POST /v1/endpoints`` get a 400 with the API's ``{"error"}`` JSON
naming the field, nothing is plumbed or allocated, and no traceback is logged.  A
netmaster whose reply does not fit its declared shape (put between agent and
netmaster by :class:`TamperingProxy`) is a clear 502 naming netmaster, and the
create is rolled back everywhere, the netmaster's allocation included.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from typing import Any, Dict, List, Optional

import treq
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import HTTPConnectionPool

from tests.test_agt_agent import AgentFixture
from tests.test_agt_plumbing import Netns

FIELDS = ("id", "netns", "network", "ifname", "tenant", "group", "ip", "name", "containerID",
          "labels")


class LogCapture:
    """Every twisted.logger event while a test runs, to assert no traceback was logged."""

    def __init__(self, test: unittest.TestCase):
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def failures(self) -> List[str]:
        return [f"{e.get('log_format')}: {e['log_failure'].getTraceback()}"
                for e in self.events if e.get("log_failure") is not None]


class TamperingProxy(resource.Resource):
    """An HTTP proxy to the real netmaster that can replace the body of chosen replies.

    The request still reaches the netmaster (so it does allocate), only the answer the
    agent sees is malformed: what a buggy or hostile netmaster would send.
    """

    isLeaf = True

    def __init__(self, upstream: str):
        super().__init__()
        self.upstream = upstream.rstrip("/")
        #: path prefix -> body sent instead of the netmaster's
        self.replace: Dict[str, bytes] = {}
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.port: Any = None

    def start(self, test: unittest.TestCase) -> str:
        site = server.Site(self)
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        test.addCleanup(self.port.stopListening)
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def render(self, request: server.Request) -> Any:
        d = defer.ensureDeferred(self._forward(request))
        d.addErrback(lambda f: (request.setResponseCode(502), request.write(
            f.getErrorMessage().encode()), request.finish()))
        return server.NOT_DONE_YET

    async def _forward(self, request: server.Request) -> None:
        body = request.content.read()
        response = await treq.request(
            request.method.decode(), self.upstream + request.uri.decode(),
            data=body or None, headers={b"Content-Type": [b"application/json"]},
            pool=self.pool, timeout=20)
        content = await treq.content(response)
        path = request.path.decode()
        for prefix, fake in self.replace.items():
            if path.startswith(prefix):
                content = fake
                break
        request.setResponseCode(response.code)
        request.write(content)
        request.finish()


#: What a Python repr of a dict, a list of strings or a parser value looks like.
PY_REPR = re.compile(r"\{'[^']*': |\['[^']*'[,\]]|GoNumber\(|JObject\(|Decimal\(|<[a-z_.]+ object")


def assert_no_repr(test: unittest.TestCase, message: str) -> None:
    """No Python repr of a container (``{'a': 1}``) leaks into a message for users."""
    test.assertIsNone(PY_REPR.search(message), message[:300])


def redis_endpoints(fx: AgentFixture) -> Dict[str, Any]:
    out = subprocess.run(["redis-cli", "-s", fx.redis.socket, "HKEYS", "contiv:state:endpoint"],
                         capture_output=True, text=True, check=True).stdout.split()
    return {k: True for k in out}


class HostileAgentInputTests(unittest.TestCase):
    timeout = 180

    async def _setup(self, proxy: bool = False) -> None:
        self.logs = LogCapture(self)
        self.fx = AgentFixture(self)
        self.proxy: Optional[TamperingProxy] = None
        if proxy:
            self.proxy = TamperingProxy(self.fx.netmaster)
            self.fx.netmaster = self.proxy.start(self)
        await self.fx.start()

    async def post_raw(self, raw: bytes, path: str = "/v1/endpoints",
                       method: str = "POST") -> Any:
        response = await self.fx.client._http.request(
            method, "http://netplugin" + path, data=raw,
            headers={b"Content-Type": [b"application/json"]}, timeout=60)
        body = await response.content()
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"],
                         body[:200])
        return response.code, json.loads(body)

    def assert_nothing_left(self) -> None:
        self.assertEqual(self.fx.ports(), ["vxlan0"])
        self.assertFalse({l for l in self.fx.host_links() if l.startswith("cv")})
        self.assertEqual(redis_endpoints(self.fx), {})
        self.assertEqual(self.fx.service.endpoints.pending_deletes(), [])

    def assert_no_traceback(self) -> None:
        self.assertEqual(self.logs.failures(), [])

    async def refused(self, raw: bytes, *expect: str, status: int = 400) -> str:
        code, answer = await self.post_raw(raw)
        self.assertEqual(code, status, f"{raw[:120]!r}: {answer}")
        self.assertEqual(set(answer), {"error"}, raw[:120])
        error = answer["error"]
        for text in expect:
            self.assertIn(text, error, f"{raw[:120]!r}")
        assert_no_repr(self, error)
        return error

    def test_hostile_create_bodies_are_refused_with_nothing_created(self):
        return defer.ensureDeferred(self._hostile_bodies())

    async def _hostile_bodies(self) -> None:
        await self._setup()
        ctr = Netns(self, "c")
        valid = {"id": secrets.token_hex(32), "netns": ctr.path, "network": "agtnet",
                 "ifname": "eth0", "tenant": "default", "group": "", "ip": "", "name": "web",
                 "containerID": "c0ffee", "labels": {"a": "b"}}

        def body(**changes: Any) -> bytes:
            return json.dumps(dict(valid, **changes)).encode()

        # not a JSON object, or not JSON at all
        await self.refused(b"", "empty")
        await self.refused(b"   \n", "empty")
        for raw in (b"[1, 2]", b'"text"', b"5", b"true"):
            await self.refused(raw, "cannot unmarshal", "EndpointRequest")
        await self.refused(b"{not json", "invalid character")
        await self.refused(b'{"id": "x"', "unexpected EOF")
        # wrong types in every field, of every kind
        for name in FIELDS:
            wrong = ([5, 1.5, True, ["x"], {"a": "b"}, "text"] if name == "labels"
                     else [5, 1.5, True, ["x"], {"a": 1}])
            for value in wrong:
                if name == "labels" and value == {"a": "b"}:
                    continue
                await self.refused(body(**{name: value}), f"EndpointRequest.{name}")
        await self.refused(body(labels={"a": 1}), "EndpointRequest.labels of type string")
        # NaN, Infinity and numbers past float64, in any field and at the top level
        for lit in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"):
            raw = body().replace(b'"c0ffee"', lit)
            await self.refused(raw)
            await self.refused(b'{"labels": {"x": ' + lit + b"}}")
        await self.refused(b"NaN", "invalid character 'N'")
        # nesting: deep values where a string is declared; past Go's depth anywhere
        deep = b"[" * 5000 + b"]" * 5000
        await self.refused(body(name="@").replace(b'"@"', deep), "EndpointRequest.name")
        await self.refused(b'{"unknown": ' + b"[" * 20000 + b"]" * 20000 + b"}",
                           "exceeded max depth")
        await self.refused(b"{" + b'"a":{' * 5000 + b"}" * 5001, "id")  # unknown field: no id
        # huge strings: refused by the request's own rules, never echoed whole
        error = await self.refused(body(id="i" * 1_000_000), "'id' must be 1-255")
        self.assertLess(len(error), 1000)
        error = await self.refused(body(ip="1" * 1_000_000), "'ip'")
        await self.refused(body(ifname="e" * 100_000), "'ifname'")
        await self.refused(body(netns="/" + "n" * 100_000), "does not exist")
        # an empty network, an id of the wrong case-insensitive spelling still typed
        await self.refused(body(network=""), "'network'")
        await self.refused(json.dumps({"ID": 7, "netns": ctr.path,
                                       "network": "agtnet"}).encode(), "EndpointRequest.id")

        # routes with odd ids answer in the API's JSON, without a traceback
        for path in ("/v1/endpoints/%ff", "/v1/endpoints/%0d%0a", "/v1/endpoints/" + "x" * 4000):
            for method in ("GET", "DELETE"):
                code, answer = await self.post_raw(b"", path=path, method=method)
                self.assertIn(code, (200, 400, 404), f"{method} {path[:40]}: {answer}")
                self.assertIsInstance(answer, dict)

        self.assert_nothing_left()
        self.assert_no_traceback()
        # and the agent still works: the valid body creates the endpoint
        code, answer = await self.post_raw(body())
        self.assertEqual(code, 200, answer)
        self.assertEqual(answer["labels"], {"a": "b"})

    def test_malformed_netmaster_replies_roll_the_create_back(self):
        return defer.ensureDeferred(self._malformed_replies())

    async def _malformed_replies(self) -> None:
        from contiv_sdn.agent.client import AgentAPIError
        await self._setup(proxy=True)
        assert self.proxy is not None
        wanted = "10.36.1.77"

        async def create(ctr: Netns, ep_id: str) -> Any:
            return await self.fx.client.create_endpoint(ep_id, ctr.path, "agtnet", ip=wanted,
                                                        name="web")

        cases = [
            ("/plugin/createEndpoint", b'{"EndpointConfig": {"id": "%s", "ipAddress": 5}}',
             "netmaster sent a malformed reply to createEndpoint: json: cannot unmarshal "
             "number into Go struct field CfgEndpointState.EndpointConfig.ipAddress of type "
             "string"),
            ("/plugin/createEndpoint", b'{"EndpointConfig": {"id": "%s", "homingHost": {"a": 1}}}',
             "CfgEndpointState.EndpointConfig.homingHost of type string"),
            ("/plugin/createEndpoint", b'{"EndpointConfig": NaN}',
             "malformed reply to createEndpoint: invalid character 'N'"),
            ("/plugin/createEndpoint", b'[' * 20000,
             "malformed reply to createEndpoint"),
            ("/plugin/createEndpoint", b'{"EndpointConfig": {"id": "someone-else"}}',
             "EndpointConfig is for endpoint \"someone-else\""),
            # the allocation succeeded; the network's inspect is what does not fit
            ("/api/v1/inspect/networks/", b'{"Config": {"subnet": ["10.36.1.0/24"]}}',
             "malformed reply to inspect network default:agtnet: json: cannot unmarshal "
             "array into Go struct field Network.Config.subnet of type string"),
            ("/api/v1/inspect/networks/", b'{"Config": {"pktTag": 1e400}}',
             "Network.Config.pktTag of type int"),
        ]
        for prefix, fake, expect in cases:
            ep_id = secrets.token_hex(32)
            self.proxy.replace = {prefix: fake.replace(b"%s", ep_id.encode())}
            with self.assertRaises(AgentAPIError) as ctx:
                await create(Netns(self, "c"), ep_id)
            self.assertEqual(ctx.exception.status, 502, ctx.exception.error)
            self.assertIn(expect, ctx.exception.error)
            assert_no_repr(self, ctx.exception.error)
            self.assert_nothing_left()

        # every one of those allocations was released: the wanted address is free
        self.proxy.replace = {}
        rec = await create(Netns(self, "c"), secrets.token_hex(32))
        self.assertEqual(rec["ipAddress"], wanted)
        self.assert_no_traceback()
