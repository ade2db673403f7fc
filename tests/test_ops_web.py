"""The web view in a real headless Chromium, against a lab with the seed walkthrough applied.

Real everything but dockerd: Redis, ``twistd netmaster`` with its OpenFlow
controller, two hosts each with its own OVS and netplugin; the seed's network,
``prod_web`` policy, its three rules and the ``web`` group are made with
``netctl`` exactly as the walkthrough types them, and its containers are lab
containers (network namespaces whose endpoints the hosts' netplugins make, the
same ``/plugin/createEndpoint`` path ``docker run`` takes).  A lab with dockerds
(``lab_docker``) costs a dockerd start and an image load per host for the same
endpoints, so it is left to the e2e policy tests.

The browser is Debian's ``chromium`` driven through Debian's ``chromedriver``
by Selenium (no browser download).  The page is loaded once; every later check
waits for what the page shows, and the endpoint created after the load must
appear without a reload (the test asserts the page was never reloaded).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from typing import Any, List

from twisted.trial.unittest import SynchronousTestCase

from tests.test_e2e_fixtures import E2ETestCase, wait_connected
from contiv_sdn.testing import require, require_binary
from contiv_sdn.testing.wait import wait_until

SEED = [
    "net create contiv-net --subnet=20.1.1.0/24 --gateway=20.1.1.254 --pkt-tag=1001",
    "policy create prod_web",
    "policy rule-add prod_web 1 -direction=in -protocol=tcp -action=deny",
    "policy rule-add prod_web 2 -direction=in -protocol=tcp -port=80 -action=allow -priority=10",
    "policy rule-add prod_web 3 -direction=in -protocol=tcp -port=443 -action=allow -priority=10",
    "group create contiv-net web -policy=prod_web",
]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,2000")


def browser(profile: str) -> Any:
    """A headless Chromium with a fresh profile, driven by Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


class WebViewTests(E2ETestCase):
    lab_letter = "w"
    lab_hosts = 2
    lab_subnet = "192.168.67.0/24"

    def setUp(self) -> None:
        require_binary("chromium", "chromedriver")
        try:
            import selenium  # noqa: F401
        except ImportError:
            require(False, "needs selenium (pip install -e '.[test]')")
        super().setUp()
        for line in SEED:
            self.netctl(*line.split())
        self.addCleanup(self._quietly, "DELETE", "/api/v1/endpointGroups/default:web/")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/rules/default:prod_web:1/")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/rules/default:prod_web:2/")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/rules/default:prod_web:3/")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/policys/default:prod_web/")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/networks/default:contiv-net/")
        profile = tempfile.mkdtemp(prefix="contiv-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        self.driver = browser(profile)
        self.addCleanup(self.driver.quit)

    # -- reading the page --------------------------------------------------------
    def css(self, selector: str) -> List[Any]:
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def texts(self, selector: str) -> List[str]:
        return [e.text for e in self.css(selector)]

    def wait_shown(self, selector: str, what: str, timeout: float = 30.0) -> List[Any]:
        found: List[Any] = []

        def shown() -> bool:
            found[:] = self.css(selector)
            return bool(found)

        wait_until(shown, f"the page never showed {what} ({selector})", timeout, interval=0.2,
                   detail=lambda: self.css("main")[0].text[:3000] if self.css("main") else "")
        return found

    def group_endpoint(self, container: str) -> str:
        return (f'[data-tenant="default"] [data-network="contiv-net"] [data-group="web"] '
                f'tr[data-container="{container}"]')

    def add(self, host: int, name: str, group: str = "") -> Any:
        """A lab container (its endpoint made by the host's netplugin), removed at cleanup."""
        c = self.lab.add_container(self.lab.hosts[host - 1].name, name, "contiv-net",
                                   group=group or None)
        self.addCleanup(self._remove_container, c)
        return c

    def test_fabric_shown_and_live(self):
        wait_connected(self.lab)
        web1 = self.add(1, "web1", "web")
        db = self.add(2, "db")
        self.driver.get(self.lab.netmaster_url + "/web/")
        self.driver.execute_script("window.__loadedOnce = true;")

        # tenants, networks, the web group and its endpoint, the prod_web rules
        self.wait_shown('[data-tenant="default"]', "the default tenant")
        net = self.wait_shown('[data-tenant="default"] [data-network="contiv-net"]',
                              "the seed network")[0]
        self.assertIn("20.1.1.0/24", net.text)
        self.assertIn("tag 1001", net.text)
        group = self.wait_shown('[data-network="contiv-net"] [data-group="web"]',
                                "the web group")[0]
        self.assertIn("prod_web", group.text)
        row = self.wait_shown(self.group_endpoint("web1"), "web1 in group web")[0]
        self.assertIn(web1.ip, row.text)
        self.assertIn(self.lab.hosts[0].name, row.text)
        self.assertIn("web1", row.text)
        # db is in the network, outside any group
        db_row = self.wait_shown(f'[data-network="contiv-net"] > table '
                                 f'tr[data-container="db"]', "db")[0]
        self.assertIn(db.ip, db_row.text)
        rules = self.wait_shown('[data-policy="prod_web"] tr[data-rule]', "the prod_web rules")
        by_id = {r.get_attribute("data-rule"): r.text.split() for r in rules}
        self.assertEqual(sorted(by_id), ["1", "2", "3"])
        self.assertEqual(by_id["1"], ["1", "1", "in", "tcp", "any", "any", "any", "deny"])
        self.assertEqual(by_id["2"], ["2", "10", "in", "tcp", "80", "any", "any", "allow"])
        self.assertEqual(by_id["3"], ["3", "10", "in", "tcp", "443", "any", "any", "allow"])
        self.assertIn("Applied to: web", self.css('[data-policy="prod_web"]')[0].text)

        # hosts: both switches connected to the controller, with flows installed
        for h in self.lab.hosts:
            def programmed(name: str = h.name) -> bool:
                cells = self.css(f'#hosts tr[data-host="{name}"] td')
                return (bool(cells) and cells[3].text == "connected"
                        and cells[4].text.isdigit() and int(cells[4].text) > 0)
            wait_until(programmed, f"{h.name} never showed as connected with flows", 30,
                       interval=0.2, detail=lambda: self.css("#hosts")[0].text)

        # an endpoint created now appears without a reload
        updates = int(self.driver.execute_script("return document.body.dataset.updates") or 0)
        web2 = self.add(2, "web2", "web")
        row = self.wait_shown(self.group_endpoint("web2"), "web2, made after the load")[0]
        self.assertIn(web2.ip, row.text)
        self.assertIn(self.lab.hosts[1].name, row.text)
        self.assertTrue(self.driver.execute_script("return window.__loadedOnce === true"),
                        "the page was reloaded")
        self.assertGreater(int(self.driver.execute_script(
            "return document.body.dataset.updates")), updates)

        # the page and the state route agree on what is there
        with urllib.request.urlopen(self.lab.netmaster_url + "/web/state", timeout=10) as r:
            state = json.loads(r.read())
        (tenant,) = [t for t in state["tenants"] if t["name"] == "default"]
        (network,) = [n for n in tenant["networks"] if n["name"] == "contiv-net"]
        (web,) = network["groups"]
        self.assertEqual(sorted(e["container"] for e in web["endpoints"]), ["web1", "web2"])

        path = os.path.abspath("web-view.png")  # trial runs in _trial_temp
        self.driver.save_screenshot(path)
        self.assertGreater(os.path.getsize(path), 0)


class DemoURLTests(SynchronousTestCase):
    """``make demo`` ends with the web view's and the metrics' URLs: the lab starts its
    netmaster with ``--metrics-listen`` when given a metrics port and names both URLs."""

    def test_lab_netmaster_serves_metrics_when_asked(self):
        from contiv_sdn.lab import Lab
        root = tempfile.mkdtemp(prefix="contiv-lab-argv-")
        self.addCleanup(shutil.rmtree, root, True)
        lab = Lab(root=root, netmaster_port=9999, metrics_port=9180)
        argv = lab._netmaster_service().argv
        i = argv.index("--metrics-listen")
        self.assertEqual(argv[i + 1], "tcp:9180:interface=127.0.0.1")
        self.assertEqual(lab.metrics_url, "http://127.0.0.1:9180/metrics")
        self.assertEqual(lab.web_url, "http://127.0.0.1:9999/web/")
        plain = Lab(root=root)
        self.assertNotIn("--metrics-listen", plain._netmaster_service().argv)
        self.assertEqual(plain.metrics_url, "")
