"""DNS service discovery end to end: the seed's ``ping db`` across hosts, with no change to the app.

Real everything (Redis, netmaster, per host a netplugin with ``--dns-listen`` and
its serving path, an OVS, a dockerd): a container's DNS query to *any* resolver
leaves it, br-int hands it to the host's DNS namespace tagged with the tenant's
VRF, and the netplugin's server answers for that tenant (or relays to the
upstream: here a DNS server this test runs on the underlay gateway, where the
lab points every netplugin's ``--dns-upstream``).

Queries from lab containers go to the network's gateway (what CNI containers
are told); Docker containers use their engine's embedded resolver, which
forwards what it does not know to the daemon's upstream (the lab gives it one).
Answers are read with dnspython run inside the container's namespace.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import threading
from typing import List, Optional, Tuple

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from contiv_sdn.demo import SEED_NET  # the seed's line, as `make demo` runs it
from contiv_sdn.lab import Container
from contiv_sdn.testing import require_binary
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase

EXTERNAL = ("ext.example.test.", "203.0.113.7")

_DIG = r"""
import json, sys
import dns.message, dns.query, dns.rcode, dns.rdatatype
name, server = sys.argv[1], sys.argv[2]
try:
    r = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=1.0)
except Exception as e:
    print(json.dumps({"rcode": "TIMEOUT", "addrs": [], "error": str(e)})); sys.exit(0)
addrs = [rd.address for rrs in r.answer if rrs.rdtype == dns.rdatatype.A for rd in rrs]
print(json.dumps({"rcode": dns.rcode.to_text(r.rcode()), "addrs": addrs}))
"""


class Upstream:
    """A tiny authoritative server for :data:`EXTERNAL` on the lab's underlay gateway:53
    (a plain thread: these tests run no reactor)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.2)
        self.asked: List[str] = []
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - not a query: ignored
                continue
            r = dns.message.make_response(q)
            name = str(q.question[0].name).lower() if q.question else ""
            self.asked.append(name)
            if name == EXTERNAL[0] and q.question[0].rdtype == dns.rdatatype.A:
                r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", EXTERNAL[1]))
            else:
                r.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(r.to_wire(), peer)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.thread.join(2)


class DNSTests(E2ETestCase):
    lab_letter = "n"
    lab_subnet = "192.168.66.0/24"
    lab_docker = True

    def setUp(self) -> None:
        super().setUp()
        require_binary("dockerd")
        self.upstream = Upstream(self.lab.subnet.gateway)
        self.addCleanup(self.upstream.close)

    def seed(self, line: str) -> None:
        self.netctl(*shlex.split(line)[1:])

    def dig(self, c: Container, name: str, server: str, ordered: bool = False) -> Tuple[str, List[str]]:
        """(rcode text, A addresses sorted unless ``ordered``) of ``name`` asked from inside
        ``c`` to ``server``."""
        res = subprocess.run(["ip", "netns", "exec", c.netns, sys.executable, "-c", _DIG, name,
                              server], capture_output=True, text=True, timeout=20)
        try:
            out = json.loads(res.stdout)
        except ValueError:
            raise AssertionError(f"dig in {c.netns} failed: {res.stdout}{res.stderr}") from None
        return out["rcode"], (out["addrs"] if ordered else sorted(out["addrs"]))

    def expect(self, c: Container, name: str, server: str, rcode: str,
               addrs: Optional[List[str]] = None, timeout: float = 15.0) -> None:
        last: dict = {}

        def ok() -> bool:
            last["r"] = self.dig(c, name, server)
            return last["r"][0] == rcode and (addrs is None or last["r"][1] == sorted(addrs))

        wait_until(ok, f"{name} from {c.netns} via {server}: want {rcode} {addrs}", timeout,
                   interval=0.1, detail=lambda: f"last answer {last.get('r')}; {self.describe()}")

    def member(self, host: int, name: str, network: str, group: str) -> Container:
        c = self.lab.add_container(self.lab.hosts[host - 1].name, name, network, group=group)
        self.addCleanup(self._remove_container, c)
        return c

    # ------------------------------------------------------------------------------
    def test_a_seed_ping_db(self) -> None:
        """The seed's quick start verbatim: ``docker exec web ping -c 2 db``, db on node2."""
        self.seed(SEED_NET)
        self.addCleanup(self._quietly, "DELETE", "/api/v1/networks/default:contiv-net/")
        web = self.docker_container(1, "web", "contiv-net")
        db = self.docker_container(2, "db", "contiv-net")
        last: dict = {}

        def pinged() -> bool:
            last["r"] = self.lab.docker(web.host, "exec", "web", "ping", "-c", "2", "-W", "1", "db",
                                        check=False, timeout=30)
            return last["r"].returncode == 0

        wait_until(pinged, "docker exec web ping -c 2 db never succeeded", 30, interval=0.2,
                   detail=lambda: f"{last['r'].stdout}{last['r'].stderr}; {self.describe()}")
        self.assertIn(f"({db.ip})", last["r"].stdout)
        # an external name, through the embedded resolver, our server and the upstream
        res = self.lab.docker(web.host, "exec", "web", "nslookup", EXTERNAL[0].rstrip("."),
                              check=False, timeout=30)
        self.assertIn(EXTERNAL[1], res.stdout, res.stdout + res.stderr)

    def test_b_names_tenants_and_freshness(self) -> None:
        """Group names from another network, tenant isolation, removal, external names,
        asked at the gateway (the CNI path: the gateway is the container's nameserver)."""
        self.network("front", "10.61.1.0/24")
        self.network("back", "10.61.2.0/24")
        self.netctl("group", "create", "front", "web")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/endpointGroups/default:web/")
        w1 = self.member(1, "w1", "front", "web")
        w2 = self.member(2, "w2", "front", "web")
        asker = self.container(1, "asker", "back")
        gw = "10.61.2.254"
        self.expect(asker, "web.front", gw, "NOERROR", [w1.ip, w2.ip])
        # every member, the order rotated from one answer to the next
        firsts = {self.dig(asker, "web.front", gw, ordered=True)[1][0] for _ in range(4)}
        self.assertEqual(firsts, {w1.ip, w2.ip})
        self.expect(asker, EXTERNAL[0], gw, "NOERROR", [EXTERNAL[1]])
        # another tenant, same network and group names: nothing of default's
        self.tenant("other")
        self.network("front", "10.61.1.0/24", tenant="other")
        stranger = self.container(2, "stranger", "front", tenant="other")
        self.expect(stranger, "web.front", "10.61.1.254", "NXDOMAIN")
        self.expect(stranger, "w1", "10.61.1.254", "NXDOMAIN")
        # ours, not the upstream's: it was never asked
        self.assertNotIn("web.front.", self.upstream.asked)
        # a removed container is gone within a second
        self.expect(asker, "w1.front", gw, "NOERROR", [w1.ip])
        self.lab.remove_container(w1.netns)
        self.expect(asker, "w1.front", gw, "NXDOMAIN", timeout=1.0)
        self.expect(asker, "web.front", gw, "NOERROR", [w2.ip], timeout=1.0)

    def test_c_podman_resolves_db(self) -> None:
        """A CNI (podman) container: the gateway is its nameserver, ``db`` resolves."""
        require_binary("podman", "conmon")
        self.seed(SEED_NET)
        self.addCleanup(self._quietly, "DELETE", "/api/v1/networks/default:contiv-net/")
        db = self.docker_container(2, "db", "contiv-net")
        podman = self.lab.podman(self.lab.hosts[0].name)
        podman.run("run", "-d", "--name", "pod", "--network", "contiv-net", "busybox:local",
                   "sleep", "3600", timeout=120)
        self.addCleanup(podman.run, "rm", "-f", "-t", "0", "pod", check=False, timeout=60)
        last: dict = {}

        def pinged() -> bool:
            last["r"] = podman.run("exec", "pod", "ping", "-c", "1", "-W", "1", "db", check=False)
            return last["r"].returncode == 0

        wait_until(pinged, "podman: ping db never succeeded", 30, interval=0.2,
                   detail=lambda: f"{last['r'].stdout}{last['r'].stderr}; {self.describe()}")
        self.assertIn(f"({db.ip})", last["r"].stdout)

    def test_d_netplugin_restart(self) -> None:
        """A killed netplugin comes back with its serving path (namespace and listeners
        made again; names resolve from the same containers)."""
        self.network("solo", "10.62.1.0/24")
        a = self.container(1, "a", "solo")
        b = self.container(2, "b", "solo")
        self.expect(a, "b", "10.62.1.254", "NOERROR", [b.ip])
        self.lab.restart_netplugin(self.lab.hosts[0].name)
        self.expect(a, "b", "10.62.1.254", "NOERROR", [b.ip], timeout=20)
        self.expect(a, EXTERNAL[0], "10.62.1.254", "NOERROR", [EXTERNAL[1]])

    def test_e_tenant_gone_and_a_new_one(self) -> None:
        """A removed tenant's listener goes (its VRF id, reused by the next tenant, serves
        that one)."""
        self.tenant("t3")
        self.network("n3", "10.64.1.0/24", tenant="t3")
        a = self.container(1, "a3", "n3", tenant="t3")
        b = self.container(2, "b3", "n3", tenant="t3")
        self.expect(a, "b3", "10.64.1.254", "NOERROR", [b.ip])
        for c in (a, b):
            self.lab.remove_container(c.netns)
        self.api("DELETE", "/api/v1/networks/t3:n3/")
        self.api("DELETE", "/api/v1/tenants/t3/")
        self.tenant("t4")
        self.network("n4", "10.64.1.0/24", tenant="t4")
        c = self.container(1, "c4", "n4", tenant="t4")
        d = self.container(2, "d4", "n4", tenant="t4")
        self.expect(c, "d4", "10.64.1.254", "NOERROR", [d.ip])
        self.expect(c, "b3", "10.64.1.254", "NXDOMAIN")
