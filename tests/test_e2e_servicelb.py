"""Service load balancing end to end: a serviceLB VIP answered in the datapath.

Real everything (Redis, ``twistd netmaster`` and its OpenFlow controller, per host a
netplugin, an OVS with conntrack and a dockerd).  ``netctl service create`` with a
label selector; providers are busybox ``httpd`` containers started with ``docker run
--label app=web`` on both hosts, each serving its own name; their labels reach the
endpoint records when Docker starts them (drivers/docker/reconciler.py), the
controller resolves the providers and programs a select group per VIP:port on every
host (pipeline/servicelb.py).  Clients fetch ``http://VIP/`` with busybox ``wget``
from their own network namespaces, each a new connection.

Negative checks sit next to a positive one on the same path: the other tenant's
client reaches its own server before it is shown not to reach the VIP.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections import Counter
from typing import List, Optional

from contiv_sdn.lab import Container
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase, wait_ping

PORT = 80
ECHO = 9000


def provider_cmd(name: str) -> tuple:
    """busybox httpd answering ``<name>-ok`` on 80, and on 9000 a line echo that
    first says its name (so a kept connection tells which provider it reached)."""
    return ("sh", "-c", f"echo {name}-ok > /var/www/index.html; httpd -p {PORT} -h /var/www; "
                        f"printf '#!/bin/sh\\necho hello-{name}\\nexec cat\\n' > /echo.sh; chmod +x /echo.sh; "
                        f"nc -ll -p {ECHO} -e /echo.sh & exec sleep 3600")


FETCH = """
import socket, sys
ip, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for _ in range(n):
    try:
        s = socket.create_connection((ip, port), timeout=timeout)
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        print(data.split(b"\\r\\n\\r\\n", 1)[-1].decode(errors="replace").strip() or "?", flush=True)
    except OSError as e:
        print("-", type(e).__name__, flush=True)
"""


def fetch_many(c: Container, ip: str, n: int, timeout: float = 2.0) -> List[str]:
    """``n`` new HTTP connections from ``c`` to ``ip`` (one after the other): each
    answer's body, or ``- <error>`` (busybox wget crashes here; Python does not)."""
    res = subprocess.run(["ip", "netns", "exec", c.netns, sys.executable, "-c", FETCH, ip, str(PORT), str(n),
                          str(timeout)], capture_output=True, text=True, timeout=n * (timeout + 1) + 20)
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


class Kept:
    """One TCP connection to the echo port, kept open (busybox ``nc``)."""

    def __init__(self, c: Container, ip: str):
        self.proc = subprocess.Popen(["ip", "netns", "exec", c.netns, "busybox", "nc", ip, str(ECHO)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def line(self, timeout: float = 3.0) -> str:
        assert self.proc.stdout is not None
        fd, got = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + timeout
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            got += chunk
        return got.decode(errors="replace").strip()

    def say(self, text: str) -> str:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return ""
        return self.line()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


class ServiceLBTests(E2ETestCase):
    lab_letter = "l"
    lab_subnet = "192.168.76.0/24"
    lab_docker = True

    def labelled(self, host: int, name: str, network: str, label: str = "app=web") -> Container:
        """``docker run --label LABEL`` of a provider on host number ``host`` (the fixture's
        ``docker_container`` plus the label), removed at cleanup."""
        from contiv_sdn.lab.probe import attach_docker_netns
        h = self.lab.hosts[host - 1].name
        self.docker_network(host, network)
        self.lab.docker(h, "run", "-d", "--name", name, f"--net={network}", "--label", label,
                        "busybox:local", *provider_cmd(name), timeout=120)
        netns = self.lab.names.container_netns(h, f"dk-{name}")
        self.addCleanup(self._remove_docker_container, h, name, netns)

        def docker(*args: str) -> subprocess.CompletedProcess:
            return self.lab.docker(h, *args, check=False, timeout=60)

        attach_docker_netns(docker, name, netns)
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.MacAddress}}{{end}}"
        addr, mac = docker("inspect", "-f", fmt, name).stdout.split()
        return Container(host=h, name=name, netns=netns, id=name, network=network, ip=addr, mac=mac)

    def oper(self, tenant: str, name: str) -> dict:
        got = self.api("GET", f"/api/v1/inspect/serviceLBs/{tenant}:{name}/")
        return (got or {}).get("Oper") or {}

    def wait_providers(self, names: List[str], providers: List[Container], timeout: float = 30.0) -> str:
        """Until ``netctl service inspect``'s oper view lists exactly these providers; the VIP."""
        want = sorted(p.ip for p in providers)
        last: dict = {}

        def ok() -> bool:
            last["o"] = o = self.oper("default", "web")
            return sorted(e.get("ipAddress", [""])[0] if isinstance(e.get("ipAddress"), list)
                          else e.get("ipAddress", "") for e in o.get("providers") or []) == want

        wait_until(ok, f"service providers {names}", timeout, interval=0.3,
                   detail=lambda: f"oper: {last.get('o')}")
        return last["o"]["serviceVip"]

    def spread(self, c: Container, vip: str, want: set, n: int = 60, timeout: float = 30.0) -> Counter:
        """``n`` new connections from ``c``; waits until every answer is one of ``want``
        and all of ``want`` answered (the groups arrive a moment after the records)."""
        last: dict = {}

        def ok() -> bool:
            last["c"] = got = Counter(fetch_many(c, vip, n))
            return set(got) == want

        wait_until(ok, f"{c.name} -> {vip}: answers from {sorted(want)}", timeout, interval=0.5,
                   detail=lambda: f"got {dict(last.get('c', {}))}; {self.describe()}\n{self.service_state()}")
        return last["c"]

    def service_state(self) -> str:
        """Each host's service stage (tables 25..28) and groups, for failure messages."""
        out = []
        for h in self.lab.hosts:
            try:
                flows = [f for f in h.ovs.ofctl("dump-flows", "br-int").splitlines()
                         if any(f"table={t}," in f for t in (20, 25, 26, 27, 28))]
                groups = h.ovs.ofctl("-O", "OpenFlow13", "dump-groups", "br-int")
                out.append(f"{h.name}:\n" + "\n".join(flows) + "\n" + groups)
            except Exception as e:
                out.append(f"{h.name}: {e}")
        return "\n".join(out)

    def test_vip_balances_follows_providers_hairpins_and_isolates_tenants(self) -> None:
        net = self.network("svcnet", "20.12.1.0/24")
        self.netctl("service", "create", "web", "--network", net, "--selector", "app=web",
                    "--port", f"{PORT}:{PORT}:TCP", "--port", f"{ECHO}:{ECHO}:TCP")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/serviceLBs/default:web/")
        p1 = self.labelled(1, "p1", net)
        p2 = self.labelled(2, "p2", net)
        c1 = self.container(1, "c1", net)
        c2 = self.container(2, "c2", net)
        wait_ping(c1, p2)
        vip = self.wait_providers(["p1", "p2"], [p1, p2])
        self.assertTrue(vip.startswith("20.12.1."), vip)
        shown = self.netctl("service", "inspect", "web").stdout
        self.assertIn(vip, shown)
        self.assertIn(p1.ip, shown)

        # both providers answer clients on either host (>= 50 new connections each)
        for c in (c1, c2):
            got = self.spread(c, vip, {"p1-ok", "p2-ok"})
            self.assertGreaterEqual(sum(got.values()), 50)

        # hairpin: a provider reaching its own VIP (sometimes chosen itself)
        self.spread(p1, vip, {"p1-ok", "p2-ok"}, n=40)

        # a kept connection to one provider; the other one removed: new connections all
        # go to the survivor, the kept one goes on
        kept: Optional[Kept] = None
        survivor = ""
        for _ in range(20):
            k = Kept(c1, vip)
            hello = k.line()
            if hello.startswith("hello-"):
                kept, survivor = k, hello[len("hello-"):]
                break
            k.close()
        self.assertIsNotNone(kept, "no connection to the echo port through the VIP")
        assert kept is not None
        self.addCleanup(kept.close)
        gone, stays = (p2, p1) if survivor == "p1" else (p1, p2)
        self.assertEqual(kept.say("before"), "before")
        self.lab.docker(gone.host, "rm", "-f", gone.name, timeout=60)
        subprocess.run(["ip", "netns", "delete", gone.netns], capture_output=True)
        self.wait_providers([stays.name], [stays])
        for c in (c1, c2):
            got = self.spread(c, vip, {f"{stays.name}-ok"}, n=30)
            self.assertEqual(set(got), {f"{stays.name}-ok"})
        self.assertEqual(kept.say("after"), "after", "the kept connection to the survivor was cut")

        # a provider started later with the labels joins
        p3 = self.labelled(2 if gone is p2 else 1, "p3", net)
        self.wait_providers([stays.name, "p3"], [stays, p3])
        self.spread(c1, vip, {f"{stays.name}-ok", "p3-ok"})

        # another tenant's client does not reach the VIP (it reaches its own server)
        self.tenant("blue")
        bnet = self.network("bnet", "20.12.1.0/24", tenant="blue")
        b1 = self.container(1, "b1", bnet, tenant="blue")
        b2 = self.container(2, "b2", bnet, tenant="blue")
        wait_ping(b1, b2)
        got = fetch_many(b1, vip, 3, timeout=1)
        self.assertFalse([a for a in got if a.endswith("-ok")], f"blue reached the default tenant's VIP: {got}")
