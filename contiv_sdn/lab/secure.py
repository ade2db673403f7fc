"""The lab's secure mode (``lab up --secure``): every channel authenticated.

What it turns on, with secrets the lab makes itself under ``<root>``:

* REST: netmaster serves HTTPS (a certificate from the lab's CA, ``pki/``) with
  ``--auth``; the first ``admin`` user's password is generated into
  ``<root>/admin.password`` (0600), and the lab logs ``netctl`` in with it
  (``HOME=<root>/netctl``: its token file), so the lab's and the tests' netctl
  lines run as they are;
* agents: one ``node`` user per host (named after it, password in
  ``<host dir>/netmaster.password``, 0600), used by netplugin's
  ``--netmaster-user/--netmaster-password-file/--netmaster-ca``;
* OpenFlow: netmaster's switch listener is TLS requiring a certificate from the
  lab's CA (``--ofp-tls-*``); each host's OVS gets its own switch certificate
  (``pki/switch-<host>``) through netplugin's ``--ofp-tls-*``;
* Redis: the embedded server with ACL users (``--redis-auth``); netplugin reads
  it as the read-only ``agent`` user.

Why a module of its own: the lab core only asks "which extra arguments" and
"how do I call netmaster"; everything about keys and passwords stays here.  The
lab root is made 0700 in this mode, as the state file holds command lines.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from contiv_sdn.lab.pki import CertificateAuthority, Issued

ADMIN_USER = "admin"


def netctl_argv(python: str) -> List[str]:
    """The ``netctl`` of the lab's Python environment (its console script, else the module)."""
    script = os.path.join(os.path.dirname(python), "netctl")
    if os.access(script, os.X_OK):
        return [script]
    return [python, "-c", "import sys; from contiv_sdn.netctl.main import main; sys.exit(main())"]


def _secret_file(path: str) -> str:
    """A generated password in ``path`` (0600), made once and then kept."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18) + "\n")
    with open(path) as f:
        return f.readline().strip()


class LabSecurity:
    """The secrets of one secure lab and the arguments that use them."""

    def __init__(self, root: str, gateway: str):
        self.root = root
        self.gateway = gateway
        self.ca = CertificateAuthority(os.path.join(root, "pki"))

    # -- files ----------------------------------------------------------------
    @property
    def ca_cert(self) -> str:
        return self.ca.cert_path

    @property
    def admin_password_file(self) -> str:
        return os.path.join(self.root, "admin.password")

    @property
    def netctl_home(self) -> str:
        """``HOME`` of the lab's netctl: its ``.netctl/config.json`` holds the admin token."""
        return os.path.join(self.root, "netctl")

    def node_password_file(self, host_dir: str) -> str:
        return os.path.join(host_dir, "netmaster.password")

    def prepare(self) -> None:
        """CA, netmaster's certificate (REST and OpenFlow), the admin password."""
        os.chmod(self.root, 0o700)
        self.ca.ensure()
        self.server()
        _secret_file(self.admin_password_file)

    def server(self) -> Issued:
        return self.ca.issue("netmaster", "netmaster", ["127.0.0.1", "localhost", self.gateway],
                             server=True)

    def switch(self, host: str) -> Issued:
        return self.ca.issue(f"switch-{host}", host, client=True)

    # -- arguments ----------------------------------------------------------------
    def netmaster_args(self) -> List[Tuple[str, Optional[str]]]:
        """(option, value) pairs for twistd netmaster; value None: a flag."""
        s = self.server()
        return [("tls-cert", s.cert), ("tls-key", s.key), ("auth", None),
                ("admin-password-file", self.admin_password_file), ("redis-auth", None),
                ("ofp-tls-cert", s.cert), ("ofp-tls-key", s.key), ("ofp-tls-ca", self.ca_cert)]

    def netplugin_args(self, host: str, host_dir: str) -> List[Tuple[str, Optional[str]]]:
        sw = self.switch(host)
        return [("netmaster-user", host),
                ("netmaster-password-file", self.node_password_file(host_dir)),
                ("netmaster-ca", self.ca_cert),
                ("ofp-tls-cert", sw.cert), ("ofp-tls-key", sw.key), ("ofp-tls-ca", self.ca_cert)]

    def agent_redis_url(self, state_dir: str, socket: str) -> str:
        """The read-only ``agent`` user's URL of the embedded Redis (its password is in
        ``redis.auth``, which netmaster wrote at its start)."""
        from urllib.parse import quote
        with open(os.path.join(state_dir, "redis.auth")) as f:
            password = json.load(f)["agent"]
        return f"unix://agent:{quote(password, safe='')}@{socket}"

    # -- netctl (the user's way, for the lab and its tests) ------------------------
    def netctl_env(self, url: str) -> Dict[str, str]:
        """What netctl needs to talk to this lab's netmaster: its URL, the CA that
        verifies it (``SSL_CERT_FILE``), and the home whose token file ``login`` wrote."""
        return {"NETMASTER": url, "SSL_CERT_FILE": self.ca_cert, "HOME": self.netctl_home}

    def netctl(self, argv: List[str], url: str, *args: str,
               password: Optional[str] = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, **self.netctl_env(url))
        if password is not None:
            env["NETCTL_PASSWORD"] = password
        return subprocess.run(argv + list(args), env=env, capture_output=True, text=True,
                              timeout=60)

    def login(self, argv: List[str], url: str) -> None:
        """``netctl login`` as admin, so later netctl calls carry its token."""
        os.makedirs(self.netctl_home, mode=0o700, exist_ok=True)
        res = self.netctl(argv, url, "login", "--username", ADMIN_USER,
                          password=_secret_file(self.admin_password_file))
        if res.returncode != 0:
            raise RuntimeError(f"netctl login as {ADMIN_USER} failed: {res.stdout}{res.stderr}")

    def add_node_user(self, argv: List[str], url: str, host: str, host_dir: str) -> None:
        """The host's ``node`` user (made, or its password set again: the file wins)."""
        password = _secret_file(self.node_password_file(host_dir))
        res = self.netctl(argv, url, "user", "add", "--role", "node", host, password=password)
        if res.returncode != 0:
            res = self.netctl(argv, url, "user", "set", "--role", "node", "--password", host,
                              password=password)
        if res.returncode != 0:
            raise RuntimeError(f"netctl user add {host} --role node failed: "
                               f"{res.stdout}{res.stderr}")

    def token(self) -> Optional[str]:
        """The admin token ``login`` stored (for the lab's own REST calls)."""
        try:
            with open(os.path.join(self.netctl_home, ".netctl", "config.json")) as f:
                token = json.load(f).get("token")
        except (OSError, ValueError):
            return None
        return token if isinstance(token, str) else None

    def http_kwargs(self, url: str) -> Dict[str, Any]:
        """Keyword arguments of :func:`contiv_sdn.lab.http.request` for netmaster."""
        return {"base_url": url, "ca": self.ca_cert, "token": self.token()}
