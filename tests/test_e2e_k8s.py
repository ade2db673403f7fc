"""The lab in Kubernetes mode, end to end: the real ``/usr/bin/kubectl`` against the API
server stand-in, the netmaster's watcher, a kubelet stand-in per host calling
``contiv-cni`` as containerd does, netplugin, OVS.

Proves: pods applied with kubectl on both hosts get an address written back as
``status.podIP`` and ping each other across hosts; their endpoint records name the pod
(``k8sNamespace``/``k8sPod``) and carry its labels, and a label edit reaches the record
of the running pod; a pod labelled ``io.contiv.network``/``io.contiv.net-group`` lands
in that network and group; a pod deleted with kubectl is torn down (CNI DEL: endpoint
record gone, address released, the store consistent, namespace deleted).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from typing import Any, Dict, Optional

from contiv_sdn.lab import kube
from contiv_sdn.lab.core import Container
from contiv_sdn.testing import require_binary
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase, wait_ping

KUBECTL = "/usr/bin/kubectl"


def pod_yaml(name: str, node: str, labels: Optional[Dict[str, str]] = None,
             command: str = '["sleep", "3600"]') -> str:
    lab = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in (labels or {}).items())
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:"
            f"{lab or ' {}'}\nspec:\n  nodeName: {node}\n  containers:\n  - name: main\n"
            f"    image: busybox\n    command: {command}\n")


class KubernetesLabTests(E2ETestCase):
    lab_letter = "k"
    lab_subnet = "192.168.74.0/24"
    lab_kubernetes = True
    timeout = 600

    def setUp(self) -> None:
        if not os.access(KUBECTL, os.X_OK):
            self.skipTest(f"{KUBECTL} not installed")
        require_binary("redis-cli")
        super().setUp()

    # -- helpers ----------------------------------------------------------------
    def kubectl(self, *args: str, input: Optional[str] = None,
                check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run([KUBECTL, "--kubeconfig", kube.kubeconfig_path(self.lab), *args],
                             input=input, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}{res.stderr}")
        return res

    def apply_pod(self, name: str, host: int, **kw: Any) -> None:
        node = self.lab.hosts[host - 1].name
        self.kubectl("apply", "-f", "-", input=pod_yaml(name, node, **kw))
        self.addCleanup(self.kubectl, "delete", "pod", name, "--ignore-not-found",
                        check=False)

    def pod_ip(self, name: str) -> str:
        """Wait for the kubelet to write status.podIP back; the address."""
        found: Dict[str, str] = {}

        def written() -> bool:
            res = self.kubectl("get", "pod", name, "-o", "json", check=False)
            if res.returncode != 0:
                return False
            status = json.loads(res.stdout).get("status") or {}
            found["ip"] = status.get("podIP") or ""
            return bool(found["ip"]) and status.get("phase") == "Running"

        wait_until(written, f"pod {name}'s status.podIP", 90, interval=0.3,
                   detail=self.describe)
        return found["ip"]

    def pod(self, name: str) -> Container:
        ip = self.pod_ip(name)
        entry = kube.wait_pod(self.lab, f"default/{name}")
        return Container(host=entry["host"], name=name, netns=entry["netns"],
                         id=entry["sandbox"], network="", ip=ip)

    def endpoints(self) -> Dict[str, dict]:
        res = subprocess.run(["redis-cli", "-s", self.lab.redis_socket, "--raw", "HGETALL",
                              "contiv:state:endpoint"], capture_output=True, text=True,
                             timeout=30)
        lines = res.stdout.splitlines()
        return {lines[i]: json.loads(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}

    def endpoint_of(self, name: str) -> Optional[dict]:
        for ep in self.endpoints().values():
            if ep.get("k8sNamespace") == "default" and ep.get("k8sPod") == name:
                return ep
        return None

    def consistent(self) -> None:
        res = subprocess.run([sys.executable, "-m", "contiv_sdn.store.consistency",
                              self.lab.redis_url], capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0, f"store inconsistent:\n{res.stdout}{res.stderr}")

    def describe(self) -> str:
        parts = [self.kubectl("get", "pods", "-o", "wide", check=False).stdout]
        for h in self.lab.hosts:
            svc = self.lab.services.get(kube.kubelet_key(h))
            if svc is not None:
                parts.append(svc.log_tail(15))
        return "\n".join(parts)

    # -- tests --------------------------------------------------------------------
    def test_pods_on_both_hosts_ping(self):
        """Two pods applied with kubectl, one per host: addresses written back, they ping
        each other across hosts; the records name the pods and carry their labels, and a
        label edit reaches the record of the running pod."""
        self.assertIn("e2ek1", self.kubectl("get", "nodes").stdout)
        self.apply_pod("ping-a", 1, labels={"app": "a"})
        self.apply_pod("ping-b", 2, labels={"app": "b"})
        a, b = self.pod("ping-a"), self.pod("ping-b")
        self.assertIn(ipaddress.ip_address(a.ip), ipaddress.ip_network("10.244.0.0/16"))
        wait_ping(a, b)
        wait_ping(b, a)
        ep = self.endpoint_of("ping-a")
        self.assertIsNotNone(ep)
        self.assertEqual((ep["network"], ep["ipAddress"], ep["labels"].get("app")),
                         ("default:default-net", a.ip, "a"))
        self.kubectl("label", "pod", "ping-a", "app=changed", "--overwrite")
        wait_until(lambda: (self.endpoint_of("ping-a") or {}).get("labels", {}).get("app")
                   == "changed", "the label edit in ping-a's endpoint record", 30,
                   interval=0.3)
        # the pod's command runs in its namespace: `lab exec namespace/pod`
        res = subprocess.run([sys.executable, "-m", "contiv_sdn.lab", "--root", self.lab.root,
                              "exec", "default/ping-b", "--", "ip", "-4", "-o", "addr", "show",
                              "eth0"], capture_output=True, text=True, timeout=30)
        self.assertIn(b.ip + "/", res.stdout, res.stderr)

    def test_labels_place_pod(self):
        """io.contiv.network / io.contiv.net-group labels put the pod in that network and
        group."""
        self.network("k8s-net", "10.77.0.0/24")
        self.netctl("group", "create", "k8s-net", "web")
        self.addCleanup(self._quietly, "DELETE", "/api/v1/endpointGroups/default:web/")
        self.apply_pod("placed", 2, labels={"io.contiv.network": "k8s-net",
                                            "io.contiv.net-group": "web"})
        ip = self.pod_ip("placed")
        self.assertIn(ipaddress.ip_address(ip), ipaddress.ip_network("10.77.0.0/24"))
        ep = self.endpoint_of("placed")
        self.assertEqual((ep["network"], ep["group"], ep["homingHost"]),
                         ("default:k8s-net", "default:web", "e2ek2"))
        self.kubectl("delete", "pod", "placed")
        wait_until(lambda: self.endpoint_of("placed") is None, "placed's endpoint removed",
                   60, interval=0.3, detail=self.describe)

    def test_pod_deleted_cni_del(self):
        """kubectl delete: CNI DEL done (record gone, address released, store consistent)
        and the sandbox namespace deleted."""
        self.apply_pod("gone", 1, command='["busybox", "httpd", "-f", "-p", "8080"]')
        c = self.pod("gone")
        self.assertIsNotNone(self.endpoint_of("gone"))
        self.kubectl("delete", "pod", "gone")
        wait_until(lambda: self.endpoint_of("gone") is None, "gone's endpoint removed", 60,
                   interval=0.3, detail=self.describe)
        wait_until(lambda: c.netns not in subprocess.run(["ip", "netns", "list"],
                                                         capture_output=True,
                                                         text=True).stdout,
                   f"netns {c.netns} deleted", 30, interval=0.3)
        owners = subprocess.run(["redis-cli", "-s", self.lab.redis_socket, "--raw", "HGET",
                                 "contiv:idx:epip:default:default-net", c.ip],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        self.assertEqual(owners, "", f"{c.ip} still owned after the pod's deletion")
        self.consistent()

    def test_server_command_restarted(self):
        """A pod's command that ends (busybox nc serving one connection) is started again:
        a client on the other host is answered twice."""
        self.apply_pod("srv", 1, command='["sh", "-c", "echo hello | busybox nc -l -p 8080"]')
        self.apply_pod("cli", 2)
        srv, cli = self.pod("srv"), self.pod("cli")
        wait_ping(cli, srv)

        def fetch() -> bool:
            res = cli.exec("busybox", "nc", "-w", "2", srv.ip, "8080", timeout=10,
                           input="")
            return "hello" in res.stdout

        for n in ("first", "second"):
            wait_until(fetch, f"the {n} answer of srv's nc", 30, interval=0.3,
                       detail=self.describe)
        self.assertGreaterEqual(kube.pods(self.lab)["default/srv"].get("restarts", 0), 1)

    def test_kubelet_restart_catches_up(self):
        """A pod deleted while its node's kubelet is down (SIGKILL) is torn down when the
        kubelet comes back (its state file says what runs), and a pod created meanwhile
        is started; a running pod is not added twice."""
        self.apply_pod("stays", 2)
        self.apply_pod("leaves", 2)
        stays, leaves = self.pod("stays"), self.pod("leaves")
        h = self.lab.hosts[1]
        svc = self.lab.services[kube.kubelet_key(h)]
        svc.stop(self.lab.root, kill=True)
        self.kubectl("delete", "pod", "leaves")
        self.apply_pod("arrives", 2)
        fresh = svc.fresh()
        fresh.start()
        self.lab._update(lambda: self.lab.services.__setitem__(kube.kubelet_key(h), fresh))
        wait_until(lambda: self.endpoint_of("leaves") is None,
                   "the pod deleted while the kubelet was down torn down", 60, interval=0.3,
                   detail=self.describe)
        arrives = self.pod("arrives")
        wait_ping(arrives, stays)
        self.assertNotIn(leaves.netns, subprocess.run(["ip", "netns", "list"],
                                                      capture_output=True, text=True).stdout)
        self.assertEqual(kube.pods(self.lab)["default/stays"]["sandbox"], stays.id)
        self.consistent()

