"""Kubernetes NetworkPolicy enforced on the lab: the real ``/usr/bin/kubectl`` applies
policies (YAML) to the API server stand-in, the netmaster's watcher brings them to
Redis, the controller compiles them onto both hosts' OVS, and real connections between
pods on both hosts pass or are dropped as the networking.k8s.io/v1 spec says.

The cluster, made once for the class (pods reused by every scenario)::

    namespace  labels      pod    host  labels          serves
    np-prod    env=prod    web    1     app=web         busybox httpd on 80, 8081 (named
                                                        port "alt"), 8005, 8011
                           db     2     app=db          busybox httpd on 80
                           cli    2     role=client     -
                           cli2   1     role=other      -
    np-dev     env=dev     dcli   1     role=client     -
    np-sys     purpose=..  svc    2     app=svc         a UDP echo server on 5353 and
                                                        busybox httpd on TCP 5353

Every scenario checks, once the policy is in force, at least one connection that must
pass and one that must be dropped (probes of ``contiv_sdn/lab/probe.py``, all of a
check side by side: a drop is a TCP connect or a datagram that gets nothing back
within 1 s; "refused" — a RST or ICMP unreachable — means the packet reached the pod).

Port 53 is special here: the datapath hands every pod's DNS (UDP and TCP 53, whatever
the destination address) to the agent's own resolver (Contiv's DNS, which knows the
pods' names) before any policy stage (docs/design.md, "Known limits").  So "egress
only to DNS" is checked as a user sees it: names still resolve, nothing else passes.
Each test starts from the unpoliced baseline (its policies are deleted by its cleanup,
and the baseline connections are awaited before anything else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from contiv_sdn.lab import kube, probe
from contiv_sdn.lab.core import Container
from contiv_sdn.testing import require_binary
from contiv_sdn.testing.wait import wait_until
from tests.test_e2e_fixtures import E2ETestCase, our_flows

KUBECTL = "/usr/bin/kubectl"
#: how long a probe waits before calling a connection dropped
DROP_AFTER = 1.0
#: how long a policy change may take to be enforced before a scenario fails
ENFORCED_WITHIN = 45.0

NAMESPACES = {"np-prod": {"env": "prod"}, "np-dev": {"env": "dev"},
              "np-sys": {"purpose": "infra"}}
WEB_CMD = ["sh", "-c", "busybox httpd -p 8081 && busybox httpd -p 8005 && "
                       "busybox httpd -p 8011 && exec busybox httpd -f -p 80"]
HTTPD = ["httpd", "-f", "-p", "80"]
SVC_CMD = ["sh", "-c", f"{sys.executable} -S {probe.SCRIPT} udp-echo 5353 & "
                       f"exec busybox httpd -f -p 5353"]
#: name -> (namespace, host index, labels, command, container ports)
PODS: Dict[str, Tuple[str, int, Dict[str, str], Optional[List[str]], List[Dict[str, Any]]]] = {
    "web": ("np-prod", 1, {"app": "web"}, WEB_CMD,
            [{"name": "http", "containerPort": 80}, {"name": "alt", "containerPort": 8081}]),
    "db": ("np-prod", 2, {"app": "db"}, HTTPD, []),
    "cli": ("np-prod", 2, {"role": "client"}, None, []),
    "cli2": ("np-prod", 1, {"role": "other"}, None, []),
    "dcli": ("np-dev", 1, {"role": "client"}, None, []),
    "svc": ("np-sys", 2, {"app": "svc"}, SVC_CMD,
            [{"name": "echo", "containerPort": 5353, "protocol": "UDP"}]),
}

Check = Tuple[str, str, int, str, str]  # (source pod, destination pod, port, proto, expected)


def ok(src: str, dst: str, port: int, proto: str = "tcp") -> Check:
    """The connection must be made (TCP connected, UDP answered)."""
    return (src, dst, port, proto, "open")


def resolves(src: str, name: str) -> Check:
    """The pod ``name``'s name resolves, from ``src``, to its address (DNS on port 53)."""
    return (src, name, 53, "dns", "open")


def reach(src: str, dst: str, port: int) -> Check:
    """The packet must reach the pod (connected, or refused: nothing listens there)."""
    return (src, dst, port, "tcp", "reach")


def drop(src: str, dst: str, port: int, proto: str = "tcp") -> Check:
    """Nothing may come back: the policy dropped it."""
    return (src, dst, port, proto, "drop")


def pod_doc(name: str, node: str, labels: Dict[str, str], ns: str,
            command: Optional[List[str]], ports: List[Dict[str, Any]]) -> Dict[str, Any]:
    container: Dict[str, Any] = {"name": "main", "image": "busybox"}
    if command:
        container["command"] = command
    if ports:
        container["ports"] = ports
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [container]}}


def to_yaml(*docs: Dict[str, Any]) -> str:
    import yaml
    return yaml.safe_dump_all(list(docs), sort_keys=False)


class KubernetesPolicyLabTests(E2ETestCase):
    lab_letter = "q"
    lab_subnet = "192.168.75.0/24"
    lab_kubernetes = True
    timeout = 900

    #: the pods, made once per lab (keyed by the lab's identity)
    _pods: Dict[str, Container] = {}
    _pods_of: Optional[int] = None

    def setUp(self) -> None:
        if not os.access(KUBECTL, os.X_OK):
            self.skipTest(f"{KUBECTL} not installed")
        require_binary("redis-cli")
        super().setUp()
        if type(self)._pods_of != id(self.lab):
            type(self)._pods = self._make_cluster()
            type(self)._pods_of = id(self.lab)
        self.pods = dict(type(self)._pods)
        self.baseline()

    # -- kubectl ----------------------------------------------------------------
    def kubectl(self, *args: str, input: Optional[str] = None,
                check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run([KUBECTL, "--kubeconfig", kube.kubeconfig_path(self.lab), *args],
                             input=input, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}{res.stderr}")
        return res

    def apply(self, *docs: Dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=to_yaml(*docs))

    def policy(self, ns: str, name: str, spec: Dict[str, Any]) -> None:
        """``kubectl apply`` a NetworkPolicy (from YAML); deleted again by the cleanup."""
        self.apply({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": ns}, "spec": spec})
        self.addCleanup(self.kubectl, "delete", "networkpolicy", "-n", ns, name,
                        "--ignore-not-found", check=False)

    def label(self, kind: str, name: str, change: str, undo: str, ns: str = "") -> None:
        """``kubectl label`` (``undo`` run by the cleanup)."""
        where = ["-n", ns] if ns else []
        self.kubectl("label", kind, name, *where, change, "--overwrite")
        self.addCleanup(self.kubectl, "label", kind, name, *where, undo, "--overwrite",
                        check=False)

    # -- the cluster --------------------------------------------------------------
    def _make_cluster(self) -> Dict[str, Container]:
        self.apply(*({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": ns, "labels": labels}}
                     for ns, labels in NAMESPACES.items()))
        self.apply(*(pod_doc(name, self.lab.hosts[host - 1].name, labels, ns, cmd, ports)
                     for name, (ns, host, labels, cmd, ports) in PODS.items()))
        return {name: self.wait_pod(PODS[name][0], name) for name in PODS}

    def wait_pod(self, ns: str, name: str) -> Container:
        """The pod once its kubelet wrote ``status.podIP`` back and runs it."""
        found: Dict[str, str] = {}

        def running() -> bool:
            res = self.kubectl("get", "pod", "-n", ns, name, "-o", "json", check=False)
            if res.returncode != 0:
                return False
            status = json.loads(res.stdout).get("status") or {}
            found["ip"] = status.get("podIP") or ""
            return bool(found["ip"]) and status.get("phase") == "Running"

        wait_until(running, f"pod {ns}/{name} running with an address", 120, interval=0.3,
                   detail=self.describe)
        entry = kube.wait_pod(self.lab, f"{ns}/{name}")
        return Container(host=entry["host"], name=name, netns=entry["netns"],
                         id=entry["sandbox"], network="", ip=found["ip"])

    def endpoints(self) -> Dict[str, dict]:
        res = subprocess.run(["redis-cli", "-s", self.lab.redis_socket, "--raw", "HGETALL",
                              "contiv:state:endpoint"], capture_output=True, text=True,
                             timeout=30)
        lines = res.stdout.splitlines()
        return {lines[i]: json.loads(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}

    # -- connections --------------------------------------------------------------
    def _probe_all(self, checks: Sequence[Check]) -> Dict[Check, str]:
        """Every check's outcome: ``open`` (connected / answered), ``refused`` (RST or ICMP
        unreachable: it got there) or ``timeout``; all probes of a kind side by side."""
        batches: Dict[str, Dict[str, List[str]]] = {"tcp": {}, "udp": {}}
        out: Dict[Check, str] = {}
        for c in checks:
            src, dst, port, proto, _ = c
            if proto == "dns":
                res = self.pods[src].exec("busybox", "nslookup", "-type=a", "-timeout=2",
                                          "-retry=1", dst, self.ip("svc"), timeout=30)
                out[c] = "open" if f"Address: {self.ip(dst)}" in res.stdout else \
                    f"not resolved: {(res.stdout + res.stderr).strip()[-120:]}"
                continue
            batches[proto].setdefault(self.pods[src].netns, []).append(
                f"{self.pods[dst].ip}:{port}")
        results = {}
        if batches["tcp"]:
            results["tcp"] = probe.tcp_many(batches["tcp"], timeout=DROP_AFTER)
        if batches["udp"]:
            results["udp"] = probe.udp_many(batches["udp"], timeout=DROP_AFTER)
        for c in checks:
            src, dst, port, proto, _ = c
            if proto == "dns":
                continue
            r = results[proto][(self.pods[src].netns, f"{self.pods[dst].ip}:{port}")]
            if r.get("connected") or r.get("reply"):
                out[c] = "open"
            elif "refused" in r.get("error", "").lower():
                out[c] = "refused"
            elif "timed out" in r.get("error", ""):
                out[c] = "timeout"
            else:
                out[c] = f"error: {r.get('error')}"
        return out

    @staticmethod
    def _as_expected(check: Check, outcome: str) -> bool:
        want = check[4]
        if want == "open":
            return outcome == "open"
        if want == "reach":
            return outcome in ("open", "refused")
        return outcome == "timeout"

    def expect(self, what: str, *checks: Check, scenario: bool = True) -> None:
        """Wait until every check holds at once (a policy change takes a moment to reach
        both switches).  A scenario must check an allowed and a dropped connection."""
        if scenario:
            kinds = {c[4] == "drop" for c in checks}
            self.assertEqual(kinds, {True, False}, f"{what}: a scenario checks both an "
                                                   "allowed and a dropped connection")
        last: Dict[Check, str] = {}

        def holds() -> bool:
            last.clear()
            last.update(self._probe_all(checks))
            return all(self._as_expected(c, last[c]) for c in checks)

        def detail() -> str:
            wrong = [f"  {s} -> {d}:{p}/{pr}: expected {w}, got {last.get((s, d, p, pr, w))}"
                     for (s, d, p, pr, w) in checks
                     if not self._as_expected((s, d, p, pr, w), last.get((s, d, p, pr, w), ""))]
            return "\n".join(wrong) + "\n" + self.describe()

        wait_until(holds, what, ENFORCED_WITHIN, interval=0.2, detail=detail)

    def baseline(self) -> None:
        """No policy left from an earlier test is in force any more."""
        self.expect("the unpoliced baseline", ok("cli", "web", 80), ok("dcli", "web", 80),
                    ok("cli", "db", 80), ok("web", "db", 80), ok("cli", "svc", 5353, "udp"),
                    ok("dcli", "svc", 5353, "udp"), scenario=False)

    def describe(self) -> str:
        parts = [self.kubectl("get", "pods,networkpolicies,namespaces", "-A", "--show-labels",
                              check=False).stdout]
        for h in self.lab.hosts:
            flows = [f for f in our_flows(h) if any(f"table={t}," in f for t in (45, 46, 47, 48))]
            parts.append(f"{h.name}: {len(flows)} K8s flows\n" + "\n".join(flows[-40:]))
        return "\n".join(parts)

    def ip(self, name: str) -> str:
        return self.pods[name].ip

    # -- scenarios ----------------------------------------------------------------
    def test_00_pods_records_name_the_pod_incarnation(self):
        """The CNI path end to end: each pod's record names it (namespace, name, uid from
        K8S_POD_UID), carries its labels and named ports."""
        uid = json.loads(self.kubectl("get", "pod", "-n", "np-prod", "web", "-o",
                                      "json").stdout)["metadata"]["uid"]

        def recorded() -> bool:
            eps = [e for e in self.endpoints().values()
                   if (e.get("k8sNamespace"), e.get("k8sPod")) == ("np-prod", "web")]
            return len(eps) == 1 and eps[0].get("k8sPodUID") == uid and \
                eps[0]["labels"].get("app") == "web" and \
                eps[0].get("namedPorts", {}).get("alt") == {"port": 8081, "protocol": "TCP"}

        wait_until(recorded, "web's record with its uid, labels and named ports", 30,
                   interval=0.3, detail=lambda: json.dumps(self.endpoints(), indent=1)[-3000:])
        hosts = {c.host for c in self.pods.values()}
        self.assertEqual(len(hosts), 2, "pods on both hosts")

    def test_01_default_deny_ingress_and_replies(self):
        """Default deny ingress in np-prod: nothing gets in, from its own namespace or
        another; its pods' own connections out still work (their replies get in)."""
        self.policy("np-prod", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
        self.expect("default deny ingress", drop("cli", "web", 80), drop("dcli", "web", 80),
                    drop("cli2", "db", 80), ok("cli", "svc", 5353, "udp"),
                    ok("web", "svc", 5353, "udp"), ok("dcli", "svc", 5353, "udp"))

    def test_02_default_deny_egress(self):
        """Default deny egress in np-prod: its pods reach nothing; pods elsewhere still
        reach them (ingress is not isolated)."""
        self.policy("np-prod", "deny-out", {"podSelector": {}, "policyTypes": ["Egress"]})
        self.expect("default deny egress", drop("cli", "web", 80), drop("cli", "svc", 5353, "udp"),
                    drop("web", "db", 80), ok("dcli", "web", 80), ok("dcli", "db", 80),
                    ok("dcli", "svc", 5353, "udp"))

    def test_03_from_namespace_by_label_and_namespace_relabelled(self):
        """Ingress to web from namespaces labelled env=dev; relabelling namespaces moves
        them out of and into that selector, live."""
        self.policy("np-prod", "web-from-dev", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}}]}]})
        self.expect("allow from namespace env=dev", ok("dcli", "web", 80), drop("cli", "web", 80),
                    ok("cli", "db", 80))
        self.label("namespace", "np-dev", "env=staging", "env=dev")
        self.expect("np-dev relabelled env=staging: out of the selector",
                    drop("dcli", "web", 80), ok("dcli", "db", 80))
        self.label("namespace", "np-prod", "env=dev", "env=prod")
        self.expect("np-prod relabelled env=dev: into the selector", ok("cli", "web", 80),
                    ok("cli2", "web", 80), drop("dcli", "web", 80))

    def test_04_pod_and_namespace_selector_one_peer_vs_two_peers(self):
        """One peer with both selectors is an AND (role=client pods *of* env=dev
        namespaces); the same selectors as two peers are an OR."""
        self.policy("np-prod", "web-peers", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}},
                                   "podSelector": {"matchLabels": {"role": "client"}}}]}]})
        self.expect("one peer: namespace AND pod selector", ok("dcli", "web", 80),
                    drop("cli", "web", 80), drop("cli2", "web", 80))
        self.policy("np-prod", "web-peers", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}},
                                  {"podSelector": {"matchLabels": {"role": "client"}}}]}]})
        self.expect("two peers: namespace OR pod selector", ok("dcli", "web", 80),
                    ok("cli", "web", 80), drop("cli2", "web", 80))

    def test_05_ip_block_with_except(self):
        """Ingress from the pod network's CIDR except cli's address."""
        self.policy("np-prod", "web-cidr", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16",
                                               "except": [f"{self.ip('cli')}/32"]}}]}]})
        self.expect("ipBlock with except", ok("cli2", "web", 80), ok("dcli", "web", 80),
                    drop("cli", "web", 80))

    def test_06_named_port_and_end_port_range(self):
        """Ingress to web on its named container port "alt" (8081) and on 8000..8010 only."""
        self.policy("np-prod", "web-ports", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [{"port": "alt"}, {"protocol": "TCP", "port": 8000,
                                                      "endPort": 8010}]}]})
        self.expect("named port and endPort range", ok("cli", "web", 8081),
                    ok("dcli", "web", 8081), ok("cli", "web", 8005), drop("cli", "web", 80),
                    drop("cli", "web", 8011))

    def test_07_udp(self):
        """Ingress to svc on UDP 5353 only: datagrams answered; TCP to 5353 (the same
        number, the other protocol: busybox httpd listens there) dropped."""
        self.expect("svc serves UDP and TCP 5353 before the policy",
                    ok("cli", "svc", 5353, "udp"), ok("cli", "svc", 5353), scenario=False)
        self.policy("np-sys", "svc-udp", {
            "podSelector": {"matchLabels": {"app": "svc"}},
            "ingress": [{"ports": [{"protocol": "UDP", "port": 5353}]}]})
        self.expect("UDP allowed, TCP dropped", ok("cli", "svc", 5353, "udp"),
                    ok("dcli", "svc", 5353, "udp"), drop("cli", "svc", 5353),
                    drop("dcli", "svc", 5353))

    def test_08_egress_only_to_dns(self):
        """np-prod's pods may only send DNS (port 53, UDP and TCP): names resolve, nothing
        else passes."""
        self.policy("np-prod", "only-dns", {
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53},
                                  {"protocol": "TCP", "port": 53}]}]})
        self.expect("egress only to DNS", resolves("cli", "db"), resolves("web", "cli"),
                    drop("cli", "svc", 5353, "udp"), drop("cli", "web", 80),
                    drop("cli", "db", 80), drop("web", "db", 80), ok("dcli", "web", 80))

    def test_09_several_policies_union(self):
        """Two policies select web: what either allows passes, nothing else."""
        self.policy("np-prod", "web-clients-80", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                         "ports": [{"port": 80}]}]})
        self.policy("np-prod", "web-dev-8081", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}}],
                         "ports": [{"port": 8081}]}]})
        self.expect("union of two policies", ok("cli", "web", 80), ok("dcli", "web", 8081),
                    drop("cli", "web", 8081), drop("dcli", "web", 80), drop("cli2", "web", 80))

    def test_10_isolation_only_for_selected_pods(self):
        """A deny for app=web isolates web only: db, in the same namespace, stays open."""
        self.policy("np-prod", "web-deny", {"podSelector": {"matchLabels": {"app": "web"}},
                                            "policyTypes": ["Ingress"]})
        self.expect("only the selected pod isolated", drop("cli", "web", 80),
                    drop("cli2", "web", 80), ok("cli", "db", 80), ok("cli2", "db", 80))

    def test_11_policy_added_then_removed(self):
        """A deny for db takes effect, and its deletion gives the traffic back."""
        self.policy("np-prod", "db-deny", {"podSelector": {"matchLabels": {"app": "db"}},
                                           "policyTypes": ["Ingress"]})
        self.expect("policy added", drop("cli", "db", 80), drop("web", "db", 80),
                    ok("cli", "web", 80))
        self.kubectl("delete", "networkpolicy", "-n", "np-prod", "db-deny")
        self.expect("policy removed", ok("cli", "db", 80), ok("web", "db", 80), scenario=False)

    def test_12_pod_relabelled_into_and_out_of_a_peer_selector(self):
        """cli2 labelled role=client enters the allowed peers, and leaves them again."""
        self.policy("np-prod", "web-clients", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]})
        self.expect("before the relabel", ok("cli", "web", 80), drop("cli2", "web", 80))
        self.label("pod", "cli2", "role=client", "role=other", ns="np-prod")
        self.expect("cli2 relabelled into the peer selector", ok("cli2", "web", 80),
                    ok("cli", "web", 80), drop("dcli", "web", 80))
        self.kubectl("label", "pod", "cli2", "-n", "np-prod", "role=other", "--overwrite")
        self.expect("cli2 relabelled out of it", drop("cli2", "web", 80), ok("cli", "web", 80))

    def test_13_pod_relabelled_into_and_out_of_the_protected_selector(self):
        """A deny for tier=locked: db labelled so is isolated; the label removed, it is not."""
        self.policy("np-prod", "locked", {"podSelector": {"matchLabels": {"tier": "locked"}},
                                          "policyTypes": ["Ingress"]})
        self.label("pod", "db", "tier=locked", "tier-", ns="np-prod")
        self.expect("db relabelled into the policy's selector", drop("cli", "db", 80),
                    drop("cli2", "db", 80), ok("cli", "web", 80))
        self.kubectl("label", "pod", "db", "-n", "np-prod", "tier-")
        self.expect("db relabelled out of it", ok("cli", "db", 80), ok("cli2", "db", 80),
                    scenario=False)

    def test_14_pod_created_after_the_policy(self):
        """A pod created after the policy that names it is allowed (and only as the
        policy says)."""
        self.policy("np-prod", "web-from-late", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "late"}}}],
                         "ports": [{"port": 80}]}]})
        self.expect("before the pod exists", drop("cli", "web", 80), ok("cli", "db", 80))
        self.apply(pod_doc("late", self.lab.hosts[1].name, {"role": "late"}, "np-prod", None, []))
        self.addCleanup(self.kubectl, "delete", "pod", "-n", "np-prod", "late",
                        "--ignore-not-found", check=False)
        self.pods["late"] = self.wait_pod("np-prod", "late")
        self.expect("the late pod allowed by the existing policy", ok("late", "web", 80),
                    drop("late", "web", 8081), drop("cli", "web", 80))

    def test_15_replies_allowed_both_ways(self):
        """cli isolated both ways, egress only to web:80: its connection to web works (the
        replies get into the ingress-isolated cli); web cannot open one to cli."""
        self.expect("web reaches cli before the policy (refused: nothing listens)",
                    reach("web", "cli", 7777), scenario=False)
        self.policy("np-prod", "cli-locked", {
            "podSelector": {"matchLabels": {"role": "client"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"port": 80}]}]})
        self.expect("replies pass, new connections do not", ok("cli", "web", 80),
                    drop("web", "cli", 7777), drop("cli", "db", 80), drop("cli", "web", 8081))

    def test_16_egress_to_an_ip_block_with_except(self):
        """cli's egress only to the pod network, except db's address."""
        self.policy("np-prod", "cli-cidr", {
            "podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16",
                                            "except": [f"{self.ip('db')}/32"]}}]}]})
        self.expect("egress ipBlock with except", ok("cli", "web", 80),
                    ok("cli", "svc", 5353, "udp"), drop("cli", "db", 80), ok("cli2", "db", 80))

    def test_17_match_expressions_see_only_the_pods_labels(self):
        """matchExpressions (In, DoesNotExist, Exists) over the pod's labels only: the CNI
        plugin's own ``cni.contiv.io/*`` keys in the endpoint record are not labels."""
        self.policy("np-prod", "web-expr", {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                  "values": ["web", "www"]}]},
            "ingress": [{"from": [
                {"podSelector": {"matchExpressions": [
                    {"key": "role", "operator": "In", "values": ["client", "admin"]},
                    {"key": "cni.contiv.io/k8s-namespace", "operator": "DoesNotExist"}]}},
                {"podSelector": {"matchExpressions": [
                    {"key": "cni.contiv.io/network", "operator": "Exists"}]}}]}]})
        self.expect("matchExpressions", ok("cli", "web", 80), drop("cli2", "web", 80),
                    drop("dcli", "web", 80))

    def test_18_allow_all_rule_beside_a_namespace_deny(self):
        """A namespace-wide deny plus an allow-all ingress rule for web: web open to
        everyone, db closed."""
        self.policy("np-prod", "deny-all-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
        self.policy("np-prod", "web-open", {"podSelector": {"matchLabels": {"app": "web"}},
                                            "ingress": [{}]})
        self.expect("allow-all beside a deny", ok("cli", "web", 80), ok("dcli", "web", 8081),
                    drop("cli", "db", 80), drop("dcli", "db", 80))

    def test_19_policy_types_default_from_the_rules(self):
        """policyTypes omitted and egress rules given: the policy governs both directions."""
        self.policy("np-prod", "web-both", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]})
        self.expect("ingress and egress both governed", ok("cli", "web", 80),
                    drop("cli2", "web", 80), ok("web", "db", 80), drop("web", "svc", 5353, "udp"))
