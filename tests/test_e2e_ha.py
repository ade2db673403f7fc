"""High availability on the lab (issue 15): three netmasters on a Redis Sentinel group.

The leader netmaster and the Redis primary are SIGKILLed while containers ping
each other across hosts (0.2 s apart, stopped right after a reply: transmitted ==
received is exact) and endpoints are created one after another through the
hosts' netplugins (which know every netmaster).  Every create is either
acknowledged and then present, or refused; never acknowledged and lost.  "No flow
churn" is read from OVS's flow ages, as in ``tests/test_e2e_restart.py``.

The pings run between hosts 1 and 2 and the creates land on host 3.  Creating an
endpoint adds (and a refused one removes) a veth in its host's namespace, and OVS
3.1's userspace datapath (the lab's; not the kernel datapath) re-translates its
tunnel megaflows on every link event in its namespace, racing its own route and
tunnel-port tables: a few packets of *other* flows are then sent without their
``tnl_push`` or received without their ``tnl_pop``.  Measured with
``bench/linkchurn.py``: no churn 0 lost, veth churn on the sending or receiving
host a few per cent at 100 pings/s — with no control-plane event at all.  Pings
on hosts that see no churn keep the count exact for what HA is about.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from contiv_sdn.lab import Container, ha, http
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import (ContinuousPing, E2ETestCase, flow_durations, flows_mentioning,
                                     our_flows, stable_flows, wait_connected, wait_ping)


class CreateStream:
    """Endpoints created one after another on the last host (not the pinging ones), in a
    thread."""

    def __init__(self, test: "HATests", network: str, prefix: str):
        self.test, self.network, self.prefix = test, network, prefix
        self.acked: List[Tuple[float, Container]] = []   # (monotonic time acknowledged, c)
        self.refused: List[Tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="e2e-creates")

    def start(self) -> "CreateStream":
        self._thread.start()
        return self

    def _run(self) -> None:
        lab, i = self.test.lab, 0
        while not self._stop.is_set() and i < 60:
            i += 1
            host = lab.hosts[-1].name
            try:
                c = lab.add_container(host, f"{self.prefix}{i}", self.network)
            except Exception as e:  # refused: the namespace is gone again
                self.refused.append((time.monotonic(), f"{host}/{self.prefix}{i}: {e}"))
                time.sleep(0.2)
                continue
            self.acked.append((time.monotonic(), c))
            self.test.addCleanup(self.test._remove_container, c)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def after(self, t: float) -> int:
        return sum(1 for at, _ in self.acked if at > t)


class HATests(E2ETestCase):
    lab_letter = "h"
    lab_hosts = 3   # pings between hosts 1 and 2; creates on host 3 (see the module docstring)
    lab_subnet = "192.168.77.0/24"
    lab_netmasters = 3
    lab_redis_sentinel = True

    # -- helpers ----------------------------------------------------------------
    def nm_get(self, path: str) -> dict:
        """GET through whichever netmaster answers (any one answers any request)."""
        last: Optional[Exception] = None
        for url in ha.urls(self.lab):
            try:
                return http.call("GET", path, base_url=url, timeout=15)
            except (OSError, http.ApiError) as e:
                last = e
        raise AssertionError(f"no netmaster answered GET {path}: {last}")

    def pair(self, prefix: str, subnet: str) -> Tuple[Container, Container]:
        net = self.network(prefix, subnet)
        a, b = self.container(1, f"{prefix}1", net), self.container(2, f"{prefix}2", net)
        wait_ping(a, b)
        wait_ping(b, a)
        return a, b

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
            p.wait_replies(3, after=mark)
        for p in pings:
            sent, received, seqs = p.stop()
            what = f"ping {p.src.netns} -> {p.dst_ip}"
            self.assertGreaterEqual(received, 10, what)
            lost = sorted(set(range(sent)) - set(seqs))
            if lost:
                print(f"\n{what}: {len(lost)} of {sent} lost (seq {lost})")
            self.assertEqual(sent - received, 0,
                                 f"{what}: packets lost (seq {lost})\n" + "\n".join(p.lines[-8:]))

    def flows_now(self) -> Dict[str, List[str]]:
        return {h.name: stable_flows(h) for h in self.lab.hosts}

    def assert_no_flow_replaced(self, before: Dict[str, List[str]]) -> None:
        for h in self.lab.hosts:
            b = flow_durations(before[h.name])
            a = flow_durations(our_flows(h))
            self.assertTrue(b, f"no flows on {h.name} before: the comparison would prove nothing")
            self.assertEqual(sorted(set(b) - set(a)), [], f"flows gone from {h.name}")
            younger = sorted(k for k in b if k in a and a[k] + 0.001 < b[k])
            self.assertEqual(younger, [], f"flows deleted and re-added on {h.name}")

    def assert_present(self, stream: CreateStream) -> None:
        """Every acknowledged endpoint is in the store (read through a netmaster)."""
        oper = self.nm_get(f"/api/v1/inspect/networks/default:{stream.network}/").get("Oper") or {}
        text = json.dumps(oper.get("endpoints") or [])
        lost = [c.netns for _, c in stream.acked if c.ip is None or f'"{c.ip}' not in text]
        self.assertEqual(lost, [], f"acknowledged but lost ({len(stream.acked)} acknowledged, "
                                   f"{len(stream.refused)} refused)")

    def consistent(self) -> None:
        res = subprocess.run([sys.executable, "-m", "contiv_sdn.store.consistency",
                              self.lab.redis_url], capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0, f"store inconsistent:\n{res.stdout}{res.stderr}")

    def leader(self) -> str:
        found: List[Optional[str]] = [None]

        def one() -> bool:
            found[0] = ha.leader(self.lab)
            return found[0] is not None
        wait_until(one, "no single netmaster MASTER on every br-int", 30, interval=0.2,
                   detail=lambda: str(ha.roles(self.lab)))
        assert found[0] is not None
        return found[0]

    def revive(self, key: str) -> None:
        """Start a netmaster a failed test left dead (the next test needs all three)."""
        if not self.lab.services[key].alive(self.lab.root):
            ha.start_netmaster(self.lab, key)

    # -- tests ------------------------------------------------------------------
    def test_a_leader_sigkill_loses_no_packet_and_no_acknowledged_create(self) -> None:
        a, b = self.pair("hx", "10.77.1.0/24")
        wait_connected(self.lab)
        leader = self.leader()
        before = self.flows_now()
        pings = self.start_pings([(a, b), (b, a)])
        creates = self.network("hc", "10.77.2.0/24")
        mark = self.network("hm", "10.77.3.0/24")
        stream = CreateStream(self, creates, "c").start()
        self.addCleanup(stream.stop)
        wait_until(lambda: stream.after(0) >= 3, "no create acknowledged before the kill", 60)

        self.addCleanup(self.revive, leader)
        ha.kill_netmaster(self.lab, leader)
        killed = time.monotonic()
        # takeover, as the fabric sees it: an endpoint created right after the kill
        # (any netmaster answers REST) gets its flows on its host's br-int once a
        # standby is MASTER
        h3 = self.lab.hosts[2]
        tk = self.lab.add_container(h3.name, "tk", mark)
        self.addCleanup(self._remove_container, tk)
        wait_until(lambda: bool(flows_mentioning(our_flows(h3), tk.ip)),
                   f"no flows for {tk.ip} after the leader died", 30, interval=0.02,
                   detail=lambda: str(ha.roles(self.lab)))
        took = time.monotonic() - killed
        print(f"\ntakeover after SIGKILL of {leader}: a new endpoint programmed on its br-int "
              f"{took:.2f} s after the kill")
        # (OVS's role and is_connected columns lag a few seconds behind the switch)
        wait_until(lambda: ha.leader(self.lab) not in (None, leader),
                   f"OVS never showed a netmaster other than {leader} as MASTER", 30,
                   interval=0.2, detail=lambda: str(ha.roles(self.lab)))
        new = ha.leader(self.lab)

        # netplugin keeps attaching while a netmaster is down
        wait_until(lambda: stream.after(killed + took) >= 5,
                   "creates stopped being acknowledged with a netmaster down", 60)
        stream.stop()
        self.stop_pings(pings)
        self.assert_no_flow_replaced(before)
        self.assert_present(stream)

        # the killed netmaster comes back as a standby; nothing is rewritten
        settled = self.flows_now()
        ha.start_netmaster(self.lab, leader)
        wait_connected(self.lab)
        wait_until(lambda: all(seen.get(leader) == "slave" for seen in ha.roles(self.lab).values()),
                   f"{leader} did not rejoin as SLAVE", 30, interval=0.2,
                   detail=lambda: str(ha.roles(self.lab)))
        self.assertEqual(ha.leader(self.lab), new)
        time.sleep(2)
        self.assert_no_flow_replaced(settled)
        log = self.lab.services[leader].logfile
        with open(log, errors="replace") as f:
            restarted = f.read().split("netmaster listening")[-1]
        self.assertNotIn("switch lease acquired", restarted)
        self.consistent()

    def test_b_redis_primary_sigkill_loses_no_packet_and_no_acknowledged_create(self) -> None:
        a, b = self.pair("rx", "10.77.4.0/24")
        wait_connected(self.lab)
        before = self.flows_now()
        pings = self.start_pings([(a, b), (b, a)])
        creates = self.network("rc", "10.77.5.0/24")
        stream = CreateStream(self, creates, "r").start()
        self.addCleanup(stream.stop)
        wait_until(lambda: stream.after(0) >= 3, "no create acknowledged before the kill", 60)

        old = ha.redis_primary(self.lab)
        self.assertIsNotNone(old)
        assert old is not None
        ha.kill_redis(self.lab, old)
        killed = time.monotonic()
        new = ha.wait_redis_failover(self.lab, old)
        self.addCleanup(ha.restart_redis_as_replica, self.lab, old)
        wait_until(lambda: stream.after(killed) >= 5,
                   "creates never acknowledged again after the Redis failover", 90,
                   detail=lambda: "\n".join(r for _, r in stream.refused[-5:]))
        again = min(t for t, _ in stream.acked if t > killed) - killed
        print(f"\nRedis primary {old} SIGKILLed: Sentinel promoted {new}; first create "
              f"acknowledged again after {again:.2f} s; {len(stream.refused)} refused")
        stream.stop()
        self.assert_no_flow_replaced(before)
        self.assert_present(stream)
        self.consistent()
        self.stop_pings(pings)
