"""The netmaster's Kubernetes watcher: a real ``twistd netmaster --mode kubernetes``
process on a real Redis, against the API server stand-in (in this process, on loopback).

Proves: Namespaces, NetworkPolicies (spec as given, integers exact) and pods' labels and
named ports reach Redis, the default pod network is created; a label edit on a running
pod rewrites its endpoint record; an endpoint created after its pod's events still gets
the labels; the stand-in restarted is followed; a watch cut mid-stream resumes without a
relist; ``410 Gone`` relists and objects deleted while the watcher was away are removed;
a netmaster SIGKILLed during churn converges, once restarted, to the records the API
server's objects call for.  Plus the client's line splitter and kubeconfig checks.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

import treq
from twisted.internet import defer, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from contiv_sdn.store import Store
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.wait import sleep, wait_for
from drivers.kubernetes.client import LineSplitter
from drivers.kubernetes.config import KubeConfigError, load_kubeconfig
from drivers.kubernetes.objects import endpoint_is_of, endpoint_update, named_ports

NP_SPEC = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}},
                          {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                 "ports": [{"protocol": "TCP", "port": 80, "endPort": 90},
                           {"port": "http"}]}],
}


def pod(ns: str, name: str, labels: dict, ports=()) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "ports": [dict(p) for p in ports]}]}}


def netpol(ns: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


class Units(SynchronousTestCase):
    def test_line_splitter_any_chunking(self):
        """Events cut anywhere (inside a UTF-8 sequence too) come out whole."""
        events = [json.dumps({"type": "ADDED", "object": {"n": i, "s": "é" * i}}).encode()
                  for i in range(5)]
        stream = b"\n".join(events) + b"\n"
        for size in (1, 2, 3, 7, len(stream)):
            split, out = LineSplitter(), []
            for i in range(0, len(stream), size):
                out += split.feed(stream[i:i + size])
            self.assertEqual(out, events)
            self.assertEqual(split.rest(), b"")

    def test_line_splitter_bounded(self):
        split = LineSplitter(max_line=100)
        self.assertRaises(ValueError, split.feed, b"x" * 101)

    def test_named_ports_and_labels(self):
        p = {"metadata": {"labels": {"app": "web", "cni.contiv.io/x": "forged"},
                          "namespace": "ns", "name": "p"},
             "spec": {"containers": [
                 {"ports": [{"name": "http", "containerPort": 80, "protocol": ""},
                            {"name": "", "containerPort": 81, "protocol": "TCP"}]},
                 {"ports": [{"name": "dns", "containerPort": 53, "protocol": "udp"}]}]}}
        self.assertEqual(named_ports(p), {"http": {"port": 80, "protocol": "TCP"},
                                          "dns": {"port": 53, "protocol": "UDP"}})
        ep = {"labels": {"cni.contiv.io/network": "contiv", "old": "1"}}
        up = endpoint_update(ep, p)
        self.assertEqual((up["k8sNamespace"], up["k8sPod"]), ("ns", "p"))
        # the pod's labels, the plugin's own bookkeeping kept, a pod cannot forge it
        self.assertEqual(up["labels"], {"cni.contiv.io/network": "contiv", "app": "web"})
        self.assertIsNone(endpoint_update(up, p))

    def test_endpoint_matched_by_uid_when_known(self):
        """A record names its pod by namespace/name and, when the runtime gave
        K8S_POD_UID, by uid too: the pod recreated under the name is not its pod."""
        p = {"metadata": {"namespace": "ns", "name": "p", "uid": "u-2", "labels": {}}}
        stamped = {"k8sNamespace": "ns", "k8sPod": "p", "k8sPodUID": "u-1"}
        self.assertFalse(endpoint_is_of(stamped, p))
        self.assertTrue(endpoint_is_of(dict(stamped, k8sPodUID="u-2"), p))
        # only the plugin's labels (a record older than the stamp): the label decides
        by_labels = {"labels": {"cni.contiv.io/k8s-namespace": "ns", "cni.contiv.io/k8s-pod": "p",
                                "cni.contiv.io/k8s-pod-uid": "u-1"}}
        self.assertFalse(endpoint_is_of(by_labels, p))
        # no uid known (a runtime without K8S_POD_UID): the name decides
        self.assertTrue(endpoint_is_of({"k8sNamespace": "ns", "k8sPod": "p"}, p))
        self.assertFalse(endpoint_is_of({"k8sNamespace": "ns", "k8sPod": "q"}, p))

    def test_kubeconfig_refusals(self):
        d = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(d))
        path = os.path.join(d, "kc")
        with open(path, "w") as f:
            f.write("current-context: nope\ncontexts: []\nclusters: []\nusers: []\n")
        e = self.assertRaises(KubeConfigError, load_kubeconfig, path)
        self.assertIn("context 'nope' is not in the file", str(e))
        with open(path, "w") as f:
            f.write("clusters: 5\n")
        e = self.assertRaises(KubeConfigError, load_kubeconfig, path)
        self.assertIn("cannot unmarshal number", str(e))
        with open(path, "w") as f:
            f.write("apiVersion: v1\ncurrent-context: c\ncontexts:\n- name: c\n  context: "
                    "{cluster: k, user: u}\nclusters:\n- name: k\n  cluster: {server: "
                    "'https://10.0.0.1:6443', insecure-skip-tls-verify: true}\nusers:\n"
                    "- name: u\n  user: {tokenFile: tok}\n")
        with open(os.path.join(d, "tok"), "w") as f:
            f.write("secret\n")
        cfg = load_kubeconfig(path)
        self.assertEqual((cfg.server, cfg.insecure, cfg.bearer()),
                         ("https://10.0.0.1:6443", True, "secret"))


    def test_in_cluster(self):
        """KUBERNETES_SERVICE_HOST + the service account's token and CA; a missing token
        says what to do."""
        from drivers.kubernetes.config import in_cluster
        d = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(d))
        env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        e = self.assertRaises(KubeConfigError, in_cluster, env, d)
        self.assertIn("no service account token", str(e))
        with open(os.path.join(d, "token"), "w") as f:
            f.write("tok1\n")
        cfg = in_cluster(env, d)
        self.assertEqual((cfg.server, cfg.bearer()), ("https://10.96.0.1:443", "tok1"))
        with open(os.path.join(d, "token"), "w") as f:  # rotated by the kubelet: re-read
            f.write("tok2\n")
        self.assertEqual(cfg.bearer(), "tok2")
        e = self.assertRaises(KubeConfigError, in_cluster, {}, d)
        self.assertIn("pass --kubeconfig", str(e))

    def test_options(self):
        """--mode kubernetes needs a kubeconfig (outside a pod); the default subnet is
        checked; --kubeconfig without the mode is refused."""
        from twisted.python import usage
        from contiv_sdn.master.options import NetmasterOptions
        env = dict(os.environ)
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(env)))
        e = self.assertRaises(usage.UsageError, NetmasterOptions().parseOptions,
                              ["--mode", "kubernetes"])
        self.assertIn("needs --kubeconfig FILE", str(e))
        e = self.assertRaises(usage.UsageError, NetmasterOptions().parseOptions,
                              ["--kubeconfig", __file__])
        self.assertIn("needs --mode kubernetes", str(e))
        e = self.assertRaises(usage.UsageError, NetmasterOptions().parseOptions,
                              ["--mode", "kubernetes", "--kubeconfig", __file__,
                               "--k8s-default-subnet", "fd00::/64"])
        self.assertIn("not an IPv4 subnet", str(e))
        o = NetmasterOptions()
        o.parseOptions(["--mode", "kubernetes", "--kubeconfig", __file__])
        self.assertEqual(o["kubernetes"]["default_subnet"], "10.244.0.0/16")


class ReflectorStreamTests(TestCase):
    """The reflector against a hand-made API server: events split at odd byte
    boundaries, an object of the wrong shape refused (and the stream going on), a
    bookmark advancing the resourceVersion, the server ending the watch."""

    timeout = 60

    async def test_stream(self):
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.web import resource, server
        from drivers.kubernetes.client import KubeClient
        from drivers.kubernetes.config import KubeConfig
        from drivers.kubernetes.watch import Reflector

        good = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "11",
                             "labels": {"x": "1"}}, "spec": {"containers": []}}
        bad = {"metadata": {"name": 5, "namespace": "ns", "resourceVersion": "12"}}
        lines = [json.dumps({"type": "ADDED", "object": bad}),
                 json.dumps({"type": "ADDED", "object": good}),
                 json.dumps({"type": "BOOKMARK", "object": {
                     "metadata": {"resourceVersion": "20"}}})]
        stream = ("\n".join(lines) + "\n").encode()
        seen = []

        class Pods(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                seen.append(request.args.get(b"resourceVersion", [b""])[0].decode())
                if b"watch" not in request.args:
                    return json.dumps({"metadata": {"resourceVersion": "10"},
                                       "items": []}).encode()
                if len(seen) > 2:  # later watches: end at once
                    return b""
                for i in range(0, len(stream), 7):
                    request.write(stream[i:i + 7])
                request.finish()
                return server.NOT_DONE_YET

        root = resource.Resource()
        api = resource.Resource()
        v1 = resource.Resource()
        root.putChild(b"api", api)
        api.putChild(b"v1", v1)
        v1.putChild(b"pods", Pods())
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(root))
        self.addCleanup(port.stopListening)
        client = KubeClient(KubeConfig(server=f"http://127.0.0.1:{port.getHost().port}"))
        self.addCleanup(lambda: defer.ensureDeferred(client.close()))
        changed = []

        class Listener:
            def replaced(self, kind):
                changed.append(("replaced", kind))

            def changed(self, kind, key):
                changed.append(("changed", key))

        refl = Reflector(client, "Pod", Listener())
        refl.start()
        self.addCleanup(lambda: defer.ensureDeferred(refl.stop()))
        await wait_for(lambda: refl.resource_version == "20" and len(seen) >= 3, timeout=20,
                       what="the bookmark's resourceVersion and a resumed watch")
        self.assertEqual(changed, [("replaced", "Pod"), ("changed", "ns/a")])
        self.assertEqual(refl.cache["ns/a"]["metadata"]["labels"], {"x": "1"})
        # list at none, watch from the list's version, resumed from the bookmark's
        self.assertEqual(seen[:3], ["", "10", "20"])
        self.assertEqual(refl.lists, 1)


class TLSTests(TestCase):
    """The client over HTTPS as a kubeconfig describes it: the cluster's CA, a client
    certificate the server requires, insecure-skip-tls-verify; and a refusal when the
    server's certificate is not trusted."""

    timeout = 60

    async def test_tls(self):
        from twisted.internet import reactor
        from twisted.internet.endpoints import SSL4ServerEndpoint
        from twisted.internet.ssl import Certificate, PrivateCertificate
        from twisted.web import resource, server
        from contiv_sdn.lab.pki import CertificateAuthority
        from drivers.kubernetes.client import ApiError, KubeClient
        from drivers.kubernetes.config import KubeConfig

        d = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(d))
        ca = CertificateAuthority(d).ensure()
        srv = ca.issue("apiserver", "apiserver", ["127.0.0.1", "localhost"], server=True)
        cli = ca.issue("admin", "admin", client=True)

        def read(path: str) -> bytes:
            with open(path, "rb") as f:
                return f.read()

        ca_pem = read(ca.cert_path)
        opts = PrivateCertificate.loadPEM(read(srv.cert) + read(srv.key)).options(
            Certificate.loadPEM(ca_pem))  # a client certificate from this CA is required
        ns = resource.Resource()
        ns.isLeaf = True
        ns.render_GET = lambda request: json.dumps(
            {"metadata": {"resourceVersion": "7"}, "items": []}).encode()
        root, api, v1 = resource.Resource(), resource.Resource(), resource.Resource()
        root.putChild(b"api", api)
        api.putChild(b"v1", v1)
        v1.putChild(b"namespaces", ns)
        port = await SSL4ServerEndpoint(reactor, 0, opts, interface="127.0.0.1").listen(
            server.Site(root))
        self.addCleanup(port.stopListening)
        url = f"https://localhost:{port.getHost().port}"
        client_pems = {"client_cert_pem": read(cli.cert), "client_key_pem": read(cli.key)}

        async def list_with(**kw):
            c = KubeClient(KubeConfig(server=url, **kw))
            try:
                return await c.list("/api/v1/namespaces")
            finally:
                await c.close()

        self.assertEqual(await list_with(ca_pem=ca_pem, **client_pems), ([], "7"))
        self.assertEqual(await list_with(insecure=True, **client_pems), ([], "7"))
        with self.assertRaises(ApiError) as e:  # the system's CAs do not know ours
            await list_with(**client_pems)
        self.assertIn("cannot reach the Kubernetes API", str(e.exception))


class WatcherTests(TestCase):
    timeout = 240

    async def _setUp(self):
        require_binary("redis-server")
        from contiv_sdn.testing.kubeapi import KubeAPIServer
        self.dir = tempfile.mkdtemp(prefix="contiv-k8s-watch-")
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, ignore_errors=True))
        self.state_file = os.path.join(self.dir, "api.json")
        self.api_port = free_tcp_port()
        self.api = KubeAPIServer(state_file=self.state_file)
        self.api.bookmark_interval = 0.5
        await self.api.start(self.api_port)
        self.addCleanup(lambda: defer.ensureDeferred(self.api.stop()))
        self.kubeconfig = self.api.kubeconfig(os.path.join(self.dir, "kubeconfig"))
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        self.nm = self.netmaster()
        await threads.deferToThread(self.nm.start)
        self.addCleanup(self.nm.stop)

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    def netmaster(self) -> NetmasterProcess:
        return NetmasterProcess(redis_url=self.redis.url, extra_args=[
            "--mode", "kubernetes", "--kubeconfig", self.kubeconfig,
            "--k8s-default-subnet", "10.244.0.0/16"])

    async def restart_api(self, between=None):
        """Stop the stand-in and start it again on the same port: a new server from its
        state file, or with ``between`` (run while it is down, e.g. deletes nobody
        watches) the same server object listening again."""
        from contiv_sdn.testing.kubeapi import KubeAPIServer
        await self.api.stop()
        if between is not None:
            between()
            await self.api.start(self.api_port)
            return
        self.api = KubeAPIServer(state_file=self.state_file)
        self.api.bookmark_interval = 0.5
        await self.api.start(self.api_port)
        api = self.api
        self.addCleanup(lambda: defer.ensureDeferred(api.stop()))

    def lists(self, kind: str) -> int:
        """How many lists of ``kind`` the netmaster logged."""
        with open(self.nm.logfile, errors="replace") as f:
            return len(re.findall(rf"\b{kind}: listed \d+ at resourceVersion", f.read()))

    def log_tail(self) -> str:
        with open(self.nm.logfile, errors="replace") as f:
            return f.read()[-4000:]

    async def records(self, kind: str) -> dict:
        return await self.store.list(kind)

    async def create_endpoint(self, ep_id: str, ns: str, name: str, labels=None,
                              uid: str = "") -> dict:
        """What netplugin sends for contiv-cni's ADD of pod ns/name (the plugin's labels;
        ``uid``: the K8S_POD_UID the runtime gave)."""
        body = {"TenantName": "default", "NetworkName": "default-net", "EndpointID": ep_id,
                "EPCommonName": name, "ContainerID": ep_id,
                "ConfigEP": {"Container": ep_id, "Host": "host1", "Labels": {
                    "cni.contiv.io/network": "contiv", "cni.contiv.io/ifname": "eth0",
                    "cni.contiv.io/k8s-namespace": ns, "cni.contiv.io/k8s-pod": name,
                    **({"cni.contiv.io/k8s-pod-uid": uid} if uid else {}),
                    **(labels or {})}}}
        resp = await treq.post(self.nm.url + "/plugin/createEndpoint",
                               json.dumps(body).encode(),
                               headers={b"Content-Type": [b"application/json"]},
                               persistent=False)
        text = await resp.text()
        self.assertEqual(resp.code, 200, text)
        return json.loads(text)

    async def wait_record(self, kind: str, key: str, check, what: str):
        async def ok():
            rec = (await self.records(kind)).get(key)
            return rec is not None and check(rec)
        await wait_for(ok, timeout=60, what=what,
                       detail=lambda: "netmaster log:\n" + self.log_tail())

    async def wait_converged(self, what: str):
        """Redis holds exactly what the stand-in's objects call for."""
        async def ok():
            nss = {o["metadata"]["name"]: {"name": o["metadata"]["name"],
                                           "labels": o["metadata"].get("labels", {})}
                   for o in self.api.objects("namespaces")}
            nps = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": {
                "namespace": o["metadata"]["namespace"], "name": o["metadata"]["name"],
                "uid": o["metadata"]["uid"], "spec": o["spec"]}
                for o in self.api.objects("networkpolicies")}
            if await self.records("k8sNamespace") != nss:
                return False
            if await self.records("k8sNetworkPolicy") != nps:
                return False
            pods = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o
                    for o in self.api.objects("pods")}
            for ep in (await self.records("endpoint")).values():
                p = pods.get(f"{ep['k8sNamespace']}/{ep['k8sPod']}")
                if p is None:
                    continue
                mine = {k: v for k, v in ep["labels"].items()
                        if not k.startswith("cni.contiv.io/")}
                if mine != p["metadata"].get("labels", {}):
                    return False
            return True
        await wait_for(ok, timeout=90, what=what,
                       detail=lambda: "netmaster log:\n" + self.log_tail())

    # -- tests ---------------------------------------------------------------
    async def test_objects_reach_redis(self):
        """Namespaces, a NetworkPolicy (spec as given) and a pod's labels and named ports
        land in Redis; the endpoint, made after the pod's events, gets them too."""
        await self.wait_record("obj:network", "default:default-net",
                               lambda n: n["subnet"] == "10.244.0.0/16",
                               "the default pod network")
        self.api.create("namespaces", {"metadata": {"name": "team-a",
                                                    "labels": {"team": "a"}}})
        self.api.create("networkpolicies", netpol("team-a", "web-in", NP_SPEC), "team-a")
        self.api.create("pods", pod("team-a", "web", {"app": "web", "tier": "front"},
                                    [{"name": "http", "containerPort": 8080}]), "team-a")
        await self.wait_record("k8sNamespace", "team-a",
                               lambda r: r == {"name": "team-a", "labels": {
                                   "team": "a", "kubernetes.io/metadata.name": "team-a"}}
                               or r["labels"].get("team") == "a", "namespace team-a")
        given = self.api.objects("networkpolicies", "team-a")[0]
        await self.wait_record("k8sNetworkPolicy", "team-a/web-in",
                               lambda r: r == {"namespace": "team-a", "name": "web-in",
                                               "uid": given["metadata"]["uid"],
                                               "spec": given["spec"]},
                               "NetworkPolicy team-a/web-in with its spec as the API gives it")
        rec = (await self.records("k8sNetworkPolicy"))["team-a/web-in"]
        port = rec["spec"]["ingress"][0]["ports"][0]
        self.assertEqual((type(port["port"]), type(port["endPort"])), (int, int))
        # the CNI ADD comes after the pod's last event
        await sleep(0.5)
        await self.create_endpoint("ep-web", "team-a", "web")
        await self.wait_record(
            "endpoint", "ep-web",
            lambda e: e["labels"].get("app") == "web" and e["labels"].get("tier") == "front",
            "pod web's labels in its endpoint record")
        ep = (await self.records("endpoint"))["ep-web"]
        self.assertEqual((ep["k8sNamespace"], ep["k8sPod"]), ("team-a", "web"))
        self.assertEqual(ep["namedPorts"], {"http": {"port": 8080, "protocol": "TCP"}})
        self.assertEqual(ep["labels"]["cni.contiv.io/network"], "contiv")
        # deleted in the API: gone from Redis
        self.api.delete("networkpolicies", "team-a", "web-in")
        await wait_for(lambda: defer.ensureDeferred(self._absent("k8sNetworkPolicy",
                                                                 "team-a/web-in")),
                       timeout=60, what="the deleted NetworkPolicy removed from Redis")

    async def _absent(self, kind, key):
        return key not in await self.records(kind)

    async def test_label_edit_rewrites_endpoint(self):
        """A label added, changed and removed on a running pod: its endpoint record follows
        (no restart of anything)."""
        self.api.create("pods", pod("default", "db", {"app": "db", "v": "1"}), "default")
        await self.create_endpoint("ep-db", "default", "db")
        await self.wait_record("endpoint", "ep-db", lambda e: e["labels"].get("v") == "1",
                               "labels of pod db")
        self.api.patch("pods", "default", "db", "application/merge-patch+json",
                       {"metadata": {"labels": {"v": "2", "role": "primary", "app": None}}})
        await self.wait_record("endpoint", "ep-db",
                               lambda e: {k: v for k, v in e["labels"].items()
                                          if not k.startswith("cni.")}
                               == {"v": "2", "role": "primary"},
                               "the label edit in the endpoint record")

    async def test_pod_recreated_under_its_name(self):
        """A pod deleted and created again under the same name (new uid, new labels) while
        the old sandbox's endpoint is still there (CNI DEL not done yet): the new labels go
        to the new sandbox's record only; the old record keeps the old pod's."""
        self.api.create("pods", pod("default", "web", {"app": "web", "gen": "1"}), "default")
        first = self.api.objects("pods", "default")[0]["metadata"]["uid"]
        await self.create_endpoint("ep-old", "default", "web", uid=first)
        await self.wait_record("endpoint", "ep-old", lambda e: e["labels"].get("gen") == "1",
                               "the first pod's labels in its record")
        old = (await self.records("endpoint"))["ep-old"]
        self.assertEqual(old["k8sPodUID"], first)
        self.api.delete("pods", "default", "web")
        self.api.create("pods", pod("default", "web", {"app": "db", "gen": "2"}), "default")
        second = self.api.objects("pods", "default")[0]["metadata"]["uid"]
        self.assertNotEqual(first, second)
        await self.create_endpoint("ep-new", "default", "web", uid=second)
        await self.wait_record("endpoint", "ep-new",
                               lambda e: (e["labels"].get("app"), e["labels"].get("gen"))
                               == ("db", "2"), "the second pod's labels in the new record")
        # a later edit of the pod too, then everything settled: the old record untouched
        self.api.patch("pods", "default", "web", "application/merge-patch+json",
                       {"metadata": {"labels": {"gen": "3"}}})
        await self.wait_record("endpoint", "ep-new", lambda e: e["labels"].get("gen") == "3",
                               "the edit in the new record")
        self.api.create("namespaces", {"metadata": {"name": "marker"}})
        await self.wait_record("k8sNamespace", "marker", lambda r: True, "a later event")
        self.assertEqual((await self.records("endpoint"))["ep-old"], old)

    async def test_watch_cut_resumes_without_relist(self):
        """Watches dropped mid-stream resume from their last resourceVersion: changes made
        meanwhile arrive and no kind is listed again."""
        self.api.create("namespaces", {"metadata": {"name": "n1"}})
        await self.wait_record("k8sNamespace", "n1", lambda r: True, "namespace n1")
        before = {k: self.lists(k) for k in ("Namespace", "Pod", "NetworkPolicy")}
        self.assertEqual(before, {"Namespace": 1, "Pod": 1, "NetworkPolicy": 1})
        for i in range(3):
            self.assertGreater(self.api.cut_watches(), 0)
            self.api.create("namespaces", {"metadata": {"name": f"cut{i}"}})
            await self.wait_record("k8sNamespace", f"cut{i}", lambda r: True,
                                   f"namespace cut{i} made while the watch was cut")
        self.assertEqual({k: self.lists(k) for k in before}, before)

    async def test_api_server_restarted(self):
        """The stand-in stops and starts again (state kept): the watcher reconnects and
        follows what changes after."""
        self.api.create("namespaces", {"metadata": {"name": "before"}})
        await self.wait_record("k8sNamespace", "before", lambda r: True, "namespace before")
        await self.restart_api()
        self.api.create("namespaces", {"metadata": {"name": "after", "labels": {"x": "y"}}})
        await self.wait_record("k8sNamespace", "after", lambda r: r["labels"].get("x") == "y",
                               "a namespace made after the API server's restart")
        await self.wait_converged("Redis in step with the restarted API server")
        # a SIGTERM ends the open watches and the process (not the SIGKILL after 60 s)
        self.assertIsNotNone(await threads.deferToThread(self.nm.terminate, 60))
        with open(self.nm.logfile) as f:
            self.assertIn("Server Shut Down", f.read())

    async def test_gone_relists_and_removes_deleted(self):
        """Objects deleted while the watcher was away, with the history expired: the watch
        gets 410, the watcher relists and removes them from Redis."""
        self.api.create("namespaces", {"metadata": {"name": "doomed"}})
        self.api.create("networkpolicies", netpol("default", "doomed-np", NP_SPEC), "default")
        self.api.create("namespaces", {"metadata": {"name": "kept"}})
        await self.wait_record("k8sNetworkPolicy", "default/doomed-np", lambda r: True,
                               "policy doomed-np")
        await self.wait_record("k8sNamespace", "doomed", lambda r: True, "namespace doomed")
        lists_before = self.lists("Namespace")

        def away():
            self.api.delete("namespaces", "", "doomed")
            self.api.delete("networkpolicies", "default", "doomed-np")
            self.api.patch("namespaces", "", "kept", "application/merge-patch+json",
                           {"metadata": {"labels": {"k": "v"}}})
            self.api.expire_history()

        await self.restart_api(between=away)
        await self.wait_converged("the objects deleted while away removed after the relist")
        self.assertGreater(self.lists("Namespace"), lists_before)
        with open(self.nm.logfile) as f:
            self.assertIn("too old", f.read())

    async def test_sigkill_during_churn_converges(self):
        """Namespaces, policies and pod labels churn while the netmaster is SIGKILLed and
        down; restarted, it converges Redis to what the API server holds."""
        for i in range(4):
            self.api.create("pods", pod("default", f"p{i}", {"i": str(i)}), "default")
            await self.create_endpoint(f"ep-p{i}", "default", f"p{i}")
        await self.wait_converged("the first pods")

        def churn(step: int) -> None:
            n = f"churn{step % 5}"
            if any(o["metadata"]["name"] == n for o in self.api.objects("namespaces")):
                self.api.delete("namespaces", "", n)
            else:
                self.api.create("namespaces", {"metadata": {"name": n,
                                                            "labels": {"s": str(step)}}})
            np = f"np{step % 3}"
            if any(o["metadata"]["name"] == np for o in
                   self.api.objects("networkpolicies", "default")):
                self.api.delete("networkpolicies", "default", np)
            else:
                self.api.create("networkpolicies", netpol("default", np, NP_SPEC), "default")
            self.api.patch("pods", "default", f"p{step % 4}", "application/merge-patch+json",
                           {"metadata": {"labels": {"step": str(step)}}})

        for step in range(20):
            churn(step)
            await sleep(0.02)
        self.nm.kill()
        for step in range(20, 40):
            churn(step)
        await threads.deferToThread(self.nm.start)
        await self.wait_converged("Redis converged after the SIGKILL")
