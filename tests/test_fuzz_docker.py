"""Fuzzing the Docker plugin API: mutated bodies for every /NetworkDriver.* and /IpamDriver.* call.

A real host (:class:`tests.test_drv_fixtures.DockerHost` without dockerd: Redis, a
netmaster process, a private OVS in its own namespace, the netplugin agent with
the Docker driver in this process) is called over its plugin socket as dockerd
calls it.  The fuzz is stateful so that it reaches past decoding: valid bodies
are built from what earlier answers gave (pool ids, addresses) over a few
network and endpoint ids, so creates, joins, leaves and deletes meet each other
in every order; most bodies are then mutated (:mod:`tests.fuzz_helpers`: wrong
types, huge/deep values, NaN/1e400, broken JSON, case-variant names), and some
calls are unknown or use the wrong method.

Every answer is JSON: ``{}``/a result with 200, or exactly ``{"Err": text}`` with a
4xx/5xx, the text short and free of Python.  Afterwards: no failure or
error record logged in this process (the agent and driver), none in the
netmaster's log; everything the fuzz made can be removed through the API, and
then nothing is left (no OVS port, no veth, no endpoint or reservation in the
store, no pending driver state) and the store's consistency check passes; a
full valid lifecycle still works.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.logger import Logger
from twisted.trial import unittest

from contiv_sdn.store import Store
from contiv_sdn.store.consistency import check
from drivers.docker.protocol import REQUESTS
from tests.fuzz_helpers import EventWatch, case_count, log_problems, mutate_value, python_in, \
    render, seeded
from tests.test_drv_fixtures import GATEWAY, NET, SUBNET, DockerHost, PluginCaller, netctl_group, \
    netctl_net

CASES = case_count(1500)
NET_IDS = ["f1" * 32, "f2" * 32]
EP_IDS = ["e1" * 32, "e2" * 32, "e3" * 32, "e4" * 32]
log = Logger()
ADDRESS_CALLS = ("IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress",
                 "NetworkDriver.CreateEndpoint", "NetworkDriver.DeleteEndpoint",
                 "NetworkDriver.DeleteNetwork", "IpamDriver.RequestPool", "IpamDriver.ReleasePool")


class State:
    """What earlier answers gave: the ids valid bodies are built from."""

    def __init__(self) -> None:
        self.pools: List[str] = [f"default:{NET}:|{SUBNET}"]
        self.addresses: List[str] = []
        #: networks and endpoints that exist (as far as the answers said)
        self.nets: List[str] = []
        self.eps: List[Tuple[str, str]] = []
        self.fresh: List[str] = []  # addresses not yet given to an endpoint

    def body(self, rnd: random.Random, call: str) -> Any:
        net, ep = rnd.choice(NET_IDS), rnd.choice(EP_IDS)
        if call.startswith("NetworkDriver.") and self.eps and rnd.random() < 0.7:
            net, ep = rnd.choice(self.eps)
        if call == "NetworkDriver.CreateEndpoint" and self.nets and rnd.random() < 0.8:
            net = rnd.choice(self.nets)
        pool = rnd.choice(self.pools)
        addr = rnd.choice(self.addresses) if self.addresses and rnd.random() < 0.7 else ""
        if call == "NetworkDriver.CreateEndpoint" and self.fresh and rnd.random() < 0.8:
            addr = self.fresh[-1]
        generic = {"tenant": "default", "network": NET}
        if rnd.random() < 0.5:
            generic["group"] = "web"
        bodies: Dict[str, Any] = {
            "NetworkDriver.CreateNetwork": {
                "NetworkID": net, "Options": {"com.docker.network.enable_ipv6": False,
                                              "com.docker.network.generic": generic},
                "IPv4Data": [{"AddressSpace": "contiv-local", "Pool": SUBNET,
                              "Gateway": f"{GATEWAY}/24"}], "IPv6Data": []},
            "NetworkDriver.DeleteNetwork": {"NetworkID": net},
            "NetworkDriver.AllocateNetwork": {"NetworkID": net, "Options": {"contiv-tag": "x"},
                                              "IPv4Data": [], "IPv6Data": []},
            "NetworkDriver.FreeNetwork": {"NetworkID": net},
            "NetworkDriver.CreateEndpoint": {
                "NetworkID": net, "EndpointID": ep,
                "Interface": {"Address": addr and addr + "/24", "AddressIPv6": "",
                              "MacAddress": rnd.choice(("", "02:02:0a:25:01:09"))},
                "Options": {"com.docker.network.endpoint.exposedports": []}},
            "NetworkDriver.EndpointOperInfo": {"NetworkID": net, "EndpointID": ep},
            "NetworkDriver.DeleteEndpoint": {"NetworkID": net, "EndpointID": ep},
            "NetworkDriver.Join": {"NetworkID": net, "EndpointID": ep,
                                   "SandboxKey": "/var/run/docker/netns/x", "Options": {}},
            "NetworkDriver.Leave": {"NetworkID": net, "EndpointID": ep},
            "NetworkDriver.DiscoverNew": {"DiscoveryType": 1, "DiscoveryData": {"Address": "1.2.3.4"}},
            "NetworkDriver.DiscoverDelete": {"DiscoveryType": 1, "DiscoveryData": {}},
            "NetworkDriver.ProgramExternalConnectivity": {"NetworkID": net, "EndpointID": ep,
                                                          "Options": {}},
            "NetworkDriver.RevokeExternalConnectivity": {"NetworkID": net, "EndpointID": ep},
            "IpamDriver.RequestPool": {"AddressSpace": "contiv-local",
                                       "Pool": rnd.choice((SUBNET, "", "10.37.9.0/24")),
                                       "SubPool": "", "Options": dict(generic), "V6": False},
            "IpamDriver.ReleasePool": {"PoolID": pool},
            "IpamDriver.RequestAddress": {
                "PoolID": pool, "Address": rnd.choice(("", "", GATEWAY, "10.37.1.77", addr)),
                "Options": rnd.choice((None, {}, {"RequestAddressType":
                                                  "com.docker.network.gateway"}))},
            "IpamDriver.ReleaseAddress": {"PoolID": pool, "Address": addr or "10.37.1.5"},
        }
        return bodies.get(call)

    def learn(self, call: str, body: Optional[bytes], answer: Any) -> None:
        if not isinstance(answer, dict):
            return
        try:
            sent = json.loads(body or b"null")
        except (ValueError, RecursionError):
            sent = None
        if isinstance(sent, dict) and isinstance(sent.get("NetworkID"), str):
            net, ep = sent["NetworkID"], sent.get("EndpointID")
            if call == "NetworkDriver.CreateNetwork" and net not in self.nets:
                self.nets.append(net)
            elif call == "NetworkDriver.DeleteNetwork" and net in self.nets:
                self.nets.remove(net)
            elif call == "NetworkDriver.CreateEndpoint" and isinstance(ep, str):
                if (net, ep) not in self.eps:
                    self.eps.append((net, ep))
                addr = (sent.get("Interface") or {}).get("Address") \
                    if isinstance(sent.get("Interface"), dict) else None
                if isinstance(addr, str) and addr.split("/")[0] in self.fresh:
                    self.fresh.remove(addr.split("/")[0])
            elif call == "NetworkDriver.DeleteEndpoint" and (net, ep) in self.eps:
                self.eps.remove((net, ep))
        if call == "IpamDriver.RequestPool" and isinstance(answer.get("PoolID"), str):
            if answer["PoolID"] not in self.pools:
                self.pools.append(answer["PoolID"])
        if call == "IpamDriver.RequestAddress" and isinstance(answer.get("Address"), str):
            ip = answer["Address"].split("/")[0]
            if ip not in self.addresses:
                self.addresses.append(ip)
            self.fresh.append(ip)


def make_case(rnd: random.Random, state: State, call: str) -> Tuple[str, str, Optional[bytes]]:
    """(method, call, body bytes) for one case of ``call``."""
    valid = state.body(rnd, call)
    kind = rnd.choices(("valid", "mutated", "render", "method", "unknown"), (30, 45, 15, 5, 5))[0]
    if valid is None:  # a call without a body: send one anyway, sometimes
        data = render(rnd, mutate_value(rnd, {})) if kind in ("mutated", "render") else None
    elif kind == "valid":
        data = json.dumps(valid).encode()
    else:
        shape = REQUESTS[call][0] if REQUESTS.get(call) else None
        fields = list(shape.fields) if shape is not None else []
        value = valid
        for _ in range(rnd.randint(1, 3) if kind == "mutated" else 0):
            value = mutate_value(rnd, value, fields)
        data = render(rnd, value)
    method = "POST"
    if kind == "method":
        method = rnd.choice(("GET", "PUT", "DELETE", "PATCH", "OPTIONS"))
    if kind == "unknown":
        call = rnd.choice(("NetworkDriver.Frob", "IpamDriver.", "Plugin", "networkdriver.join",
                           call + "x", "", "../" + call, call.replace(".", "/")))
    return method, call, data


class DockerFuzzTests(unittest.TestCase):
    timeout = 600

    async def _setup(self) -> None:
        self.events = EventWatch(self)
        self.h = DockerHost(self, docker=False)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        await self.h.start_agent()
        self.p = PluginCaller(self.h.plugin_socket)
        self.store = await Store.connect(self.h.redis.url)
        self.addCleanup(self.store.close)

    def judge(self, case: Tuple[str, str, Optional[bytes]], code: int, answer: Any,
              bad: List[str]) -> None:
        what = f"{case[0]} {case[1]} {(case[2] or b'')[:300]!r} -> {code} {str(answer)[:300]}"
        if not isinstance(answer, dict):
            bad.append(f"not a JSON object: {what}")
            return
        if code == 200:
            if answer.get("Err"):
                bad.append(f"200 with an Err: {what}")
            return
        if code not in (400, 404, 405, 500):
            bad.append(f"status {code}: {what}")
        if set(answer) != {"Err"} or not isinstance(answer["Err"], str) or not answer["Err"]:
            bad.append(f"not exactly {{Err}}: {what}")
            return
        if python_in(answer["Err"]):
            bad.append(f"Python in the answer ({python_in(answer['Err'])}): {what}")
        if len(answer["Err"]) > 2000:
            bad.append(f"an Err of {len(answer['Err'])} characters: {what}")

    async def send(self, method: str, call: str, data: Optional[bytes]) -> Tuple[int, Any]:
        code, answer, _ = await self.p.raw(call, data, method=method)
        return code, answer

    async def ok(self, call: str, body: Any) -> Any:
        code, answer = await self.send("POST", call, json.dumps(body).encode())
        self.assertEqual(code, 200, f"{call} {body}: {answer}")
        return answer

    async def clean_up_everything(self, state: State) -> None:
        """Remove what the fuzz made, through the API as dockerd would."""
        for net in NET_IDS:
            for ep in EP_IDS:
                for call in ("NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"):
                    await self.send("POST", call, json.dumps(
                        {"NetworkID": net, "EndpointID": ep}).encode())
        for ip in state.addresses + [GATEWAY, "10.37.1.77"]:
            for pool in state.pools:
                await self.send("POST", "IpamDriver.ReleaseAddress", json.dumps(
                    {"PoolID": pool, "Address": ip}).encode())
        for net in NET_IDS:
            for call in ("NetworkDriver.DeleteNetwork", "NetworkDriver.FreeNetwork"):
                await self.send("POST", call, json.dumps({"NetworkID": net}).encode())
        for pool in state.pools:
            await self.send("POST", "IpamDriver.ReleasePool",
                            json.dumps({"PoolID": pool}).encode())

    async def lifecycle(self) -> None:
        """The valid sequence dockerd sends for one container, start to end."""
        net, ep = "a9" * 32, "b9" * 32
        pool = (await self.ok("IpamDriver.RequestPool", {
            "Pool": SUBNET, "Options": {"tenant": "default", "network": NET}}))["PoolID"]
        await self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": net, "Options": {"com.docker.network.generic": {
                "tenant": "default", "network": NET}},
            "IPv4Data": [{"Pool": SUBNET, "Gateway": f"{GATEWAY}/24"}]})
        addr = (await self.ok("IpamDriver.RequestAddress", {"PoolID": pool}))["Address"]
        await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": net, "EndpointID": ep, "Interface": {"Address": addr}})
        joined = await self.ok("NetworkDriver.Join", {
            "NetworkID": net, "EndpointID": ep, "SandboxKey": "/var/run/docker/netns/y"})
        self.assertIn("cv" + ep[:12], self.h.ports())
        self.assertEqual(joined["Gateway"], GATEWAY)
        await self.ok("NetworkDriver.Leave", {"NetworkID": net, "EndpointID": ep})
        await self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep})
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool,
                                                    "Address": addr.split("/")[0]})
        await self.ok("NetworkDriver.DeleteNetwork", {"NetworkID": net})
        await self.ok("IpamDriver.ReleasePool", {"PoolID": pool})

    def assert_nothing_left(self) -> None:
        h = self.h
        self.assertEqual({p for p in h.ports() if p.startswith("cv")}, set())
        self.assertEqual({l for l in h.host_links() if l.startswith(("cv", "ct"))}, set())
        self.assertEqual(h.endpoints_in_redis(), {})
        self.assertFalse(h.plugin.driver.state.pending)

    @seeded
    async def test_mutated_bodies_for_every_call(self, rnd):
        await self._setup()
        state = State()
        # every call, the ones that build state three times as often as the others
        builders = ("IpamDriver.RequestPool", "IpamDriver.RequestAddress",
                    "NetworkDriver.CreateNetwork", "NetworkDriver.CreateEndpoint",
                    "NetworkDriver.Join")
        calls = sorted(REQUESTS) + [c for c in builders for _ in range(2)]
        order: List[str] = []
        while len(order) < CASES:
            r = list(calls)
            rnd.shuffle(r)
            order += r
        bad: List[str] = []
        statuses: Dict[int, int] = {}
        succeeded: Dict[str, int] = {}
        history: List[str] = []  # successful calls that touch addresses, to explain a leak
        started = time.monotonic()
        for call in order[:CASES]:
            case = make_case(rnd, state, call)
            code, answer = await self.send(*case)
            statuses[code] = statuses.get(code, 0) + 1
            self.judge(case, code, answer, bad)
            if code == 200 and case[1] in ADDRESS_CALLS:
                history.append(f"{case[1]} {(case[2] or b'')[:400]!r} -> {str(answer)[:200]}")
            if code == 200:
                state.learn(case[1], case[2], answer)
                succeeded[case[1]] = succeeded.get(case[1], 0) + 1
        log.info("Docker plugin API fuzz: {n} cases in {t:.1f}s, statuses {s}; successes {ok}",
                 n=CASES, t=time.monotonic() - started, s=dict(sorted(statuses.items())),
                 ok=dict(sorted(succeeded.items())))
        self.assertEqual(bad[:10], [], f"{len(bad)} bad answers")
        # it reached the semantics: successes and refusals both, across many calls
        self.assertGreater(statuses.get(200, 0), CASES * 0.15, statuses)
        self.assertGreater(statuses.get(400, 0), CASES * 0.15, statuses)
        for call in ("IpamDriver.RequestPool", "IpamDriver.RequestAddress",
                     "NetworkDriver.CreateNetwork", "NetworkDriver.CreateEndpoint",
                     "NetworkDriver.Join", "NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"):
            self.assertGreater(succeeded.get(call, 0), CASES // 400, (call, succeeded))
        await self.clean_up_everything(state)
        self.assert_nothing_left()
        problems = await check(self.store)
        self.assertEqual(problems, [], "\n".join(["what touched addresses:"] + history))
        await self.lifecycle()
        self.assert_nothing_left()
        self.assertEqual(await check(self.store), [])
        self.assertEqual(self.events.bad[:5], [], "failures logged by the agent or driver")
        self.assertEqual(log_problems(self.h.nm.log_text())[:10], [])

    @seeded
    async def test_second_create_endpoint_with_another_address_is_refused(self, rnd):
        """Found by the fuzz: a CreateEndpoint for an endpoint id that exists answered the
        existing endpoint (a retry) but dropped the *new* address from the driver's pending
        reservations, so ReleaseAddress of it did nothing and it stayed reserved at the
        netmaster for good.  Now refused (400, saying why) with the reservation kept; the
        same address again is still a retry; the gateway is refused as an address."""
        await self._setup()
        net, ep = "a8" * 32, "b8" * 32
        pool = (await self.ok("IpamDriver.RequestPool", {
            "Pool": SUBNET, "Options": {"tenant": "default", "network": NET}}))["PoolID"]
        await self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": net, "Options": {"com.docker.network.generic": {
                "tenant": "default", "network": NET}},
            "IPv4Data": [{"Pool": SUBNET, "Gateway": f"{GATEWAY}/24"}]})
        first = (await self.ok("IpamDriver.RequestAddress", {"PoolID": pool}))["Address"]
        await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": net, "EndpointID": ep, "Interface": {"Address": first}})
        second = (await self.ok("IpamDriver.RequestAddress", {"PoolID": pool}))["Address"]
        code, answer = await self.send("POST", "NetworkDriver.CreateEndpoint", json.dumps({
            "NetworkID": net, "EndpointID": ep, "Interface": {"Address": second}}).encode())
        self.assertEqual(code, 400, answer)
        self.assertIn(f"exists with address {first.split('/')[0]}, not {second.split('/')[0]}",
                      answer["Err"])
        # the same address again is a retry, answered
        await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": net, "EndpointID": ep, "Interface": {"Address": first}})
        code, answer = await self.send("POST", "NetworkDriver.CreateEndpoint", json.dumps({
            "NetworkID": net, "EndpointID": "c8" * 32,
            "Interface": {"Address": f"{GATEWAY}/24"}}).encode())
        self.assertEqual(code, 400, answer)
        self.assertIn(f"{GATEWAY} is the gateway of network", answer["Err"])
        self.assertEqual([r.get("ipAddress") for r in self.h.endpoints_in_redis().values()],
                         [first.split("/")[0]])
        # dockerd then releases what it reserved, and deletes the endpoint: nothing may
        # stay allocated
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool,
                                                    "Address": second.split("/")[0]})
        await self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": ep})
        await self.ok("NetworkDriver.DeleteNetwork", {"NetworkID": net})
        await self.ok("IpamDriver.ReleasePool", {"PoolID": pool})
        self.assertEqual(await check(self.store), [], f"second CreateEndpoint: {code} {answer}")
