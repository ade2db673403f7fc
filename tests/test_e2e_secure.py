"""``lab up --secure`` (issue 13): the seed walkthrough with every channel authenticated.

The lab makes its CA and certificates, netmaster serves HTTPS with ``--auth`` and
``--redis-auth`` and takes switches over TLS only, each netplugin logs in as its
host's ``node`` user and reads Redis as the read-only ``agent``, each OVS has its
own switch certificate.  The seed's netctl lines run as a user types them (netctl
logged in by the lab), the seed's ``docker run`` lines attach containers through each
host's dockerd and the netplugin's Docker driver (which calls the netmaster with its
host's node credential), a container attached through the netplugin's local API (as
contiv-cni does) joins them, and they ping across hosts: everything works with nothing
in clear.  Then what must
not work: an unauthenticated REST call is 401, plain HTTP gets no API, Redis
without a password refuses, and a switch without a certificate is refused by the
OpenFlow listener (its refusal in netmaster's log).
"""

from __future__ import annotations

import os
import shlex
import socket
import ssl
import subprocess

from contiv_sdn.demo import SEED_NET, SEED_POLICY  # the seed's lines, as `make demo` runs them
from contiv_sdn.lab import http
from contiv_sdn.testing import require_binary
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase, wait_ping


class SecureLabTests(E2ETestCase):
    lab_letter = "s"
    lab_subnet = "192.168.72.0/24"
    lab_secure = True
    lab_docker = True

    def setUp(self) -> None:
        require_binary("redis-cli", "dockerd", "docker", "nsenter")
        super().setUp()

    def seed(self, line: str) -> None:
        """One of the seed README's lines, as the user types it (netctl parses it)."""
        self.netctl(*shlex.split(line)[1:])

    def test_a_seed_walkthrough_pings_across_hosts(self) -> None:
        self.seed(SEED_NET)
        self.addCleanup(self._quietly, "DELETE", "/api/v1/networks/default:contiv-net/")
        for line in SEED_POLICY:
            self.seed(line)
        self.addCleanup(self._quietly, "DELETE", "/api/v1/policys/default:prod_web/")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/endpointGroups/default:web/")
        # the seed's `docker run -itd --name=db --net=contiv-net` and `... --name=web1
        # --net web.contiv-net` (busybox:local stands in for ubuntu: no registry here)
        db = self.docker_container(2, "db", "contiv-net")
        web1 = self.docker_container(1, "web1", "web.contiv-net")
        # and one through the netplugin's local API (contiv-cni's path)
        app = self.lab.add_container(self.lab.hosts[0].name, "app", "contiv-net")
        self.addCleanup(self._remove_container, app)
        wait_ping(web1, db)
        wait_ping(db, web1)
        wait_ping(app, db)
        # the driver's records are the netmaster's: each names its docker host
        for c, host in ((db, self.lab.hosts[1].name), (web1, self.lab.hosts[0].name)):
            eps = [e for e in self.api("GET", "/api/v1/inspect/networks/default:contiv-net/")
                   ["Oper"].get("endpoints", []) if e.get("ipAddress", [""])[0] == c.ip]
            self.assertEqual([e.get("homingHost") for e in eps], [host], eps)

    def test_b_every_switch_speaks_tls_to_netmaster(self) -> None:
        pki = os.path.join(self.lab.root, "pki")
        for h in self.lab.hosts:
            target = h.ovs.vsctl("get-controller", "br-int").strip()
            self.assertTrue(target.startswith("ssl:"), f"{h.name}: {target}")
            wait_until(lambda: all(h.controllers().values()), f"{h.name}: controller connected",
                       timeout=30, interval=0.2)
            ssl_conf = h.ovs.vsctl("get-ssl")
            self.assertIn(os.path.join(pki, f"switch-{h.name}.pem"), ssl_conf)
            self.assertIn(os.path.join(pki, "ca.pem"), ssl_conf)
        for name in os.listdir(pki):
            if name.endswith(".key"):
                mode = os.stat(os.path.join(pki, name)).st_mode & 0o777
                self.assertEqual(mode, 0o600, name)
        self.assertEqual(os.stat(self.lab.security.admin_password_file).st_mode & 0o777, 0o600)

    def test_c_unauthenticated_rest_is_refused(self) -> None:
        kw = self.lab.netmaster_http()
        status, body = http.request("GET", "/api/v1/networks/", base_url=kw["base_url"],
                                    ca=kw["ca"], timeout=10)
        self.assertEqual(status, 401, body)
        status, _ = http.request("GET", "/api/v1/networks/", timeout=10, **kw)
        self.assertEqual(status, 200)
        # the same port in clear: no API there (TLS only)
        plain = kw["base_url"].replace("https://", "http://")
        try:
            status, _ = http.request("GET", "/api/v1/networks/", base_url=plain, timeout=10)
        except OSError:
            status = None
        self.assertNotEqual(status, 200)

    def test_d_redis_without_a_password_refuses(self) -> None:
        res = subprocess.run(["redis-cli", "-s", self.lab.redis_socket, "ping"],
                             capture_output=True, text=True, timeout=10)
        self.assertNotIn("PONG", res.stdout)
        self.assertIn("NOAUTH", res.stdout + res.stderr)

    def test_e_a_switch_without_a_certificate_is_refused(self) -> None:
        """A TLS client without a certificate (it trusts our CA) gets no session at the
        OpenFlow port, and netmaster's log says so."""
        ctx = ssl.create_default_context(cafile=self.lab.security.ca_cert)
        ctx.check_hostname = False
        addr = (self.lab.subnet.gateway, self.lab.config.ofp_port)
        refused = False
        with socket.create_connection(addr, timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw) as tls:
                    # TLS 1.3: the server's refusal arrives after the client's finished
                    tls.settimeout(10)
                    refused = tls.recv(1) == b""
            except (ssl.SSLError, ConnectionResetError):
                refused = True
        self.assertTrue(refused)
        log = self.lab.services["netmaster"].logfile
        wait_until(lambda: "refused switch at" in open(log).read(),
                   "the refusal in netmaster's log", timeout=10, interval=0.2)
