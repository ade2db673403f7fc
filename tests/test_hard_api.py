"""Hostile input on the netmaster's REST surface: the reproducers of the
hardening issue, and a bounded property-based fuzz (hypothesis) of ``/plugin/*``
and the model routes against a real netmaster on a real redis-server.

What must hold whatever is sent: a refusal in Contiv's style (a 500 with a
clear text, never ``internal error``, never a Python repr), no traceback in the
netmaster's log, and a store whose records, indexes and allocations agree.
"""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import quote
from typing import Any, List, Optional, Tuple

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import threads
from twisted.trial import unittest

from contiv_sdn.store import Store
from contiv_sdn.store.consistency import check
from contiv_sdn.testing import RedisServer
from contiv_sdn.testing.netmaster import NetmasterProcess
from tests.test_fnd_helpers import Client, async_test

#: Python reprs that must never reach a client: dicts, lists, None/True as text, floats' nan.
_REPR = re.compile(r"\{'|\['[^']*'[,\]]|\[\d|\bNone\b|\bnan\b|\binf\b|Traceback|File \"")

PLUGIN_FIELDS = {
    "allocAddress": ["NetworkID", "AddressPool", "PreferredIPv4Address"],
    "releaseAddress": ["NetworkID", "IPv4Address"],
    "createEndpoint": ["TenantName", "NetworkName", "ServiceName", "EndpointID", "EPCommonName",
                       "ContainerID", "ConfigEP"],
    "deleteEndpoint": ["TenantName", "NetworkName", "ServiceName", "EndpointID", "IPv4Address"],
    "updateEndpoint": ["IPAddress", "ContainerID", "Labels", "Tenant", "Network", "Event",
                       "EndpointID", "EPCommonName"],
}
CONFIG_EP_FIELDS = ["Container", "Host", "IPAddress", "IPv6Address", "ServiceName", "IntfName",
                    "VtepIP", "ContainerID", "Labels"]
MODEL_FIELDS = {
    "tenants": ("{n}", ["tenantName", "defaultNetwork"]),
    "networks": ("default:{n}", ["tenantName", "networkName", "encap", "subnet", "gateway",
                                 "pktTag", "nwType", "ipv6Subnet", "cfgdTag"]),
    "endpointGroups": ("default:{n}", ["tenantName", "groupName", "networkName", "policies",
                                       "ipPool", "netProfile", "extContractsGrps", "cfgdTag"]),
    "policys": ("default:{n}", ["tenantName", "policyName"]),
    "rules": ("default:p1:{n}", ["tenantName", "policyName", "ruleId", "priority", "direction",
                                 "action", "protocol", "port", "fromEndpointGroup",
                                 "toEndpointGroup", "fromIpAddress", "toNetwork"]),
    "serviceLBs": ("default:{n}", ["tenantName", "serviceName", "networkName", "ipAddress",
                                   "selectors", "ports"]),
    "netprofiles": ("default:{n}", ["tenantName", "profileName", "bandwidth", "DSCP", "burst"]),
}

# Plausible values make the fuzz reach past the first refusal into the semantics.
_PLAUSIBLE = st.sampled_from([
    "default", "rz", "web", "rz.default", "rz:web.default", "10.77.0.0/24", "10.77.0.5",
    "10.77.0.9/24", "10.77.0.0/24:default", "start", "die", "node1", "eth1", "ep1", "ep2",
    "vxlan", "vlan", "in", "out", "allow", "deny", "tcp", "10.77.0.10-10.77.0.20", "", "p1",
    "fd00::/120", "fd00::5",
])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | _PLAUSIBLE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _case_variants(name: str) -> st.SearchStrategy:
    return st.sampled_from([name, name, name.lower(), name.upper()])


def _object(fields: List[str], nested: Optional[dict] = None) -> st.SearchStrategy:
    """A JSON object over (case variants of) ``fields``; values plausible or hostile."""
    def value_for(field: str) -> st.SearchStrategy:
        if nested and field in nested:
            return nested[field] | _JSON
        return _PLAUSIBLE | _PLAUSIBLE | _JSON
    pairs = st.lists(st.sampled_from(fields).flatmap(
        lambda f: st.tuples(_case_variants(f), value_for(f))), max_size=len(fields) + 2)
    return pairs.map(dict)


_CONFIG_EP = _object(CONFIG_EP_FIELDS)


def _body(value: Any) -> st.SearchStrategy:
    """Serialize, sometimes damaged: NaN/Infinity literals, truncation, deep nesting."""
    text = json.dumps(value, allow_nan=True)
    return st.sampled_from([
        text, text, text, text[: len(text) // 2], "[" * 3000 + "]" * 3000,
        text.replace("0", "NaN", 1), text.replace("1", "1e400", 1), "null", "5",
    ])


#: Valid requests, which the fuzz mutates one field at a time so that it reaches the
#: semantics and the store (endpoint ids from a small set, so deletes hit creates).
_EP_ID = st.sampled_from(["ep1", "ep2", "ep3", "ep4"])
_VALID = {
    "allocAddress": st.fixed_dictionaries({"NetworkID": st.sampled_from(
        ["rz.default", "rz:web.default"]), "PreferredIPv4Address": st.sampled_from(
        ["", "10.77.0.30", "10.77.0.31/24"])}),
    "releaseAddress": st.fixed_dictionaries({"NetworkID": st.just("rz.default"),
                                             "IPv4Address": st.sampled_from(
                                                 ["10.77.0.30", "10.77.0.2", "10.77.0.3/24"])}),
    "createEndpoint": st.fixed_dictionaries({
        "TenantName": st.just("default"), "NetworkName": st.just("rz"),
        "ServiceName": st.sampled_from(["", "web"]), "EndpointID": _EP_ID,
        "ConfigEP": st.fixed_dictionaries({"Host": st.just("node1"), "IPAddress": st.sampled_from(
            ["", "10.77.0.30", "10.77.0.40"]), "Labels": st.just({"app": "x"})})}),
    "deleteEndpoint": st.fixed_dictionaries({"EndpointID": _EP_ID}),
    "updateEndpoint": st.fixed_dictionaries({"EndpointID": _EP_ID, "Event": st.just("start"),
                                             "Labels": st.just({"k": "v"})}),
}


def _mutated(call: str) -> st.SearchStrategy:
    def mutate(args):
        body, field, value, keep = args
        if not keep:
            body = dict(body)
            body[field] = value
        return body
    return st.tuples(_VALID[call], st.sampled_from(PLUGIN_FIELDS[call]), _JSON,
                     st.booleans()).map(mutate)


PLUGIN_CASES = st.sampled_from(sorted(PLUGIN_FIELDS)).flatmap(
    lambda call: st.tuples(st.just("POST"), st.just("/plugin/" + call),
                           (_mutated(call) | _object(PLUGIN_FIELDS[call],
                                                     {"ConfigEP": _CONFIG_EP})).flatmap(_body)))
MODEL_CASES = st.sampled_from(sorted(MODEL_FIELDS)).flatmap(
    lambda coll: st.tuples(
        st.sampled_from(["POST", "PUT", "DELETE", "GET"]),
        st.sampled_from(["a1", "rz", "web", "p1", "1"]).map(
            lambda n: f"/api/v1/{coll}/{MODEL_FIELDS[coll][0].format(n=n)}/"),
        _object(MODEL_FIELDS[coll][1]).flatmap(_body)))


class HostileNetmaster(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.nm = NetmasterProcess(redis_url=self.redis.url).start()
        self.addCleanup(self.nm.stop)
        self.c = Client(self.nm.url)
        self.addCleanup(self.c.close)

    async def setup_network(self) -> Store:
        await self.c.ok("POST", "/api/v1/networks/default:rz/", {
            "tenantName": "default", "networkName": "rz", "encap": "vxlan",
            "subnet": "10.77.0.0/24", "gateway": "10.77.0.1"})
        await self.c.ok("POST", "/api/v1/endpointGroups/default:web/", {
            "tenantName": "default", "groupName": "web", "networkName": "rz"})
        store = await Store.connect(self.redis.url)
        self.addCleanup(store.close)
        return store

    async def refused(self, path: str, body: Any = None, raw: Optional[bytes] = None) -> str:
        code, content, _ = await self.c.request("POST", path, body, raw=raw)
        text = content.decode("utf-8", "replace")
        self.assertEqual(code, 500, (path, text))
        self.assertNotIn("internal error", text, path)
        self.assertIsNone(_REPR.search(text), (path, text))
        return text

    async def assert_sound(self, store: Store, reserved=()) -> None:
        found = await check(store, reserved)
        self.assertEqual(found, [])
        self.assertNotIn("Traceback", self.nm.log_text())

    # -- the reproducers ------------------------------------------------------
    @async_test
    async def test_wrong_types_in_create_endpoint_store_nothing(self):
        store = await self.setup_network()
        rev = await store.revision()
        base = {"TenantName": "default", "NetworkName": "rz", "EndpointID": "p1"}
        for cfg in ({"Host": {"a": 1}, "VtepIP": "1.2.3.4"}, {"IntfName": ["x"]},
                    {"Labels": {"a": 1}}, {"IPAddress": 5}):
            text = await self.refused("/plugin/createEndpoint", {**base, "ConfigEP": cfg})
            self.assertTrue(text.startswith("json: cannot unmarshal"), text)
            self.assertIn("Go struct field ConfigEP.ConfigEP.", text)
        for raw in (b'{"TenantName":"default","NetworkName":"rz","EndpointID":NaN}',
                    b'{"TenantName":"default","NetworkName":"rz","EndpointID":1e400}',
                    b'{"TenantName":"default","NetworkName":"rz","EndpointID":12}',
                    b'{"TenantName":"default","NetworkName":"rz","EndpointID":1.5}',
                    b'{"TenantName":"default","NetworkName":"rz","EndpointID":"p1",'
                    b'"ContainerID":NaN}'):
            await self.refused("/plugin/createEndpoint", raw=raw)
        for bad_id in ("a/b", "x\ny", "", "e" * 513):
            text = await self.refused("/plugin/createEndpoint", {**base, "EndpointID": bad_id})
            self.assertEqual(text, "invalid endpoint id\n")
        self.assertEqual(await store.revision(), rev, "a refused request wrote something")
        self.assertEqual(await store.list("endpoint"), {})
        # inspect keeps answering (a stored NaN used to break it for the whole tenant)
        await self.c.ok("GET", "/api/v1/inspect/networks/default:rz/")
        await self.c.ok("GET", "/api/v1/inspect/tenants/default/")
        await self.assert_sound(store)

    @async_test
    async def test_plugin_type_errors_are_clear_refusals(self):
        store = await self.setup_network()
        cases = [
            ("/plugin/allocAddress", {"AddressPool": 5},
             "json: cannot unmarshal number into Go struct field "
             "AddressAllocRequest.AddressPool of type string\n"),
            ("/plugin/releaseAddress", {"NetworkID": 5},
             "json: cannot unmarshal number into Go struct field "
             "AddressReleaseRequest.NetworkID of type string\n"),
            ("/plugin/deleteEndpoint", {"EndpointID": [1]},
             "json: cannot unmarshal array into Go struct field "
             "DeleteEndpointRequest.EndpointID of type string\n"),
            ("/plugin/allocAddress", {"NetworkID": {"a": 1}},
             "json: cannot unmarshal object into Go struct field "
             "AddressAllocRequest.NetworkID of type string\n"),
            ("/plugin/updateEndpoint", [], "json: cannot unmarshal array into Go value of type "
                                           "UpdateEndpointRequest\n"),
        ]
        for path, body, want in cases:
            self.assertEqual(await self.refused(path, body), want)
        deep = b'{"NetworkID":' + b"[" * 5000 + b"]" * 5000 + b"}"
        await self.refused("/plugin/allocAddress", raw=deep)
        await self.refused("/plugin/allocAddress", raw=b"[" * 20000)
        text = await self.refused("/plugin/allocAddress", {"NetworkID": "nosuch.default"})
        self.assertEqual(text, "network not found\n")
        await self.assert_sound(store)

    # -- the fuzz -------------------------------------------------------------
    def _fuzz(self, port: int, cases: st.SearchStrategy, n: int, seen: list,
              reserved: list) -> None:
        """Runs in a thread: hypothesis drives blocking HTTP at the netmaster process,
        so a failing case is shrunk to a minimal body before it is reported."""
        conn = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)]

        def send(method: str, path: str, body: str) -> Tuple[int, str]:
            for attempt in (0, 1):
                try:
                    conn[0].request(method, path, body=body.encode("utf-8", "surrogatepass"),
                                    headers={"Content-Type": "application/json"})
                    resp = conn[0].getresponse()
                    return resp.status, resp.read().decode("utf-8", "replace")
                except (http.client.HTTPException, ConnectionError):
                    conn[0].close()
                    conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    if attempt:
                        raise
            raise AssertionError("unreachable")

        @settings(max_examples=n, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(cases)
        def one(case: Tuple[str, str, str]) -> None:
            method, path, body = case
            status, text = send(method, path, body)
            seen.append((path.split('/')[-2 if path.endswith('/') else -1], status))
            assert status in (200, 404, 500), (case, status, text)
            assert "internal error" not in text, (case, text)
            assert _REPR.search(text) is None, (case, text)
            if status == 200 and path == "/plugin/allocAddress":
                got = json.loads(text)
                reserved.append(got)

        try:
            one()
        finally:
            conn[0].close()

    @async_test
    async def test_fuzz_plugin_and_model_routes(self):
        store = await self.setup_network()
        seen: List[Tuple[str, int]] = []
        allocated: List[dict] = []
        await threads.deferToThread(self._fuzz, self.nm.port, PLUGIN_CASES, 1500, seen, allocated)
        await threads.deferToThread(self._fuzz, self.nm.port, MODEL_CASES, 1000, seen, allocated)
        # the fuzz must have reached the semantics, not only the decoder
        statuses = [code for _, code in seen]
        self.assertGreater(statuses.count(500), 500)
        for call in ("allocAddress", "createEndpoint", "deleteEndpoint", "releaseAddress"):
            self.assertGreater(seen.count((call, 200)), 5, call)
        # every endpoint, network and group inspect still answers
        for ep in (await store.list("endpoint")):
            await self.c.ok("GET", f"/api/v1/inspect/endpoints/{quote(ep, safe='')}/")
        for coll, kind in (("networks", "obj:network"), ("endpointGroups", "obj:endpointGroup"),
                           ("tenants", "obj:tenant")):
            for key in await store.list(kind):
                await self.c.ok("GET", f"/api/v1/inspect/{coll}/{key}/")
        reserved = []
        for a in allocated:
            net = await self._net_of(store, a["NetworkID"])
            if net:
                reserved.append((net, a["IPv4Address"].split("/")[0]))
        await self.assert_sound(store, reserved)
        log = self.nm.log_text()
        # refusals are logged briefly, not per-request tracebacks (2.5 MB per 12k before)
        self.assertLess(len(log), 400 * len(seen), "the log grows with refusals")

    async def _net_of(self, store: Store, network_id: str) -> Optional[str]:
        """``net.tenant`` / ``net:grp.tenant`` / empty (pool-addressed) → network key."""
        nets = await store.list("network")
        if not network_id:
            return next(iter(nets), None)
        part = network_id.split(":")[0]
        for key in nets:
            tenant, name = key.split(":", 1)
            if part in (f"{name}.{tenant}", name) or network_id.startswith(f"{name}:"):
                return key
        return None
