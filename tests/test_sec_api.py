"""Security of the REST API and the embedded Redis, on real processes (issue 13).

A netmaster is started with ``--auth`` and ``--tls-cert/--tls-key`` (a CA and a
server certificate made here with ``cryptography``) and driven the way
Contiv's netctl drives its auth_proxy: HTTPS, ``POST
/api/v1/auth_proxy/login/`` with ``{"username","password"}``, then
``X-Auth-Token`` on every request.  Also: roles on every route family,
expired/revoked tokens, login throttling, the refusal to listen on a
non-loopback address without TLS and auth, and the embedded Redis refusing
clients without the netmaster's password.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
from typing import Dict, Optional, Tuple

from twisted.python import usage
from twisted.trial import unittest

from contiv_sdn.master import options
from contiv_sdn.master.options import NetmasterOptions
from contiv_sdn.testing import free_tcp_port, require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.wait import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_PASSWORD = "admin-secret-1"


def make_certs(directory: str, hosts=("127.0.0.1", "localhost")) -> Dict[str, str]:
    """A test CA and a server certificate for ``hosts`` signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("contiv-sdn test CA"))
          .issuer_name(name("contiv-sdn test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder().subject_name(name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: os.path.join(directory, n + ".pem") for n in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    return paths


class SecureNetmaster(NetmasterProcess):
    """A :class:`NetmasterProcess` serving HTTPS with ``--auth``: ready once
    ``/version`` answers at all (401 counts: it is up, and refuses)."""

    def __init__(self, certs: Dict[str, str], extra_args=(), **kw):
        self.certs = certs
        self.password_file = os.path.join(os.path.dirname(certs["ca"]), "admin.pw")
        with open(self.password_file, "w") as f:
            f.write(ADMIN_PASSWORD + "\n")
        super().__init__(extra_args=["--auth", "--tls-cert", certs["cert"], "--tls-key",
                                     certs["key"], "--admin-password-file",
                                     self.password_file, *extra_args], **kw)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "SecureNetmaster":
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        os.makedirs(self.state_dir, exist_ok=True)
        self.proc = subprocess.Popen(self.command(), cwd=self.state_dir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = Client(self.port, ca=self.certs["ca"])

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"netmaster exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            try:
                return client.call("GET", "/version")[0] in (200, 401)
            except (OSError, http.client.HTTPException):
                return False

        try:
            wait_until(up, "the TLS netmaster answering /version", timeout=timeout,
                       interval=0.05, detail=self.log_tail)
        except BaseException:
            self.kill()
            raise
        return self


class Client:
    """A minimal HTTPS client doing what Contiv's netctl/contivmodel client does."""

    def __init__(self, port: int, ca: Optional[str] = None, insecure: bool = False):
        self.port = port
        if insecure:
            self.ctx = ssl._create_unverified_context()
        else:
            self.ctx = ssl.create_default_context(cafile=ca)
        self.token: Optional[str] = None

    def call(self, method: str, path: str, body=None, token: Optional[str] = "self",
             raw: Optional[bytes] = None) -> Tuple[int, bytes, Dict[str, str]]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                           timeout=30)
        headers = {}
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            headers["Content-Type"] = "application/json"
        tok = self.token if token == "self" else token
        if tok:
            headers["X-Auth-Token"] = tok
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    def login(self, user: str, password: str) -> Tuple[int, bytes]:
        status, body, _ = self.call("POST", "/api/v1/auth_proxy/login/",
                                    {"username": user, "password": password}, token=None)
        if status == 200:
            self.token = json.loads(body)["token"]
        return status, body


# Every route family, with a request an admin may make (status not 401/403).
ROUTES = [
    ("GET", "/api/v1/tenants/", None),
    ("GET", "/api/v1/tenants/default/", None),
    ("GET", "/api/v1/inspect/tenants/default/", None),
    ("GET", "/version", None),
    ("GET", "/info", None),
    ("GET", "/services", None),
    ("GET", "/service/nosuch", None),
    ("GET", "/debug/ofnet", None),
    ("POST", "/api/v1/tenants/sec-t1/", {"tenantName": "sec-t1"}),
    ("PUT", "/api/v1/tenants/sec-t1/", {"tenantName": "sec-t1"}),
    ("DELETE", "/api/v1/tenants/sec-none/", None),
    ("POST", "/plugin/allocAddress", {"NetworkID": "nosuch.default"}),
    ("POST", "/plugin/releaseAddress", {"NetworkID": "nosuch.default"}),
    ("POST", "/plugin/createEndpoint", {"TenantName": "default"}),
    ("POST", "/plugin/deleteEndpoint", {"TenantName": "default"}),
    ("POST", "/plugin/updateEndpoint", {}),
    ("POST", "/plugin/registerHost", {"name": ""}),
    ("DELETE", "/debug/epcleanup/tenant/default/x/y", None),
    ("GET", "/api/v1/auth_proxy/local_users/", None),
    ("POST", "/api/v1/auth_proxy/local_users/", {"username": "sec-x", "password": "short"}),
    ("GET", "/api/v1/auth_proxy/local_users/admin/", None),
    ("PATCH", "/api/v1/auth_proxy/local_users/nosuch/", {"role": "ops"}),
    ("DELETE", "/api/v1/auth_proxy/local_users/nosuch/", None),
]
READS = {(m, p) for m, p, _ in ROUTES
         if m == "GET" and not p.startswith("/api/v1/auth_proxy/local_users")}


def _netctl(home: str, *args: str, stdin: str = "", env: Optional[dict] = None):
    e = dict(os.environ, HOME=home, PYTHONPATH=ROOT)
    e.pop("NETMASTER", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "contiv_sdn.netctl.main", *args], input=stdin,
                       capture_output=True, text=True, env=e, timeout=60)
    return p.returncode, p.stdout, p.stderr


class SecureAPITests(unittest.TestCase):
    """An HTTPS netmaster with --auth per test."""

    extra_args: tuple = ()

    def setUp(self):
        require_binary("redis-server", "redis-cli")
        self.dir = tempfile.mkdtemp(prefix="contiv-sec-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.certs = make_certs(self.dir)
        self.nm = SecureNetmaster(self.certs, extra_args=self.extra_args)
        self.addCleanup(self.nm.stop)
        self.nm.start()

    def admin(self) -> Client:
        c = Client(self.nm.port, ca=self.certs["ca"])
        status, body = c.login("admin", ADMIN_PASSWORD)
        self.assertEqual(status, 200, body)
        return c

    def add_user(self, name: str, role: str, password: str = "user-pass-123") -> Client:
        status, body, _ = self.admin().call("POST", "/api/v1/auth_proxy/local_users/",
                                            {"username": name, "password": password,
                                             "role": role})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"username": name, "role": role})
        c = Client(self.nm.port, ca=self.certs["ca"])
        self.assertEqual(c.login(name, password)[0], 200)
        return c

    # -- Contiv's protocol ----------------------------------------------------
    def test_contiv_login_protocol(self):
        """Exactly the auth_proxy exchange: the reply is {"token": ...}; the token in
        X-Auth-Token opens the API; the certificate verifies against the test CA."""
        c = Client(self.nm.port, ca=self.certs["ca"])
        status, body = c.login("admin", ADMIN_PASSWORD)
        self.assertEqual(status, 200)
        reply = json.loads(body)
        self.assertEqual(list(reply), ["token"])
        self.assertGreaterEqual(len(reply["token"]), 40)
        status, body, _ = c.call("GET", "/api/v1/tenants/")
        self.assertEqual(status, 200, body)
        self.assertIn("default", [t["tenantName"] for t in json.loads(body)])

    def test_netctl_login_and_token_file(self):
        """Our netctl as Contiv's: https URL, --insecure, login from stdin, the token
        kept in ~/.netctl/config.json (0600) and sent on later commands."""
        home = tempfile.mkdtemp(dir=self.dir)
        url = self.nm.url
        code, out, err = _netctl(home, "--netmaster", url, "--insecure", "tenant", "ls")
        self.assertEqual(code, 3, out + err)  # no token: refused, saying what to do
        self.assertIn("401 Unauthorized", err)
        self.assertIn("login", err)
        code, out, err = _netctl(home, "--netmaster", url, "login",
                                 stdin=f"admin\n{ADMIN_PASSWORD}\n")
        self.assertNotEqual(code, 0, "an unverifiable certificate must need --insecure")
        self.assertIn("--insecure", out + err)
        code, out, err = _netctl(home, "--netmaster", url, "--insecure", "login",
                                 stdin=f"admin\n{ADMIN_PASSWORD}\n")
        self.assertEqual(code, 0, out + err)
        self.assertIn("Login succeeded.", out)
        path = os.path.join(home, ".netctl", "config.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertIn("token", json.load(f))
        code, out, err = _netctl(home, "--netmaster", url, "--insecure", "tenant", "create",
                                 "sec-netctl")
        self.assertEqual(code, 0, out + err)
        code, out, err = _netctl(home, "--netmaster", url, "--insecure", "tenant", "ls", "-q")
        self.assertEqual(code, 0, out + err)
        self.assertIn("sec-netctl", out.split())
        # scripted login: --username and the password from the environment
        code, out, err = _netctl(home, "--netmaster", url, "--insecure", "login",
                                 "--username", "admin",
                                 env={"NETCTL_PASSWORD": ADMIN_PASSWORD})
        self.assertEqual(code, 0, out + err)

    def test_netctl_user_commands(self):
        """`netctl user add/ls/rm` through the API, as admin; ops may not."""
        home = tempfile.mkdtemp(dir=self.dir)
        url = ["--netmaster", self.nm.url, "--insecure"]
        _netctl(home, *url, "login", stdin=f"admin\n{ADMIN_PASSWORD}\n")
        code, out, err = _netctl(home, *url, "user", "add", "--role", "ops", "sec-cli",
                                 env={"NETCTL_PASSWORD": "cli-pass-123"})
        self.assertEqual(code, 0, out + err)
        code, out, err = _netctl(home, *url, "user", "ls")
        self.assertEqual(code, 0, out + err)
        self.assertIn(("sec-cli", "ops"), [tuple(line.split()) for line in out.splitlines()])
        ops_home = tempfile.mkdtemp(dir=self.dir)
        code, out, err = _netctl(ops_home, *url, "login", "--username", "sec-cli",
                                 env={"NETCTL_PASSWORD": "cli-pass-123"})
        self.assertEqual(code, 0, out + err)
        code, out, err = _netctl(ops_home, *url, "tenant", "create", "sec-ops-t")
        self.assertEqual(code, 3, out + err)
        self.assertIn("Access denied!", err)
        code, out, err = _netctl(home, *url, "user", "rm", "sec-cli")
        self.assertEqual(code, 0, out + err)
        code, out, err = _netctl(ops_home, *url, "tenant", "ls")
        self.assertEqual(code, 3, out + err)  # its token died with the user
        self.assertIn("log in", err)

    # -- 401 / 403 ------------------------------------------------------------
    def test_no_token_or_bad_token_is_401_on_every_route(self):
        c = Client(self.nm.port, ca=self.certs["ca"])
        for token in (None, "not-a-token", ""):
            for method, path, body in ROUTES + [("GET", "/no/such/path", None)]:
                status, text, _ = c.call(method, path, body, token=token)
                self.assertEqual(status, 401, (method, path, token, text))
                self.assertIn(b"X-Auth-Token", text)

    def test_admin_may_use_every_route(self):
        c = self.admin()
        for method, path, body in ROUTES:
            status, text, _ = c.call(method, path, body)
            self.assertNotIn(status, (401, 403), (method, path, text))
        # an unknown path is 404 once authenticated
        self.assertEqual(c.call("GET", "/no/such/path")[0], 404)

    def test_ops_reads_only(self):
        ops = self.add_user("sec-ops", "ops")
        for method, path, body in ROUTES:
            status, text, _ = ops.call(method, path, body)
            if (method, path) in READS:
                self.assertNotIn(status, (401, 403), (method, path, text))
            else:
                self.assertEqual(status, 403, (method, path, text))
                self.assertIn(b"may not", text)
        # nothing was written by the refused requests
        status, body, _ = self.admin().call("GET", "/api/v1/tenants/")
        self.assertNotIn("sec-ops-t", body.decode())

    # -- revocation -----------------------------------------------------------
    def test_logout_revokes_the_token(self):
        c = self.admin()
        token = c.token
        self.assertEqual(c.call("POST", "/api/v1/auth_proxy/logout/")[0], 200)
        status, text, _ = c.call("GET", "/api/v1/tenants/", token=token)
        self.assertEqual(status, 401)
        self.assertIn(b"expired or revoked", text)

    def test_password_change_and_removal_revoke_tokens(self):
        user = self.add_user("sec-rev", "admin")
        old = user.token
        a = self.admin()
        status, body, _ = a.call("PATCH", "/api/v1/auth_proxy/local_users/sec-rev/",
                                 {"password": "new-pass-456"})
        self.assertEqual(status, 200, body)
        self.assertEqual(user.call("GET", "/version", token=old)[0], 401)
        self.assertEqual(user.login("sec-rev", "user-pass-123")[0], 401)
        self.assertEqual(user.login("sec-rev", "new-pass-456")[0], 200)
        self.assertEqual(user.call("GET", "/version")[0], 200)
        self.assertEqual(a.call("DELETE", "/api/v1/auth_proxy/local_users/sec-rev/")[0], 200)
        self.assertEqual(user.call("GET", "/version")[0], 401)

    def test_the_last_admin_cannot_be_removed(self):
        a = self.admin()
        status, body, _ = a.call("GET", "/api/v1/auth_proxy/local_users/")
        admins = [u["username"] for u in json.loads(body) if u["role"] == "admin"]
        for name in admins:
            if name != "admin":
                a.call("DELETE", f"/api/v1/auth_proxy/local_users/{name}/")
        status, body, _ = a.call("DELETE", "/api/v1/auth_proxy/local_users/admin/")
        self.assertEqual(status, 409, body)
        self.assertIn(b"last admin", body)

    def test_bad_requests_are_refused_with_a_reason(self):
        a = self.admin()
        for body, why in (({"username": "bad name", "password": "long-enough-1"}, b"invalid user"),
                          ({"username": "ok", "password": "short"}, b"password must be"),
                          ({"username": "ok2", "password": "long-enough-1", "role": "root"},
                           b"invalid role")):
            status, text, _ = a.call("POST", "/api/v1/auth_proxy/local_users/", body)
            self.assertEqual(status, 400, text)
            self.assertIn(why, text)
        status, text, _ = a.call("POST", "/api/v1/auth_proxy/login/", raw=b'{"username": 1}',
                                 token=None)
        self.assertEqual(status, 400)
        self.assertIn(b"cannot unmarshal number", text)

    def test_password_stored_as_salted_scrypt(self):
        out = subprocess.run(["redis-cli", "-s", os.path.join(self.nm.state_dir, "redis.sock"),
                              "HGET", "contiv:auth:users", "admin"], capture_output=True,
                             text=True, timeout=10).stdout
        record = json.loads(out)
        self.assertTrue(record["hash"].startswith("scrypt$15$8$1$"), record)
        self.assertNotIn(ADMIN_PASSWORD, out)


class TokenLifetimeAndThrottleTests(unittest.TestCase):
    """A netmaster with 1 s tokens and 2 free failed logins."""

    extra_args = ("--token-ttl", "1", "--login-max-failures", "2", "--login-lockout", "0.5")
    setUp = SecureAPITests.setUp

    def test_expired_token_is_401(self):
        c = Client(self.nm.port, ca=self.certs["ca"])
        self.assertEqual(c.login("admin", ADMIN_PASSWORD)[0], 200)
        token = c.token
        wait_until(lambda: c.call("GET", "/version", token=token)[0] == 401,
                   "the 1-second token to expire", timeout=20)
        status, text, _ = c.call("GET", "/api/v1/tenants/", token=token)
        self.assertEqual(status, 401)

    def test_failed_logins_are_throttled(self):
        c = Client(self.nm.port, ca=self.certs["ca"])
        for _ in range(2):  # free failures
            self.assertEqual(c.login("admin", "wrong-password")[0], 401)
        self.assertEqual(c.login("admin", "wrong-password")[0], 401)  # starts a lockout
        status, text, headers = c.call("POST", "/api/v1/auth_proxy/login/",
                                       {"username": "admin", "password": ADMIN_PASSWORD},
                                       token=None)
        self.assertEqual(status, 429, text)  # even the right password, while locked out
        self.assertGreaterEqual(int(headers["retry-after"]), 1)
        self.assertIn(b"too many failed logins", text)
        # the lockout ends by itself
        wait_until(lambda: c.login("admin", ADMIN_PASSWORD)[0] == 200,
                   "the login lockout to end", timeout=30, interval=0.3)


class InsecureListenTests(unittest.TestCase):
    """Loopback by default; anything else needs TLS and --auth, or --insecure."""

    def test_default_is_loopback(self):
        o = NetmasterOptions()
        o.parseOptions([])
        self.assertEqual(o["listen-endpoint"], "tcp:9999:interface=127.0.0.1")

    def test_refusal_names_what_is_missing(self):
        self.patch(options, "REFUSE_INSECURE_LISTEN", True)
        for argv, missing in ((["--listen", "tcp:9999"], "TLS"),
                              (["--listen", "0.0.0.0:9999", "--auth"], "TLS"),
                              (["--listen", "10.1.2.3:9999"], "--auth")):
            with self.assertRaises(usage.UsageError) as cm:
                NetmasterOptions().parseOptions(argv)
            self.assertIn("refusing to serve the REST API", str(cm.exception))
            self.assertIn(missing, str(cm.exception))
            self.assertIn("--insecure", str(cm.exception))
        for ok in (["--listen", "tcp:9999", "--insecure"], ["--listen", "[::1]:9999"],
                   ["--listen", "unix:/tmp/x.sock"]):
            NetmasterOptions().parseOptions(ok)

    def test_with_the_switch_off_an_exposed_listen_is_a_warning(self):
        """With REFUSE_INSECURE_LISTEN off the refusal's text is logged as a warning."""
        self.patch(options, "REFUSE_INSECURE_LISTEN", False)
        o = NetmasterOptions()
        o.parseOptions(["--listen", "tcp:9999"])
        self.assertIn("refusing to serve the REST API", o["insecure-listen"])
        o = NetmasterOptions()
        o.parseOptions(["--listen", "tcp:9999", "--insecure"])
        self.assertIsNone(o["insecure-listen"])

    def test_process_warns_for_an_exposed_listen(self):
        require_binary("redis-server")
        port = free_tcp_port()
        nm = NetmasterProcess(extra_args=["--listen", f"tcp:{port}"], port=port)
        self.addCleanup(nm.stop)
        if options.REFUSE_INSECURE_LISTEN:
            proc = subprocess.run(nm.command(), capture_output=True, text=True, timeout=60,
                                  env=dict(os.environ, PYTHONPATH=ROOT), cwd=nm.state_dir)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("refusing to serve the REST API", proc.stdout + proc.stderr)
        else:
            nm.start()
            self.assertIn("refusing to serve the REST API", nm.log_text())
            nm.stop(remove=False)
        nm.extra_args.append("--insecure")
        nm.start()
        self.assertIn("INSECURE: the REST API listens on", nm.log_text().split(
            "refusing to serve")[-1])


class RedisAuthTests(unittest.TestCase):
    """--redis-auth: the embedded redis-server refuses clients without a password."""

    def setUp(self):
        require_binary("redis-server", "redis-cli")
        self.nm = NetmasterProcess(extra_args=["--redis-auth"]).start()
        self.addCleanup(self.nm.stop)
        self.sock = os.path.join(self.nm.state_dir, "redis.sock")

    def cli(self, *args: str) -> str:
        p = subprocess.run(["redis-cli", "-s", self.sock, *args], capture_output=True,
                           text=True, timeout=10)
        return (p.stdout + p.stderr).strip()

    def test_embedded_redis_requires_the_password(self):
        # the netmaster itself works through its credential
        import urllib.request
        req = urllib.request.Request(self.nm.url + "/api/v1/tenants/sec-r/", method="POST",
                                     data=b'{"tenantName":"sec-r"}')
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
        self.assertIn("NOAUTH", self.cli("HGETALL", "contiv:obj:tenant"))
        path = os.path.join(self.nm.state_dir, "redis.auth")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.nm.state_dir,
                                                           "redis.acl")).st_mode), 0o600)
        with open(path) as f:
            creds = json.load(f)
        self.assertIn("NOAUTH", self.cli("--user", "netmaster", "--pass", "nope",
                                         "--no-auth-warning", "PING"))
        nm = ["--user", "netmaster", "--pass", creds["netmaster"], "--no-auth-warning"]
        self.assertIn("sec-r", self.cli(*nm, "HKEYS", "contiv:obj:tenant"))
        # the agent user reads, and may not write (not even through a script)
        ag = ["--user", "agent", "--pass", creds["agent"], "--no-auth-warning"]
        self.assertIn("sec-r", self.cli(*ag, "HKEYS", "contiv:obj:tenant"))
        self.assertIn("NOPERM", self.cli(*ag, "SET", "contiv:x", "1"))
        self.assertIn("can't run this command", self.cli(
            *ag, "EVAL", "return redis.call('SET','contiv:x','1')", "0"))
        self.assertEqual(self.cli(*nm, "EXISTS", "contiv:x"), "0")
        # the password is not on the redis-server's command line
        with open(f"/proc/{self.nm.redis_pid()}/cmdline", "rb") as f:
            self.assertNotIn(creds["netmaster"].encode(), f.read())

    def test_restart_keeps_the_credentials(self):
        with open(os.path.join(self.nm.state_dir, "redis.auth")) as f:
            before = f.read()
        self.nm.stop(remove=False)
        self.nm.start()
        with open(os.path.join(self.nm.state_dir, "redis.auth")) as f:
            self.assertEqual(f.read(), before)
        self.assertIn("NOAUTH", self.cli("PING"))
