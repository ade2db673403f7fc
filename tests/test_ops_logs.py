"""JSON-lines logs (``--log-json``) from a real netmaster: one JSON object per
line, refusals named briefly, and no password or token in either log."""

from __future__ import annotations

import http.client
import json
import os
import secrets

from twisted.trial import unittest

from contiv_sdn.testing import RedisServer
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.wait import wait_until


class JsonLogTests(unittest.TestCase):
    def setUp(self) -> None:
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def call(self, nm: NetmasterProcess, method: str, path: str, body: bytes = b"",
             headers: dict = None):
        conn = http.client.HTTPConnection("127.0.0.1", nm.port, timeout=30)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def test_json_lines_and_no_secrets(self) -> None:
        password = "pw-" + secrets.token_hex(12)
        nm = NetmasterProcess(redis_url=self.redis.url)
        pwfile = os.path.join(nm.state_dir, "admin.pw")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        os.chmod(pwfile, 0o600)
        jsonlog = os.path.join(nm.state_dir, "netmaster.jsonl")
        nm.extra_args += ["--log-json", jsonlog, "--auth", "--admin-password-file", pwfile]
        nm.start()
        self.addCleanup(nm.stop)

        status, body = self.call(nm, "POST", "/api/v1/auth_proxy/login/",
                                 json.dumps({"username": "admin", "password": password}).encode())
        self.assertEqual(status, 200, body)
        token = json.loads(body)["token"]
        auth = {"X-Auth-Token": token}
        status, _ = self.call(nm, "GET", "/api/v1/networks/", headers=auth)
        self.assertEqual(status, 200)
        # a refusal: a wrong type in a /plugin body
        status, text = self.call(nm, "POST", "/plugin/allocAddress", b'{"AddressPool":5}', auth)
        self.assertEqual(status, 500, text)
        status, _ = self.call(nm, "POST", "/api/v1/auth_proxy/login/",
                              json.dumps({"username": "admin", "password": "wrong"}).encode())
        self.assertEqual(status, 401)

        def events():
            with open(jsonlog, encoding="utf-8") as f:
                lines = [line for line in f.read().split("\n") if line.strip()]
            return [json.loads(line) for line in lines]  # every line one JSON object

        found = wait_until(lambda: [e for e in events() if "AddressAllocRequest" in
                                    json.dumps(e)], what="the refusal in the JSON log")
        self.assertTrue(all("log_level" in e and "log_namespace" in e for e in events()))
        self.assertIn("refused", found[0].get("log_format", ""))
        with open(jsonlog, encoding="utf-8") as f:
            everything = f.read() + nm.log_text()
        self.assertNotIn(password, everything)
        self.assertNotIn(token, everything)
