"""``python -m contiv_sdn.demo --secure`` (H13): the seed walkthrough on a secure lab.

The demo runs the seed's netctl lines verbatim; on a secure lab they reach an HTTPS
``--auth`` netmaster only with the lab's netctl environment (its URL, the CA that
verifies it, the home holding the lab's admin login).  Proved here: ``--secure`` asks
for a ``Lab(..., secure=True)`` (and its absence for a plain one), and the demo's
``netctl`` runs a seed line through a real HTTPS ``--auth`` netmaster with such an
environment, while the URL alone is refused with netctl's own text.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, List

from twisted.trial import unittest

from contiv_sdn import demo
from contiv_sdn.lab.core import LabError
from tests.test_sec_api import ADMIN_PASSWORD, Client, SecureNetmaster, _netctl, make_certs


class _RecordingLab:
    """Stands in for :class:`Lab` only to see how the demo builds it; its ``up`` fails
    the way a lab that cannot come up does, so the demo stops there."""

    made: List[dict] = []

    def __init__(self, **kw: Any):
        _RecordingLab.made.append(kw)

    def up(self) -> None:
        raise LabError("not brought up in this test")


class DemoFlagTests(unittest.TestCase):
    def run_main(self, *args: str) -> dict:
        _RecordingLab.made = []
        self.patch(demo, "Lab", _RecordingLab)
        self.patch(demo.os, "geteuid", lambda: 0)
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            self.assertEqual(demo.main(list(args)), 1)
        self.assertEqual(len(_RecordingLab.made), 1)
        return _RecordingLab.made[0]

    def test_secure_asks_for_a_secure_lab(self):
        self.assertIs(self.run_main("--secure")["secure"], True)
        self.assertIs(self.run_main()["secure"], False)


class DemoNetctlTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="demo-secure-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.certs = make_certs(self.dir)
        self.nm = SecureNetmaster(self.certs)
        self.addCleanup(self.nm.stop)
        self.nm.start()

    def test_seed_lines_run_with_the_labs_netctl_environment(self):
        home = os.path.join(self.dir, "netctl-home")
        os.makedirs(home, mode=0o700)
        env = {"NETMASTER": self.nm.url, "SSL_CERT_FILE": self.certs["ca"], "HOME": home}
        code, out, err = _netctl(home, "login", "--username", "admin",
                                 env=dict(env, NETCTL_PASSWORD=ADMIN_PASSWORD))
        self.assertEqual(code, 0, out + err)
        with redirect_stdout(io.StringIO()):
            demo.netctl(demo.SEED_NET, env)
        admin = Client(self.nm.port, ca=self.certs["ca"])
        self.assertEqual(admin.login("admin", ADMIN_PASSWORD)[0], 200)
        status, body, _ = admin.call("GET", "/api/v1/networks/default:contiv-net/")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["subnet"], "20.1.1.0/24")
        # the URL alone (what the demo passed before): refused, and the demo says so
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as stop:
            demo.netctl("netctl net ls", {"NETMASTER": self.nm.url, "HOME": home})
        self.assertIn("'netctl net ls' failed", str(stop.exception))
