"""Kubernetes Services in the lab, end to end: the real ``/usr/bin/kubectl`` applies
Services against the API stand-in (which allocates the clusterIP and writes the
EndpointSlices, as kube-apiserver and kube-controller-manager do), the netmaster's
watcher mirrors them, the compiler puts the VIP on every switch (select group +
conntrack DNAT), busybox ``httpd`` pods on both hosts answer with their own name.

Proves: a ClusterIP Service with a named targetPort and 3 pods on two hosts answers
from all 3 over >= 30 connections; ``sessionAffinity: ClientIP`` sends every
connection of a client to one pod; the Service's name resolves to its clusterIP and a
headless Service's to its pods (Contiv's resolver at the gateway); a NetworkPolicy
denying a client still denies it through the Service (policy judges the pod after
NAT) while another client gets through; a deleted pod leaves the Service (every
answer from the others); a NodePort Service answers at every host's VTEP address and
node port, from the other host's own namespace and from the lab's root namespace (on
the underlay bridge), with answers from all 3 pods (``agent/nodeport.py``, which
needs host access: the class runs the netplugins with ``--host-access``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, Optional, Set

from contiv_sdn.lab import kube
from contiv_sdn.lab.core import Container
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase
from tests.test_e2e_servicelb import FETCH, fetch_many

KUBECTL = "/usr/bin/kubectl"
GATEWAY = "10.244.0.1"  # the default pod network's gateway: Contiv's resolver answers there
WEB = ("web-1", "web-2", "web-3")


def pod_yaml(name: str, node: str, labels: Dict[str, str], serve: bool) -> str:
    lab = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in labels.items()) or " {}"
    if serve:  # busybox httpd answering with the pod's name (pods share the host's files)
        d = f"/tmp/contiv-e2e-t-{name}"
        cmd = json.dumps(["sh", "-c", f"mkdir -p {d} && echo {name} > {d}/index.html && "
                                      f"exec busybox httpd -f -p 8080 -h {d}"])
        ports = "\n    ports:\n    - name: web\n      containerPort: 8080"
    else:
        cmd, ports = '["sleep", "3600"]', ""
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:{lab}\nspec:\n"
            f"  nodeName: {node}\n  containers:\n  - name: main\n    image: busybox\n"
            f"    command: {cmd}{ports}\n")


def service_yaml(name: str, extra: str = "", port_extra: str = "") -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n"
            f"  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n"
            f"    targetPort: web\n{port_extra}{extra}")


NODE_PORT = 30080


def fetch_from(netns: Optional[str], ip: str, port: int, n: int) -> Set[str]:
    """The answers of ``n`` new connections to ``ip:port`` from ``netns`` (``None``: the
    lab's root namespace, this process's), ``FAIL`` for a failed one."""
    argv = [sys.executable, "-c", FETCH, ip, str(port), str(n), "2.0"]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=n * 3 + 20)
    return {"FAIL" if a.strip().startswith("- ") else a.strip()
            for a in res.stdout.splitlines() if a.strip()}


class KubernetesServiceLabTests(E2ETestCase):
    lab_letter = "t"
    lab_subnet = "192.168.78.0/24"
    lab_kubernetes = True
    lab_host_access = True  # NodePort rides on host access (agent/nodeport.py)
    timeout = 900

    def setUp(self) -> None:
        if not os.access(KUBECTL, os.X_OK):
            self.skipTest(f"{KUBECTL} not installed")
        super().setUp()
        self.pods: Dict[str, Container] = {}

    # -- helpers ----------------------------------------------------------------
    def kubectl(self, *args: str, input: Optional[str] = None,
                check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run([KUBECTL, "--kubeconfig", kube.kubeconfig_path(self.lab), *args],
                             input=input, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}{res.stderr}")
        return res

    def apply(self, kind: str, name: str, text: str) -> None:
        self.kubectl("apply", "-f", "-", input=text)
        self.addCleanup(self.kubectl, "delete", kind, name, "--ignore-not-found", check=False)

    def pod(self, name: str, host: int, labels: Dict[str, str], serve: bool = False) -> None:
        self.apply("pod", name, pod_yaml(name, self.lab.hosts[host - 1].name, labels, serve))

    def running(self, name: str) -> Container:
        found: Dict[str, str] = {}

        def written() -> bool:
            res = self.kubectl("get", "pod", name, "-o", "json", check=False)
            status = json.loads(res.stdout).get("status") or {} if res.returncode == 0 else {}
            found["ip"] = status.get("podIP") or ""
            return bool(found["ip"]) and status.get("phase") == "Running"

        wait_until(written, f"pod {name} running", 90, interval=0.3, detail=self.describe)
        entry = kube.wait_pod(self.lab, f"default/{name}")
        c = Container(host=entry["host"], name=name, netns=entry["netns"], id=entry["sandbox"],
                      network="", ip=found["ip"])
        self.pods[name] = c
        return c

    def cluster_ip(self, name: str) -> str:
        spec = json.loads(self.kubectl("get", "service", name, "-o", "json").stdout)["spec"]
        return spec["clusterIP"]

    def fetch(self, client: str, ip: str, n: int) -> list:
        """The answers of ``n`` new connections from ``client`` to ``ip``:80 (each body,
        ``FAIL`` for a connection that failed; busybox wget crashes here, Python does not)."""
        got = fetch_many(self.pods[client], ip, n)
        return ["FAIL" if a.startswith("- ") else a for a in got]

    def answers(self, client: str, ip: str, n: int = 30) -> Set[str]:
        return set(self.fetch(client, ip, n))

    def nslookup(self, client: str, name: str) -> Set[str]:
        res = self.pods[client].exec("busybox", "nslookup", "-type=a", "-timeout=2", "-retry=1",
                                     name, GATEWAY, timeout=30)
        lines = res.stdout.splitlines()
        # after the "Name:" line come the answers (the server's own address comes before)
        out, seen_name = set(), False
        for line in lines:
            if line.startswith("Name:"):
                seen_name = True
            elif seen_name and line.startswith("Address"):
                out.add(line.split(":", 1)[1].strip().split()[0])
        return out

    def describe(self) -> str:
        parts = [self.kubectl("get", "pods,svc,endpointslices", "-o", "wide", check=False).stdout]
        for h in self.lab.hosts:
            res = h.exec("ovs-ofctl", "-O", "OpenFlow13", "dump-groups", "br-int")
            parts.append(f"{h.name} groups:\n{res.stdout[-1500:]}")
        return "\n".join(parts)

    def web_pods(self) -> None:
        for i, name in enumerate(WEB):
            self.pod(name, 1 if i != 1 else 2, {"app": "web"}, serve=True)
        self.pod("good", 2, {"role": "good"})
        self.pod("bad", 1, {"role": "bad"})
        for name in WEB + ("good", "bad"):
            self.running(name)

    # -- tests --------------------------------------------------------------------
    def test_a_cluster_ip_affinity_and_dns(self) -> None:
        """ClusterIP: all 3 pods answer over 30 connections from a client on either host;
        ClientIP affinity: every connection of a client goes to one pod; the names
        resolve (clusterIP; headless: the pods)."""
        self.web_pods()
        self.apply("service", "web", service_yaml("web"))
        self.apply("service", "sticky", service_yaml(
            "sticky", "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n"
                      "    clientIP:\n      timeoutSeconds: 60\n"))
        self.apply("service", "heads", service_yaml("heads", "  clusterIP: None\n"))
        cip, sticky = self.cluster_ip("web"), self.cluster_ip("sticky")
        self.assertTrue(cip.startswith("10.") and cip != "None", cip)
        want = set(WEB)
        for client in ("good", "bad"):
            last: Dict[str, Set[str]] = {}

            def all_three() -> bool:
                last["a"] = self.answers(client, cip)
                return last["a"] == want

            wait_until(all_three, f"{client}: answers from {want} through {cip}", 90,
                       interval=1, detail=lambda: f"{last.get('a')}\n{self.describe()}")
        for client in ("good", "bad"):
            wait_until(lambda: "FAIL" not in self.answers(client, sticky, 3),
                       f"{client} through the sticky service", 60, interval=1, detail=self.describe)
            got = self.fetch(client, sticky, 30)
            self.assertEqual(len(got), 30)
            self.assertEqual(len(set(got)), 1, f"{client} was not pinned: {got}")
            self.assertIn(got[0], want)
        heads = {self.pods[n].ip for n in WEB}
        wait_until(lambda: self.nslookup("good", "web.default.svc.cluster.local") == {cip},
                   "web.default.svc.cluster.local -> the clusterIP", 60, interval=1)
        wait_until(lambda: self.nslookup("good", "heads.default.svc.cluster.local") == heads,
                   "the headless service -> its pods", 60, interval=1)

    def test_b_policy_through_the_service_and_a_pod_deleted(self) -> None:
        """A NetworkPolicy admitting only role=good: bad is dropped through the VIP too, good
        gets through; a deleted pod leaves the Service."""
        self.web_pods()
        self.apply("service", "web", service_yaml("web"))
        cip = self.cluster_ip("web")
        wait_until(lambda: self.answers("bad", cip, 10) == set(WEB), "all pods behind the VIP",
                   90, interval=1, detail=self.describe)
        self.apply("networkpolicy", "only-good", (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: only-good\n"
            "spec:\n  podSelector:\n    matchLabels:\n      app: web\n  ingress:\n"
            "  - from:\n    - podSelector:\n        matchLabels:\n          role: good\n"))
        wait_until(lambda: self.answers("bad", cip, 5) == {"FAIL"}, "bad denied through the VIP",
                   60, interval=1, detail=self.describe)
        self.assertEqual(self.answers("good", cip), set(WEB))
        self.kubectl("delete", "networkpolicy", "only-good")
        self.kubectl("delete", "pod", "web-3")
        wait_until(lambda: self.answers("bad", cip, 20) == {"web-1", "web-2"},
                   "web-3 gone from the service, the others still answering", 60, interval=1,
                   detail=self.describe)

    def test_c_node_port_from_the_other_host_and_the_underlay(self) -> None:
        """type NodePort: every host's VTEP address answers at the node port, from the
        other host's own namespace and from the lab's root namespace (on the underlay
        bridge), and the answers come from all 3 pods (br-int's service stage balances)."""
        self.web_pods()
        self.apply("service", "np", service_yaml("np", "  type: NodePort\n",
                                                 f"    nodePort: {NODE_PORT}\n"))
        h1, h2 = self.lab.hosts[0], self.lab.hosts[1]
        want = set(WEB)
        for src, dst in ((h2.netns, h1), (h1.netns, h2), (None, h1), (None, h2)):
            last: Dict[str, Set[str]] = {}

            def all_three() -> bool:
                last["a"] = fetch_from(src, dst.vtep_ip, NODE_PORT, 20)
                return last["a"] == want

            wait_until(all_three, f"{src or 'the lab root namespace'} -> {dst.vtep_ip}:{NODE_PORT} "
                       f"answered by {want}", 90, interval=1,
                       detail=lambda: f"{last.get('a')}\n{self.describe()}\n"
                                      f"{dst.exec('nft', 'list', 'table', 'ip', 'contiv_nodeport').stdout}")
