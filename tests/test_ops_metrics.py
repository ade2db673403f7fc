"""Prometheus metrics of both daemons, scraped from their ``--metrics-listen`` port.

The netmaster runs as a real ``twistd netmaster`` process on a real Redis, with a
simulated switch (a real OpenFlow connection) for the controller's figures; the
agent runs in-process on real OVS in a namespace (as in test_agt_agent).  Each
test reads the figures before and after a known sequence of operations and
checks that exactly the right series moved by exactly the right amount; the
text is parsed by ``prometheus_client.parser``.
"""

from __future__ import annotations

import secrets
from typing import Any, Dict, FrozenSet, Tuple

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial import unittest

from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.wait import wait_for

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def scrape(port: int) -> Samples:
    r = await treq.get(f"http://127.0.0.1:{port}/metrics", timeout=10, persistent=False)
    body = await treq.text_content(r)
    if r.code != 200:
        raise AssertionError(f"/metrics answered {r.code}: {body[:300]}")
    return parse(body)


class NetmasterMetricsTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        require_binary("redis-server")
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.mport = free_tcp_port()
        self.ofp = free_tcp_port()
        self.nm = NetmasterProcess(
            redis_url=self.redis.url, ofp_listen=f"tcp:{self.ofp}:interface=127.0.0.1",
            extra_args=["--metrics-listen", f"127.0.0.1:{self.mport}"])
        self.addCleanup(self.nm.stop)
        self.nm.start()

    async def rest(self, method: str, path: str, body: Any = None) -> Tuple[int, bytes]:
        kw: Dict[str, Any] = {"timeout": 30, "persistent": False}
        if body is not None:
            import json
            kw["data"] = json.dumps(body).encode()
            kw["headers"] = {b"Content-Type": [b"application/json"]}
        r = await treq.request(method, self.nm.url + path, **kw)
        return r.code, await treq.content(r)

    @defer.inlineCallbacks
    def test_rest_redis_and_objects_per_tenant(self):
        yield defer.ensureDeferred(self._rest_redis_objects())

    async def _rest_redis_objects(self) -> None:
        code, _ = await self.rest("POST", "/api/v1/tenants/opsa/", {"tenantName": "opsa"})
        self.assertEqual(code, 200)
        before = await scrape(self.mport)
        self.assertEqual(value(before, "contiv_networks", tenant="opsa"), 0)
        route = "/api/v1/networks/{key}/"
        for i in range(3):
            code, text = await self.rest("POST", f"/api/v1/networks/opsa:n{i}/", {
                "tenantName": "opsa", "networkName": f"n{i}", "encap": "vxlan",
                "subnet": f"10.77.{i}.0/24"})
            self.assertEqual(code, 200, text)
        code, _ = await self.rest("GET", "/api/v1/networks/opsa:nonesuch/")
        self.assertNotEqual(code, 200)
        code, _ = await self.rest("GET", "/no/such/route")
        self.assertEqual(code, 404)
        after = await scrape(self.mport)

        # objects per tenant: 3 networks in opsa, none elsewhere changed
        self.assertEqual(value(after, "contiv_networks", tenant="opsa"), 3)
        self.assertEqual(value(after, "contiv_networks", tenant="default"),
                         value(before, "contiv_networks", tenant="default"))
        # requests by route/method/code, and their latency histogram
        moved = lambda name, **kw: value(after, name, **kw) - value(before, name, **kw)
        self.assertEqual(moved("contiv_http_requests_total", route=route, method="POST",
                               code="200"), 3)
        self.assertEqual(moved("contiv_http_request_duration_seconds_count", route=route,
                               method="POST"), 3)
        failed_get = total(after, "contiv_http_requests_total", route=route, method="GET") - \
            total(before, "contiv_http_requests_total", route=route, method="GET")
        self.assertEqual(failed_get, 1)
        self.assertEqual(moved("contiv_http_requests_total", route="unrouted", method="GET",
                               code="404"), 1)
        # every POST wrote Redis: APPLY round trips counted and timed
        self.assertGreaterEqual(moved("contiv_redis_roundtrip_seconds_count", command="APPLY"), 3)
        self.assertGreater(total(after, "contiv_redis_roundtrip_seconds_sum"), 0)
        # the process collectors of prometheus_client come along
        self.assertGreater(total(after, "process_resident_memory_bytes"), 0)

    @defer.inlineCallbacks
    def test_controller_switches_flows_bundles_reconnects(self):
        yield defer.ensureDeferred(self._controller())

    async def _controller(self) -> None:
        from contiv_sdn.testing.simswitch import Cluster
        cluster = await Cluster(self.nm.url, ("127.0.0.1", self.ofp), self.redis.url).start()
        self.addCleanup(lambda: defer.ensureDeferred(cluster.close()))
        await cluster.create_network("ctlnet", "10.78.0.0/24")
        # the network's change notification schedules a controller run: wait for it
        # (a scrape right after the create may come before the run)

        async def ran() -> Any:
            got = await scrape(self.mport)
            return got if value(got, "contiv_controller_runs_total") >= 1 else None

        s0 = await wait_for(ran, 60, what="a controller run counted in /metrics")
        self.assertEqual(value(s0, "contiv_openflow_switches_connected"), 0)
        self.assertEqual(value(s0, "contiv_openflow_switch_connects_total"), 0)

        host = await cluster.add_host("opsh1", "192.0.2.61")
        await cluster.wait_all_up(60)
        ep = secrets.token_hex(32)
        await cluster.create_endpoint("opsh1", "ctlnet", ep)
        dpid = f"{host.dpid:016x}"
        s1: Dict[str, Samples] = {}

        async def flows_match() -> bool:
            s1["s"] = s = await scrape(self.mport)
            return (value(s, "contiv_openflow_flows", host="opsh1", dpid=dpid)
                    == len(host.flows()) > 0
                    and value(s, "contiv_endpoints", tenant="default") == 1)
        await wait_for(flows_match, 60, what="flows on opsh1 in /metrics as on the switch")
        s = s1["s"]
        self.assertEqual(value(s, "contiv_openflow_switches_connected"), 1)
        self.assertEqual(value(s, "contiv_openflow_switch_connects_total"), 1)
        self.assertEqual(value(s, "contiv_openflow_switch_reconnects_total"), 0)
        self.assertGreaterEqual(value(s, "contiv_openflow_bundle_commits_total"), 1)
        self.assertGreaterEqual(value(s, "contiv_openflow_flow_readbacks_total"), 1)
        self.assertGreater(value(s, "contiv_controller_compiles_total"),
                           value(s0, "contiv_controller_compiles_total"))
        commits = value(s, "contiv_openflow_bundle_commits_total")
        self.assertGreaterEqual(value(s, "contiv_controller_run_duration_seconds_count"),
                                value(s, "contiv_controller_runs_total") - 1)
        self.assertIn(("contiv_openflow_bundle_failures_total", frozenset()), s)
        self.assertIn(("contiv_controller_audit_repairs_total", frozenset()), s)
        self.assertEqual(value(s, "contiv_openflow_bundle_failures_total"), 0)

        # the switch goes and comes back: one disconnect, one reconnect, totals kept
        host.stop()

        async def gone() -> bool:
            return value(await scrape(self.mport), "contiv_openflow_switches_connected") == 0
        await wait_for(gone, 60, what="switch disconnect seen in /metrics")
        host.connect("127.0.0.1", self.ofp)

        async def back() -> bool:
            s1["s"] = s = await scrape(self.mport)
            return value(s, "contiv_openflow_switches_connected") == 1 and \
                value(s, "contiv_openflow_flows", host="opsh1", dpid=dpid) > 0
        await wait_for(back, 60, what="switch reconnect seen in /metrics")
        s = s1["s"]
        self.assertEqual(value(s, "contiv_openflow_switch_connects_total"), 2)
        self.assertEqual(value(s, "contiv_openflow_switch_reconnects_total"), 1)
        self.assertEqual(value(s, "contiv_openflow_switch_disconnects_total"), 1)
        self.assertGreaterEqual(value(s, "contiv_openflow_bundle_commits_total"), commits)


class AgentMetricsTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_attach_detach_counts_and_latency(self):
        yield defer.ensureDeferred(self._agent())

    async def _agent(self) -> None:
        from tests.test_agt_agent import AgentFixture
        from tests.test_agt_plumbing import Netns
        fx = AgentFixture(self)
        mport = free_tcp_port()
        options = fx.options

        def with_metrics() -> Dict[str, Any]:
            o = options()
            o["metrics-endpoint"] = f"tcp:{mport}:interface=127.0.0.1"
            return o
        fx.options = with_metrics
        await fx.start()
        before = await scrape(mport)
        ctrs = [Netns(self, f"m{i}") for i in range(2)]
        ids = [secrets.token_hex(32) for _ in ctrs]
        for ctr, ep in zip(ctrs, ids):
            await fx.client.create_endpoint(ep, ctr.path, "agtnet", name="web")
        await fx.client.delete_endpoint(ids[0])
        with self.assertRaises(Exception):  # no such network: refused, counted as an error
            await fx.client.create_endpoint(secrets.token_hex(32), ctrs[1].path, "nonesuch",
                                            name="web")
        after = await scrape(mport)
        moved = lambda name, **kw: value(after, name, **kw) - value(before, name, **kw)
        self.assertEqual(moved("contiv_endpoint_operations_total", op="attach", result="ok"), 2)
        self.assertEqual(moved("contiv_endpoint_operations_total", op="attach", result="error"), 1)
        self.assertEqual(moved("contiv_endpoint_operations_total", op="detach", result="ok"), 1)
        self.assertEqual(moved("contiv_endpoint_operation_duration_seconds_count", op="attach"), 3)
        self.assertEqual(moved("contiv_endpoint_operation_duration_seconds_count", op="detach"), 1)
        self.assertGreater(moved("contiv_endpoint_operation_duration_seconds_sum", op="attach"), 0)
        # the local API (what contiv-cni calls) by call and result, and OVSDB transactions
        self.assertEqual(moved("contiv_plugin_calls_total", surface="agent",
                               call="create endpoint", result="ok"), 2)
        self.assertEqual(moved("contiv_plugin_calls_total", surface="agent",
                               call="delete endpoint", result="ok"), 1)
        self.assertEqual(moved("contiv_plugin_calls_total", surface="agent",
                               call="create endpoint", result="error") +
                         moved("contiv_plugin_calls_total", surface="agent",
                               call="create endpoint", result="refused"), 1)
        self.assertGreaterEqual(moved("contiv_ovsdb_transaction_duration_seconds_count",
                                      op="add port"), 2)
        self.assertGreaterEqual(moved("contiv_ovsdb_transaction_duration_seconds_count",
                                      op="delete port"), 1)
