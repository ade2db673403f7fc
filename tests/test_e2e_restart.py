"""Restart safety on the lab: control-plane processes die, traffic does not.

"No flow was deleted and re-added" is read from OVS's own flow ages
(``duration``): a flow that was removed and pushed again comes back younger
than it was before the restart.  "No packet lost" is a continuous ping across
hosts (0.2 s apart) stopped right after a reply, so transmitted == received is
exact, and the reply sequence numbers have no gap.

CHURN: the pings stop before a test creates its marker containers.  A new veth
in a host's namespace makes OVS 3.1's userspace datapath (the lab's) revalidate
its tunnel megaflows while it resets its route table, and a few packets of other
flows then go without ``tnl_push``/``tnl_pop`` (``bench/linkchurn.py`` measures
it with nothing of ours moving) — a datapath artifact, not a restart's.  A flow
the restarted process deleted later would still show in the flow ages checked
after the markers.
"""

from __future__ import annotations

import time
from typing import Dict, List

from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import (ContinuousPing, E2ETestCase, flow_durations, flow_key,
                                     our_flows, stable_flows, tcp_exchange, wait_connected,
                                     wait_ping)


#: how long the pings go on after the switches reconnected (the resync's window)
SYNC_SECONDS = 3.0


class RestartSafetyTests(E2ETestCase):
    lab_letter = "c"
    lab_hosts = 2
    lab_subnet = "192.168.63.0/24"

    def two_networks(self, prefix: str, third_octet: int, vlan: int):
        """A vxlan and a vlan network with one container per host each, traffic warmed up."""
        vx = self.network(f"{prefix}x", f"10.63.{third_octet}.0/24", encap="vxlan")
        vl = self.network(f"{prefix}v", f"10.63.{third_octet + 1}.0/24", encap="vlan", tag=vlan)
        x1, x2 = self.container(1, f"{prefix}x1", vx), self.container(2, f"{prefix}x2", vx)
        v1, v2 = self.container(1, f"{prefix}v1", vl), self.container(2, f"{prefix}v2", vl)
        for a, b in ((x1, x2), (x2, x1), (v1, v2), (v2, v1)):
            wait_ping(a, b)  # also resolves the underlay neighbours before anything is counted
        return x1, x2, v1, v2

    def flows_now(self) -> Dict[str, List[str]]:
        return {h.name: stable_flows(h) for h in self.lab.hosts}

    def assert_no_flow_replaced(self, before: Dict[str, List[str]], hosts=None) -> None:
        for h in hosts or self.lab.hosts:
            b = flow_durations(before[h.name])
            a = flow_durations(our_flows(h))
            self.assertTrue(b, f"no flows on {h.name} before: the comparison would prove nothing")
            self.assertEqual(sorted(set(b) - set(a)), [], f"flows gone from {h.name}")
            younger = sorted(k for k in b if k in a and a[k] + 0.001 < b[k])
            self.assertEqual(younger, [], f"flows deleted and re-added on {h.name}")

    def start_pings(self, pairs) -> List[ContinuousPing]:
        pings = [ContinuousPing(a, b.ip) for a, b in pairs]
        for p in pings:
            self.addCleanup(p.kill)
        mark = time.monotonic()
        for p in pings:
            p.wait_replies(3, after=mark)
        return pings

    def stop_pings(self, pings: List[ContinuousPing]) -> None:
        mark = time.monotonic()
        for p in pings:
            p.wait_replies(3, after=mark)  # traffic flows after everything settled, too
        for p in pings:
            sent, received, seqs = p.stop()
            what = f"ping {p.src.netns} -> {p.dst_ip}"
            self.assertGreaterEqual(received, 6, what)
            lost = sorted(set(range(sent)) - set(seqs))
            self.assertEqual(received, sent, f"{what}: packets lost (seq {lost} of 0..{sent - 1})\n"
                             + "\n".join(p.lines[-8:]))
            self.assertEqual(seqs, list(range(sent)), f"{what}: gaps in the replies")

    def test_netmaster_sigkill_loses_no_packet_and_replaces_no_flow(self) -> None:
        x1, x2, v1, v2 = self.two_networks("nm", 1, 240)
        before = self.flows_now()
        pings = self.start_pings([(x1, x2), (v2, v1)])
        old = self.lab.services["netmaster"].pid
        self.lab.restart_netmaster(kill=True)
        self.assertNotEqual(self.lab.services["netmaster"].pid, old)
        wait_connected(self.lab)
        time.sleep(SYNC_SECONDS)  # the pings go on while the new netmaster syncs
        self.stop_pings(pings)  # before the marker's veths appear (see CHURN below)
        # The new netmaster programs both switches (so it has synced them) before we look.
        mk = self.network("nmmark", "10.63.9.0/24", encap="vxlan")
        m1, m2 = self.container(1, "nmm1", mk), self.container(2, "nmm2", mk)
        wait_ping(m1, m2)
        self.assert_no_flow_replaced(before)

    def test_netplugin_restart_loses_no_packet_and_replaces_no_flow(self) -> None:
        x1, x2, v1, v2 = self.two_networks("np", 3, 241)
        before = self.flows_now()
        pings = self.start_pings([(x1, x2), (v2, v1)])
        host = self.lab.hosts[1].name
        old = self.lab.services[f"netplugin:{host}"].pid
        self.lab.restart_netplugin(host)
        self.assertNotEqual(self.lab.services[f"netplugin:{host}"].pid, old)
        wait_connected(self.lab)
        time.sleep(SYNC_SECONDS)  # the pings go on while the agent resyncs
        self.stop_pings(pings)  # before the marker's veths appear (see CHURN below)
        # the restarted agent serves again: a new endpoint on its host works (in a network
        # of its own: a new port in x's network would rightly change x's flood flows)
        mk = self.network("npmark", "10.63.10.0/24", encap="vxlan")
        m1, m2 = self.container(1, "npm1", mk), self.container(2, "npm2", mk)
        wait_ping(m1, m2)
        self.assert_no_flow_replaced(before)

    def test_ovs_restart_brings_its_flows_back_and_traffic_resumes(self) -> None:
        x1, x2, v1, v2 = self.two_networks("ov", 5, 242)
        before = self.flows_now()
        h1, h2 = self.lab.hosts
        old = h2.ovs._pid("ovs-vswitchd")
        self.lab.restart_ovs(h2.name)
        self.assertNotEqual(h2.ovs._pid("ovs-vswitchd"), old)
        want = sorted(flow_key(f) for f in before[h2.name])

        def back() -> bool:
            return sorted(flow_key(f) for f in our_flows(h2)) == want

        wait_until(back, f"the flows of {h2.name} never came back after its OVS restarted",
                   detail=lambda: f"{len(our_flows(h2))} flows now, {len(want)} before; "
                                  + self.describe())
        for a, b in ((x1, x2), (x2, x1), (v1, v2), (v2, v1)):
            wait_ping(a, b)
        self.assertEqual(tcp_exchange(x2, x1, port=5201, request="q", reply="r"), ("q", "r"))
        self.assertEqual(tcp_exchange(v1, v2, port=5202, request="q", reply="r"), ("q", "r"))
        # the other host's switch was left alone
        self.assert_no_flow_replaced(before, hosts=[h1])
