"""Host access end to end: a lab host's own namespace reaches containers and a VIP, and back.

Real everything (Redis, ``twistd netmaster`` with its OpenFlow controller, per host a
netplugin with ``--host-access``, an OVS with conntrack, a dockerd).  The netplugin
puts ``contivh0`` in the host's namespace (``agent/hostport.py``) with the address
``172.19.<VTEP's low bytes>`` and routes to the default tenant's VXLAN subnets; the
controller treats that port as a local endpoint of the default tenant
(``pipeline/hostaccess.py``).  Traffic is real ping and TCP from the host's
namespace (``nodeN``), not from a container.

The negative check (another tenant, same subnet, so the host even has a route to
its address) sits next to a positive one on the same path: that tenant's
containers reach each other.
"""

from __future__ import annotations

from collections import Counter

from contiv_sdn.lab import Container
from contiv_sdn.pipeline import hostaccess as HA
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase, assert_no_pings, flow_key, stable_flows, wait_ping
from tests import test_e2e_servicelb as SLB  # a module, so trial does not collect its class here


class HostAccessTests(E2ETestCase):
    lab_letter = "o"
    lab_subnet = "192.168.79.0/24"
    lab_docker = True
    lab_host_access = True

    # the serviceLB test's helpers: labelled httpd providers, the oper view, spreading fetches
    labelled = SLB.ServiceLBTests.labelled
    oper = SLB.ServiceLBTests.oper
    wait_providers = SLB.ServiceLBTests.wait_providers
    service_state = SLB.ServiceLBTests.service_state

    def host_as_client(self, index: int) -> Container:
        """Host number ``index`` (1-based) as a traffic source: its own namespace."""
        h = self.lab.hosts[index - 1]
        return Container(host=h.name, name=h.name, netns=h.netns, id=h.name, network="",
                         ip=HA.host_address(h.vtep_ip))

    def wait_route(self, index: int, subnet: str) -> None:
        h = self.lab.hosts[index - 1]
        last = {}

        def ok() -> bool:
            last["r"] = h.exec("ip", "-4", "route", "show", subnet).stdout
            return f"via {HA.GATEWAY} dev {HA.PORT}" in last["r"]

        wait_until(ok, f"{h.name}: route to {subnet} via {HA.PORT}", 30, interval=0.5,
                   detail=lambda: f"{last.get('r')!r}; links: {h.exec('ip', '-br', 'addr').stdout}")

    def fetch_both(self, client: Container, vip: str, want: set, n: int = 40) -> Counter:
        last: dict = {}

        def ok() -> bool:
            last["c"] = got = Counter(SLB.fetch_many(client, vip, n))
            return set(got) == want

        wait_until(ok, f"{client.netns} -> {vip}: answers from {sorted(want)}", 30, interval=0.5,
                   detail=lambda: f"got {dict(last.get('c', {}))}\n{self.service_state()}")
        return last["c"]

    def test_host_reaches_containers_and_vips_containers_reach_hosts_other_tenants_isolated(self) -> None:
        net = self.network("hanet", "20.13.1.0/24")
        self.netctl("service", "create", "web", "--network", net, "--selector", "app=web",
                    "--port", f"{SLB.PORT}:{SLB.PORT}:TCP")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/serviceLBs/default:web/")
        c1 = self.container(1, "c1", net)
        c2 = self.container(2, "c2", net)
        h1, h2 = self.host_as_client(1), self.host_as_client(2)
        self.assertEqual((h1.ip, h2.ip), ("172.19.79.1", "172.19.79.2"))
        for i in (1, 2):
            self.wait_route(i, "20.13.1.0/24")

        # host -> local container, host -> remote container (both hosts)
        wait_ping(h1, c1)
        wait_ping(h1, c2)
        wait_ping(h2, c1)
        wait_ping(h2, c2)
        # a container -> its own host (and the other host: the replies above went that way)
        wait_ping(c1, h1.ip)
        wait_ping(c2, h2.ip)
        wait_ping(c1, h2.ip)

        # host -> a serviceLB VIP with two providers on different hosts: both answer
        p1 = self.labelled(1, "p1", net)
        p2 = self.labelled(2, "p2", net)
        vip = self.wait_providers(["p1", "p2"], [p1, p2])
        for h in (h1, h2):
            got = self.fetch_both(h, vip, {"p1-ok", "p2-ok"})
            self.assertGreaterEqual(sum(got.values()), 40)

        # a tenant the host must not reach: same subnet (the host even routes it to
        # contivh0), its containers reach each other, the host reaches neither, and
        # they do not reach the host
        self.tenant("blue")
        bnet = self.network("bnet", "20.13.1.0/24", tenant="blue")
        b1 = self.container(1, "b1", bnet, tenant="blue", ip="20.13.1.50")
        b2 = self.container(2, "b2", bnet, tenant="blue", ip="20.13.1.51")
        wait_ping(b1, b2)
        assert_no_pings([(h1, b1.ip), (h1, b2.ip), (h2, b1.ip), (b1, h1.ip), (b2, h2.ip)])

        # restart safety: a netplugin restart and a netmaster restart change no flow
        # and host access goes on
        host1 = self.lab.hosts[0]
        before = sorted(flow_key(f) for f in stable_flows(host1))
        self.assertTrue([f for f in before if "172.19." in f],
                        "no host-access flow on the switch")
        self.lab.restart_netplugin(host1.name)
        self.lab.restart_netmaster(kill=True)
        wait_ping(h1, c2)
        wait_ping(c2, h1.ip)
        after = sorted(flow_key(f) for f in stable_flows(host1))
        self.assertEqual(after, before, "the restarts changed host1's flows")
