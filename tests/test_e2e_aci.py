"""End-to-end, ACI mode (issue 16, item 2): a lab with ``--infra aci`` and the stand-in APIC.

Two hosts; a VLAN network with groups ``web`` and ``db``, each with its own VLAN
from the pool.  Containers in the two groups on the two hosts ping each other
over the VLAN trunk (which stands in for the fabric: it bridges every VLAN, a
fabric whose contracts allow): every frame of theirs on the trunk carries its
sender's **group** VLAN, never the network's, which only a container without a
group uses.  A deny-all policy on ``db`` does not stop the ping (OVS enforces no
group policy in ACI mode: the fabric does).  The (stand-in) APIC holds both EPGs
with their VLANs in the static path bindings.
"""

from __future__ import annotations

import http.client
import json
import re
from typing import Dict

from contiv_sdn.lab import Container
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase, UnderlayWatch, wait_ping

IPV4 = 0x0800
PATH = "topology/pod-1/paths-101/pathep-[eth1/1]"


class AciLabTests(E2ETestCase):
    lab_letter = "i"
    lab_hosts = 2
    lab_subnet = "192.168.71.0/24"
    lab_aci = True

    def grouped(self, host: int, name: str, network: str, group: str = "") -> Container:
        c = self.lab.add_container(self.lab.hosts[host - 1].name, name, network, group=group or None)
        self.addCleanup(self._remove_container, c)
        return c

    def group(self, network: str, name: str, *flags: str) -> int:
        self.netctl("group", "create", *flags, network, name)
        self.addCleanup(self._quietly, "DELETE", f"/api/v1/endpointGroups/default:{name}/")
        return self.api("GET", f"/api/v1/inspect/endpointGroups/default:{name}/")["Oper"]["pktTag"]

    def apic_bindings(self) -> Dict[str, str]:
        """EPG name -> encap of its static path binding, read from the (stand-in) APIC."""
        u = self.lab.apic_url.split("//", 1)[1]
        host, port = u.split(":")
        with open(self.lab._apic_password_file()) as f:
            pwd = f.read().strip()

        def req(method: str, path: str, body=None, cookie: str = ""):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request(method, path, body=json.dumps(body) if body is not None else None,
                             headers={"Cookie": f"APIC-cookie={cookie}"} if cookie else {})
                resp = conn.getresponse()
                return resp.status, json.loads(resp.read() or b"{}")
            finally:
                conn.close()

        _, login = req("POST", "/api/aaaLogin.json",
                       {"aaaUser": {"attributes": {"name": "admin", "pwd": pwd}}})
        token = login["imdata"][0]["aaaLogin"]["attributes"]["token"]
        status, got = req("GET", "/api/class/fvRsPathAtt.json", cookie=token)
        self.assertEqual(status, 200, got)
        out = {}
        for item in got.get("imdata", []):
            a = item["fvRsPathAtt"]["attributes"]
            m = re.search(r"/epg-([^/]+)/", a["dn"])
            if m and a.get("tDn") == PATH:
                out[m.group(1)] = a["encap"]
        return out

    def test_two_groups_on_two_hosts_talk_over_the_uplink_on_their_vlans(self) -> None:
        g = self.api("GET", "/api/v1/globals/global/")
        self.assertEqual(g["networkInfraType"], "aci")
        self.netctl("aci-gw", "set", "-p", PATH, "-d", "contivPhysDom", "-e", "yes")
        # Contiv's refusal, then the VLAN network
        res = self.netctl("net", "create", "-e", "vxlan", "-s", "10.71.9.0/24", "vx", check=False)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("network type must be VLAN for ACI mode", res.stdout + res.stderr)
        net = self.network("acn", "10.71.1.0/24", encap="vlan")
        net_vlan = self.api("GET", f"/api/v1/inspect/networks/default:{net}/")["Oper"]["pktTag"]
        self.netctl("policy", "create", "acp")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/policys/default:acp/")
        self.netctl("policy", "rule-add", "acp", "1", "-direction=in", "-action=deny")
        web = self.group(net, "web")
        db = self.group(net, "db", "-policy=acp")
        self.assertEqual(len({net_vlan, web, db}), 3, (net_vlan, web, db))

        w1 = self.grouped(1, "w1", net, "web")
        d2 = self.grouped(2, "d2", net, "db")
        n2 = self.grouped(2, "n2", net)
        with UnderlayWatch(self.lab) as watch:
            wait_ping(w1, d2)  # in spite of db's deny-all: the fabric judges, not OVS
            wait_ping(d2, w1)
        self.assertGreater(watch.count("vlan", web, IPV4), 0, watch.snapshot()[:20])
        self.assertGreater(watch.count("vlan", db, IPV4), 0, watch.snapshot()[:20])
        self.assertEqual(watch.count("vlan", net_vlan, IPV4), 0, watch.snapshot()[:20])
        self.assertEqual(watch.count("vxlan", ethertype=IPV4), 0)
        with UnderlayWatch(self.lab) as watch:
            wait_ping(n2, w1)
        # n2 (no group) sends on the network's VLAN, w1 answers on web's
        self.assertGreater(watch.count("vlan", net_vlan, IPV4), 0, watch.snapshot()[:20])
        self.assertGreater(watch.count("vlan", web, IPV4), 0, watch.snapshot()[:20])

        want = {"web": f"vlan-{web}", "db": f"vlan-{db}"}
        got: Dict[str, str] = {}

        def mirrored() -> bool:
            got.clear()
            got.update(self.apic_bindings())
            return got == want

        wait_until(mirrored, "the APIC's static path bindings never showed the groups' VLANs",
                   30, interval=0.5, detail=lambda: repr(got))
