"""The Kubernetes API stand-in, driven by the real kubectl and by raw HTTP.

kubectl (``/usr/bin/kubectl``, 1.32) runs as a subprocess against an in-process
:class:`KubeAPIServer` on loopback -- the reactor keeps serving while kubectl
runs, so every call is asynchronous.  The manifests under ``tests/data/k8s/`` are
the kubernetes.io documentation's NetworkPolicy examples ("Network Policies"
concept page) plus Pods and Namespaces.  The watch tests read the chunked stream
with treq, as the netmaster's watcher does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import List, Optional

import treq
from twisted.internet import defer, protocol, reactor, utils
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from contiv_sdn.testing import require_binary
from contiv_sdn.testing.kubeapi import (KubeAPIServer, merge_patch, parse_label_selector,
                                        strategic_merge_patch, json_patch, APIError)
from contiv_sdn.testing.wait import wait_for

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "k8s")


class _Server(TestCase):
    """An in-process stand-in on a free loopback port, and HTTP helpers."""

    token: Optional[str] = None

    async def _start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="contiv-kubeapi-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.api = KubeAPIServer(reactor, token=self.token)
        await self.api.start(0)
        self.addCleanup(lambda: defer.ensureDeferred(self.api.stop()))
        self.kubeconfig = self.api.kubeconfig(os.path.join(self.dir, "kubeconfig"))
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def setUp(self):
        return defer.ensureDeferred(self._start())

    def headers(self, extra: Optional[dict] = None) -> dict:
        h = {"Content-Type": ["application/json"]}
        if self.token:
            h["Authorization"] = [f"Bearer {self.token}"]
        h.update(extra or {})
        return h

    async def http(self, method: str, path: str, body=None, ctype: str = "application/json"):
        resp = await treq.request(method, self.api.url + path, pool=self.pool,
                                  headers=self.headers({"Content-Type": [ctype]}),
                                  data=None if body is None else json.dumps(body).encode())
        return resp.code, json.loads(await treq.content(resp))

    async def watch(self, path: str) -> "WatchStream":
        w = WatchStream()
        resp = await treq.get(self.api.url + path, pool=self.pool, headers=self.headers(),
                              unbuffered=True)
        self.assertEqual(resp.code, 200)
        w.done = treq.collect(resp, w.data)
        w.done.addErrback(w.failed)
        return w


class WatchStream:
    """The events of one watch, as the stream delivers them."""

    def __init__(self) -> None:
        self.buf = b""
        self.events: List[dict] = []
        self.error: Optional[object] = None
        self.done: Optional[defer.Deferred] = None

    def data(self, chunk: bytes) -> None:
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                self.events.append(json.loads(line))

    def failed(self, f) -> None:
        self.error = f

    def types(self) -> List[str]:
        return [e["type"] for e in self.events]

    def names(self, type_: Optional[str] = None) -> List[str]:
        return [e["object"]["metadata"].get("name") for e in self.events
                if type_ is None or e["type"] == type_]


def pod(name: str, labels: Optional[dict] = None, node: str = "host1",
        namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}


class _Kubectl(_Server):
    """Runs the real kubectl against the stand-in."""

    def setUp(self):
        require_binary("kubectl")
        return super().setUp()

    def env(self) -> dict:
        # a private HOME: kubectl caches discovery under ~/.kube/cache
        return {"KUBECONFIG": self.kubeconfig, "HOME": self.dir, "PATH": os.environ["PATH"]}

    async def kubectl(self, *args: str, ok: bool = True) -> str:
        out, err, rc = await utils.getProcessOutputAndValue(
            shutil.which("kubectl"), list(args), env=self.env(), path=DATA)
        if ok and rc != 0:
            self.fail(f"kubectl {' '.join(args)} exited {rc}: {err.decode()}{out.decode()}")
        if not ok:
            self.assertNotEqual(rc, 0, f"kubectl {' '.join(args)} should have failed")
            return err.decode()
        return out.decode()

    async def get_json(self, *args: str) -> dict:
        return json.loads(await self.kubectl("get", "-o", "json", *args))


class KubectlTests(_Kubectl):
    """The commands of the issue: apply, create, label, get (-l, -w), delete."""

    async def test_apply_documentation_network_policies(self):
        out = await self.kubectl("apply", "-f", "netpol-docs.yaml")
        for name in ("test-network-policy", "default-deny-ingress", "allow-all-ingress",
                     "default-deny-egress", "allow-all-egress", "default-deny-all",
                     "multi-port-egress"):
            self.assertIn(f"networkpolicy.networking.k8s.io/{name} created", out)
        doc = await self.get_json("netpol", "test-network-policy")
        spec = doc["spec"]
        self.assertEqual(spec["podSelector"], {"matchLabels": {"role": "db"}})
        self.assertEqual(spec["ingress"][0]["from"][0]["ipBlock"],
                         {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]})
        self.assertEqual(spec["egress"][0]["ports"], [{"protocol": "TCP", "port": 5978}])
        self.assertEqual(doc["metadata"]["generation"], 1)
        self.assertIn("kubectl.kubernetes.io/last-applied-configuration",
                      doc["metadata"]["annotations"])
        deny = await self.get_json("netpol", "default-deny-ingress")
        self.assertEqual(deny["spec"], {"podSelector": {}, "policyTypes": ["Ingress"]})
        multi = await self.get_json("netpol", "multi-port-egress")
        self.assertEqual(multi["spec"]["egress"][0]["ports"][0],
                         {"protocol": "TCP", "port": 32000, "endPort": 32768})
        self.assertEqual(len(self.api.objects("networkpolicies", "default")), 7)

    async def test_reapply_unchanged_keeps_version_and_change_patches(self):
        await self.kubectl("apply", "-f", "pods.yaml")
        before = await self.get_json("pod", "-n", "shop", "web")
        out = await self.kubectl("apply", "-f", "pods.yaml")
        self.assertIn("pod/web unchanged", out)
        self.assertIn("namespace/shop unchanged", out)
        again = await self.get_json("pod", "-n", "shop", "web")
        self.assertEqual(again["metadata"]["resourceVersion"],
                         before["metadata"]["resourceVersion"])
        # a changed manifest: the label is patched in, the container list merged by name
        with open(os.path.join(DATA, "pods.yaml")) as f:
            text = f.read().replace("tier: front", "tier: edge")
        changed = os.path.join(self.dir, "pods-changed.yaml")
        with open(changed, "w") as f:
            f.write(text)
        out = await self.kubectl("apply", "-f", changed)
        self.assertIn("pod/web configured", out)
        after = await self.get_json("pod", "-n", "shop", "web")
        self.assertEqual(after["metadata"]["labels"]["tier"], "edge")
        self.assertGreater(int(after["metadata"]["resourceVersion"]),
                           int(before["metadata"]["resourceVersion"]))
        self.assertEqual(after["metadata"]["uid"], before["metadata"]["uid"])
        self.assertEqual([c["name"] for c in after["spec"]["containers"]], ["httpd"])

    async def test_create_label_select_delete(self):
        await self.kubectl("create", "-f", "pods.yaml")
        err = await self.kubectl("create", "-f", "pods.yaml", ok=False)
        self.assertIn('namespaces "shop" already exists', err)
        self.assertIn("AlreadyExists", err)
        await self.kubectl("label", "pod", "-n", "shop", "web", "color=blue")
        err = await self.kubectl("label", "pod", "-n", "shop", "web", "color=red", ok=False)
        self.assertIn("already has a value (blue)", err)
        await self.kubectl("label", "pod", "-n", "shop", "web", "color=red", "--overwrite")
        doc = await self.get_json("pod", "-n", "shop", "web")
        self.assertEqual(doc["metadata"]["labels"]["color"], "red")
        await self.kubectl("label", "pod", "-n", "shop", "web", "color-")
        doc = await self.get_json("pod", "-n", "shop", "web")
        self.assertNotIn("color", doc["metadata"]["labels"])
        # selectors: labels and spec.nodeName
        names = lambda d: sorted(i["metadata"]["name"] for i in d["items"])  # noqa: E731
        self.assertEqual(names(await self.get_json("pods", "-A", "-l", "app=shop")),
                         ["db", "web"])
        self.assertEqual(names(await self.get_json("pods", "-A", "-l", "role in (db)")), ["db"])
        self.assertEqual(names(await self.get_json("pods", "-A", "-l", "role!=db,app")), ["web"])
        self.assertEqual(names(await self.get_json(
            "pods", "-A", "--field-selector", "spec.nodeName=host2")), ["db"])
        ns = await self.get_json("ns", "-l", "kubernetes.io/metadata.name=shop")
        self.assertEqual(names(ns), ["shop"])
        self.assertEqual(ns["items"][0]["metadata"]["labels"]["purpose"], "test")
        out = await self.kubectl("delete", "pod", "-n", "shop", "db")
        self.assertIn('pod "db" deleted', out)
        err = await self.kubectl("get", "pod", "-n", "shop", "db", ok=False)
        self.assertIn('pods "db" not found', err)
        await self.kubectl("delete", "ns", "shop")
        self.assertEqual(self.api.objects("pods"), [])
        self.assertNotIn("shop", [n["metadata"]["name"] for n in self.api.objects("namespaces")])

    async def test_get_watch_prints_events(self):
        await self.kubectl("apply", "-f", "pods.yaml")
        lines: List[dict] = []
        proto = _JSONLines(lines)
        proc = reactor.spawnProcess(
            proto, shutil.which("kubectl"),
            ["kubectl", "get", "pods", "-n", "shop", "-w", "-o", "json"], env=self.env())
        self.addCleanup(proto.stop, proc)
        await wait_for(lambda: len(lines) >= 2, 20, "kubectl get -w lists the two pods")
        await self.kubectl("label", "pod", "-n", "shop", "web", "seen=yes")
        await self.kubectl("delete", "pod", "-n", "shop", "db")
        await wait_for(lambda: len(lines) >= 4, 20, "kubectl get -w prints the label and delete")
        self.assertEqual(sorted(o["metadata"]["name"] for o in lines[:2]), ["db", "web"])
        self.assertEqual(lines[2]["metadata"]["labels"]["seen"], "yes")
        self.assertEqual(lines[3]["metadata"]["name"], "db")


    async def test_get_tables_and_watch_events_as_text(self):
        """``kubectl get`` asks for server-side Tables: kube's columns come back."""
        await self.kubectl("apply", "-f", "pods.yaml")
        self.api.patch("pods", "shop", "web", "application/merge-patch+json",
                       {"status": {"podIP": "10.1.0.7", "phase": "Running"}}, "status")
        out = (await self.kubectl("get", "pods", "-n", "shop", "-o", "wide")).splitlines()
        self.assertEqual(out[0].split(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP",
                                          "NODE", "NOMINATED", "NODE", "READINESS", "GATES"])
        web = next(line.split() for line in out if line.startswith("web"))
        self.assertEqual(web[:3] + web[5:7], ["web", "0/1", "Running", "10.1.0.7", "host1"])
        await self.kubectl("apply", "-f", "netpol-docs.yaml")
        out = (await self.kubectl("get", "netpol", "--show-labels",
                                  "--sort-by=.metadata.name")).splitlines()
        self.assertEqual(out[0].split(), ["NAME", "POD-SELECTOR", "AGE", "LABELS"])
        rows = [line.split() for line in out[1:]]
        self.assertEqual([r[0] for r in rows], sorted(r[0] for r in rows))
        self.assertIn(["test-network-policy", "role=db"], [r[:2] for r in rows])
        self.assertIn(["default-deny-all", "<none>"], [r[:2] for r in rows])
        lines: List[str] = []
        proto = _Lines(lines)
        proc = reactor.spawnProcess(
            proto, shutil.which("kubectl"),
            ["kubectl", "get", "pods", "-A", "-w", "--output-watch-events"], env=self.env())
        self.addCleanup(proto.stop, proc)
        await wait_for(lambda: len(lines) >= 3, 20, "the header and the two pods")
        await self.kubectl("delete", "pod", "-n", "shop", "db")
        await wait_for(lambda: len(lines) >= 4, 20, "the delete event")
        self.assertEqual(lines[0].split()[:3], ["EVENT", "NAMESPACE", "NAME"])
        self.assertEqual(sorted(line.split()[:3][2] for line in lines[1:3]), ["db", "web"])
        self.assertEqual(lines[3].split()[:3], ["DELETED", "shop", "db"])


class _Lines(protocol.ProcessProtocol):
    """Collects the lines a process prints."""

    def __init__(self, out: List[str]):
        self.out, self.buf, self.ended = out, b"", defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.out.append(line.decode())

    def processEnded(self, reason) -> None:
        self.ended.callback(None)

    def stop(self, proc) -> defer.Deferred:
        if self.ended.called:
            return defer.succeed(None)
        proc.signalProcess("TERM")
        return self.ended


class _JSONLines(protocol.ProcessProtocol):
    """Collects the JSON objects ``kubectl get -w -o json`` prints, one after another."""

    def __init__(self, out: List[dict]):
        self.out, self.buf, self.ended = out, "", defer.Deferred()
        self.decoder = json.JSONDecoder()

    def outReceived(self, data: bytes) -> None:
        self.buf += data.decode()
        while True:
            text = self.buf.lstrip()
            try:
                obj, end = self.decoder.raw_decode(text)
            except ValueError:
                return
            self.out.append(obj)
            self.buf = text[end:]

    def processEnded(self, reason) -> None:
        self.ended.callback(None)

    def stop(self, proc) -> defer.Deferred:
        if self.ended.called:
            return defer.succeed(None)
        proc.signalProcess("TERM")
        return self.ended


class WatchTests(_Server):
    """The watch protocol over raw HTTP, as a client-go style watcher sees it."""

    async def test_list_then_watch_from_its_version(self):
        self.api.create("pods", pod("a", {"app": "x"}))
        code, lst = await self.http("GET", "/api/v1/namespaces/default/pods")
        self.assertEqual(code, 200)
        self.assertEqual(lst["kind"], "PodList")
        self.assertNotIn("kind", lst["items"][0])  # as kube-apiserver: items carry no kind
        rv = lst["metadata"]["resourceVersion"]
        w = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={rv}")
        self.api.create("pods", pod("b"))
        self.api.patch("pods", "default", "a", "application/merge-patch+json",
                       {"metadata": {"labels": {"app": "y"}}})
        self.api.delete("pods", "default", "b")
        await wait_for(lambda: len(w.events) >= 3, 10, "three events")
        self.assertEqual(w.types(), ["ADDED", "MODIFIED", "DELETED"])
        self.assertEqual(w.names(), ["b", "a", "b"])
        self.assertEqual(w.events[0]["object"]["kind"], "Pod")
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in w.events]
        self.assertEqual(rvs, sorted(rvs))
        self.assertGreater(rvs[0], int(rv))

    async def test_resume_from_a_version_replays_only_later_events(self):
        self.api.create("pods", pod("a"))
        mark = self.api.rv
        self.api.create("pods", pod("b", {"app": "x"}))
        self.api.create("pods", pod("c"))
        w = await self.watch(f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={mark}"
                             f"&labelSelector=app%3Dx")
        await wait_for(lambda: w.events, 10, "the replayed event")
        self.api.create("pods", pod("d", {"app": "x"}))
        await wait_for(lambda: len(w.events) >= 2, 10, "the live event")
        self.assertEqual(w.names(), ["b", "d"])

    async def test_watch_without_version_starts_with_current_objects(self):
        self.api.create("pods", pod("a", node="host1"))
        self.api.create("pods", pod("b", node="host2"))
        w = await self.watch("/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dhost2")
        await wait_for(lambda: w.events, 10, "the synthetic ADDED")
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in w.events],
                         [("ADDED", "b")])

    async def test_bookmarks(self):
        self.api.bookmark_interval = 0.05
        w = await self.watch("/api/v1/namespaces/default/pods?watch=1&resourceVersion="
                             f"{self.api.rv}&allowWatchBookmarks=true")
        self.api.create("pods", pod("a"))
        await wait_for(lambda: "BOOKMARK" in w.types()[1:], 10, "a bookmark after the event")
        bm = [e for e in w.events if e["type"] == "BOOKMARK"][-1]["object"]
        self.assertEqual(bm["kind"], "Pod")
        self.assertEqual(bm["metadata"]["resourceVersion"], str(self.api.rv))
        # no bookmarks unless asked for
        plain = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={self.api.rv}")
        self.api.create("pods", pod("b"))
        await wait_for(lambda: plain.events and "b" in w.names("ADDED"), 10, "pod b everywhere")
        await wait_for(lambda: w.types().count("BOOKMARK") >= 3, 10, "more bookmarks")
        self.assertEqual(plain.types(), ["ADDED"])

    async def test_initial_events_end_bookmark(self):
        self.api.create("pods", pod("a"))
        w = await self.watch("/api/v1/pods?watch=1&sendInitialEvents=true&allowWatchBookmarks=1"
                             "&resourceVersionMatch=NotOlderThan")
        await wait_for(lambda: len(w.events) >= 2, 10, "the initial events and their end")
        self.assertEqual(w.types()[:2], ["ADDED", "BOOKMARK"])
        self.assertEqual(w.events[1]["object"]["metadata"]["annotations"],
                         {"k8s.io/initial-events-end": "true"})

    async def test_gone_after_expire_history(self):
        self.api.create("pods", pod("a"))
        old = self.api.rv
        self.api.create("pods", pod("b"))
        self.api.expire_history()
        w = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={old}")
        await w.done
        self.assertEqual(w.types(), ["ERROR"])
        status = w.events[0]["object"]
        self.assertEqual((status["kind"], status["code"], status["reason"]),
                         ("Status", 410, "Expired"))
        self.assertIn(f"too old resource version: {old}", status["message"])
        # from the current version the watch works
        fresh = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={self.api.rv}")
        self.api.delete("pods", "default", "a")
        await wait_for(lambda: fresh.events, 10, "the delete")
        self.assertEqual(fresh.types(), ["DELETED"])

    async def test_cut_watches_drops_streams_mid_way(self):
        w = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={self.api.rv}")
        self.api.create("pods", pod("a"))
        await wait_for(lambda: w.events, 10, "the first event")
        self.assertEqual(self.api.cut_watches(), 1)
        await w.done
        self.assertIsNotNone(w.error, "a cut watch ends with a broken stream, not a clean end")
        self.assertEqual(self.api.cut_watches(), 0)
        # a client resumes from the last version it saw and misses nothing
        seen = w.events[-1]["object"]["metadata"]["resourceVersion"]
        self.api.create("pods", pod("b"))
        again = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={seen}")
        await wait_for(lambda: again.events, 10, "the event made while cut")
        self.assertEqual(again.names(), ["b"])

    async def test_timeout_seconds_ends_the_stream_cleanly(self):
        w = await self.watch(f"/api/v1/pods?watch=1&timeoutSeconds=1&resourceVersion="
                             f"{self.api.rv}")
        await w.done
        self.assertIsNone(w.error)


class KubectlMoreTests(_Kubectl):
    """kubectl's other paths: strict validation, dry run, replace, patch types, nodes."""

    async def test_typo_refused_by_strict_field_validation(self):
        bad = os.path.join(self.dir, "typo.yaml")
        with open(bad, "w") as f:
            f.write("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                    "metadata: {name: typo, labelz: {a: b}}\nspecs: {podSelector: {}}\n")
        err = await self.kubectl("apply", "-f", bad, ok=False)
        self.assertIn("strict decoding error: ", err)
        self.assertIn('unknown field "metadata.labelz"', err)
        self.assertIn('unknown field "specs"', err)
        self.assertEqual(self.api.objects("networkpolicies"), [])
        err = await self.kubectl("create", "-f", bad, ok=False)
        self.assertIn("strict decoding error", err)

    async def test_invalid_names_and_labels_are_422(self):
        bad = os.path.join(self.dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name, labels: {a: -x}}\n"
                    "spec: {containers: [{name: c}]}\n")
        err = await self.kubectl("create", "-f", bad, ok=False)
        self.assertIn('Pod "Bad_Name" is invalid', err)
        self.assertIn("metadata.name: Invalid value", err)
        self.assertIn('metadata.labels: Invalid value: "-x"', err)
        self.assertIn("spec.containers[0].image: Required value", err)

    async def test_server_dry_run_stores_nothing(self):
        rv = self.api.rv
        out = await self.kubectl("apply", "-f", "netpol-docs.yaml", "--dry-run=server")
        self.assertIn("created (server dry run)", out)
        self.assertEqual((self.api.objects("networkpolicies"), self.api.rv), ([], rv))

    async def test_patch_types_and_replace(self):
        await self.kubectl("apply", "-f", "pods.yaml")
        await self.kubectl("patch", "pod", "-n", "shop", "web", "--type=merge", "-p",
                           '{"metadata":{"annotations":{"a":"1"}}}')
        await self.kubectl("patch", "pod", "-n", "shop", "web", "--type=json", "-p",
                           '[{"op":"add","path":"/metadata/labels/b","value":"2"}]')
        # strategic: a second container merged in by name, the first one kept
        await self.kubectl("patch", "pod", "-n", "shop", "web", "-p",
                           '{"spec":{"containers":[{"name":"side","image":"busybox"}]}}')
        doc = await self.get_json("pod", "-n", "shop", "web")
        self.assertEqual(doc["metadata"]["annotations"]["a"], "1")
        self.assertEqual(doc["metadata"]["labels"]["b"], "2")
        self.assertEqual([c["name"] for c in doc["spec"]["containers"]], ["httpd", "side"])
        # replace: kubectl PUTs with the resourceVersion it read
        doc["metadata"]["labels"]["replaced"] = "yes"
        path = os.path.join(self.dir, "web.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        await self.kubectl("replace", "-f", path)
        err = await self.kubectl("replace", "-f", path, ok=False)  # its version is now stale
        self.assertIn("the object has been modified", err)
        self.assertEqual(self.api.get("pods", "shop", "web")["metadata"]["labels"]["replaced"],
                         "yes")

    async def test_nodes_and_delete_all(self):
        for n in ("host1", "host2"):
            self.api.put_object({"apiVersion": "v1", "kind": "Node",
                                 "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                                 "status": {"addresses": [{"type": "InternalIP",
                                                           "address": "192.0.2.1"}]}})
        out = await self.kubectl("get", "nodes")
        self.assertIn("host1", out)
        self.assertIn("host2", out)
        await self.kubectl("apply", "-f", "pods.yaml")
        out = await self.kubectl("delete", "pods", "-n", "shop", "--all")
        self.assertIn('pod "web" deleted', out)
        self.assertEqual(self.api.objects("pods"), [])


class RestTests(_Server):
    """The REST verbs and their refusals, over raw HTTP."""

    async def test_status_subresource_and_main_resource_keep_their_halves(self):
        self.api.create("pods", pod("a"))
        cur = self.api.get("pods", "default", "a")
        body = dict(cur, status={"phase": "Running", "podIP": "10.1.0.5",
                                 "podIPs": [{"ip": "10.1.0.5"}]},
                    spec=dict(cur["spec"], nodeName="elsewhere"))
        body["metadata"] = dict(cur["metadata"], labels={"sneaky": "yes"})
        code, doc = await self.http("PUT", "/api/v1/namespaces/default/pods/a/status", body)
        self.assertEqual(code, 200)
        self.assertEqual(doc["status"]["podIP"], "10.1.0.5")
        self.assertEqual(doc["spec"]["nodeName"], "host1")  # spec is not the status's
        self.assertEqual(doc["metadata"]["labels"], {})
        self.assertEqual(doc["metadata"]["generation"], 1)
        # a merge patch of status; then a main-resource write cannot change status
        code, doc = await self.http("PATCH", "/api/v1/namespaces/default/pods/a/status",
                                    {"status": {"phase": "Succeeded"}},
                                    "application/merge-patch+json")
        self.assertEqual((code, doc["status"]["phase"], doc["status"]["podIP"]),
                         (200, "Succeeded", "10.1.0.5"))
        code, doc = await self.http("PATCH", "/api/v1/namespaces/default/pods/a",
                                    {"status": {"phase": "Failed"},
                                     "metadata": {"labels": {"x": "1"}}},
                                    "application/merge-patch+json")
        self.assertEqual((code, doc["status"]["phase"], doc["metadata"]["labels"]),
                         (200, "Succeeded", {"x": "1"}))

    async def test_refusals_are_kube_status_objects(self):
        self.api.create("pods", pod("a"))
        rv = self.api.get("pods", "default", "a")["metadata"]["resourceVersion"]
        self.api.patch("pods", "default", "a", "application/merge-patch+json",
                       {"metadata": {"labels": {"v": "2"}}})
        stale = dict(pod("a"), metadata={"name": "a", "resourceVersion": rv})
        cases = [
            ("GET", "/api/v1/namespaces/default/pods/nope", None, 404, "NotFound",
             'pods "nope" not found'),
            ("GET", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/x", None, 404,
             "NotFound", 'networkpolicies.networking.k8s.io "x" not found'),
            ("POST", "/api/v1/namespaces/default/pods", pod("a"), 409, "AlreadyExists",
             'pods "a" already exists'),
            ("POST", "/api/v1/namespaces/nowhere/pods", pod("b", namespace="nowhere"), 404,
             "NotFound", 'namespaces "nowhere" not found'),
            ("PUT", "/api/v1/namespaces/default/pods/a", stale, 409, "Conflict",
             'Operation cannot be fulfilled on pods "a": the object has been modified'),
            ("POST", "/api/v1/namespaces/default/pods", pod("UPPER"), 422, "Invalid",
             'Pod "UPPER" is invalid: metadata.name: Invalid value: "UPPER"'),
            ("POST", "/api/v1/pods", pod("c"), 405, "MethodNotAllowed",
             "does not allow this method"),
            ("PATCH", "/api/v1/namespaces/default/pods/a", {}, 415, "UnsupportedMediaType",
             "unknown format"),
            ("GET", "/api/v1/pods?labelSelector=a%20in%20b", None, 400, "BadRequest",
             "unable to parse requirement"),
            ("GET", "/api/v1/pods?fieldSelector=spec.foo%3Dx", None, 400, "BadRequest",
             '"spec.foo" is not a known field selector'),
            ("DELETE", "/api/v1/namespaces/default", None, 403, "Forbidden",
             "may not be deleted"),
        ]
        for method, path, body, code, reason, text in cases:
            ctype = "text/plain" if reason == "UnsupportedMediaType" else "application/json"
            got, doc = await self.http(method, path, body, ctype)
            self.assertEqual((got, doc["kind"], doc["status"], doc["code"], doc["reason"]),
                             (code, "Status", "Failure", code, reason), (method, path))
            self.assertIn(text, doc["message"])
        code, doc = await self.http("POST", "/api/v1/namespaces/default/pods", None)
        self.assertEqual(code, 400)
        resp = await treq.post(self.api.url + "/api/v1/namespaces/default/pods",
                               data=b'{"metadata": {"name": NaN}}', pool=self.pool)
        self.assertEqual(resp.code, 400)
        self.assertIn("invalid character 'N'", (await treq.json_content(resp))["message"])

    async def test_delete_replies_as_kube_does(self):
        self.api.create("pods", pod("a"))
        self.api.create("networkpolicies", {"metadata": {"name": "p", "namespace": "default"},
                                            "spec": {"podSelector": {}}})
        code, doc = await self.http("DELETE", "/api/v1/namespaces/default/pods/a")
        self.assertEqual((code, doc["kind"], doc["metadata"]["name"]), (200, "Pod", "a"))
        code, doc = await self.http(
            "DELETE", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/p")
        self.assertEqual((code, doc["kind"], doc["status"], doc["details"]["name"],
                          doc["details"]["kind"], doc["details"]["group"]),
                         (200, "Status", "Success", "p", "networkpolicies", "networking.k8s.io"))
        code, doc = await self.http("DELETE", "/api/v1/namespaces/default/pods/a")
        self.assertEqual((code, doc["reason"]), (404, "NotFound"))

    async def test_metadata_one_counter_and_generation(self):
        a = self.api.create("pods", pod("a"))
        ns = self.api.create("namespaces", {"metadata": {"name": "n1"}})
        self.assertEqual(int(ns["metadata"]["resourceVersion"]),
                         int(a["metadata"]["resourceVersion"]) + 1)
        self.assertEqual(ns["metadata"]["labels"], {"kubernetes.io/metadata.name": "n1"})
        self.assertEqual(a["metadata"]["generation"], 1)
        self.assertRegex(a["metadata"]["creationTimestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        b = self.api.patch("pods", "default", "a", "application/merge-patch+json",
                           {"metadata": {"labels": {"x": "y"}}})
        self.assertEqual(b["metadata"]["generation"], 1)  # metadata only: same generation
        c = self.api.patch("pods", "default", "a", "application/merge-patch+json",
                           {"spec": {"activeDeadlineSeconds": 5}})
        self.assertEqual(c["metadata"]["generation"], 2)
        same = self.api.patch("pods", "default", "a", "application/merge-patch+json",
                              {"spec": {"activeDeadlineSeconds": 5}})
        self.assertEqual(same["metadata"]["resourceVersion"], c["metadata"]["resourceVersion"])
        code, lst = await self.http("GET", "/api/v1/namespaces?limit=2")
        self.assertEqual((code, len(lst["items"])), (200, 2))
        code, rest = await self.http("GET", "/api/v1/namespaces?limit=2&continue="
                                     + lst["metadata"]["continue"])
        got = [i["metadata"]["name"] for i in lst["items"] + rest["items"]]
        code, full = await self.http("GET", "/api/v1/namespaces")
        self.assertEqual(got, [i["metadata"]["name"] for i in full["items"]][:4])

    async def test_discovery_documents(self):
        code, doc = await self.http("GET", "/api")
        self.assertEqual((code, doc["versions"]), (200, ["v1"]))
        code, doc = await self.http("GET", "/apis")
        self.assertEqual(sorted(g["name"] for g in doc["groups"]),
                         ["discovery.k8s.io", "networking.k8s.io"])
        code, doc = await self.http("GET", "/api/v1")
        res = {r["name"]: r for r in doc["resources"]}
        self.assertEqual((res["pods"]["namespaced"], res["namespaces"]["namespaced"]),
                         (True, False))
        self.assertIn("pods/status", res)
        self.assertIn("watch", res["nodes"]["verbs"])
        code, doc = await self.http("GET", "/apis/discovery.k8s.io/v1")
        self.assertEqual([r["kind"] for r in doc["resources"]], ["EndpointSlice"])
        code, doc = await self.http("GET", "/version")
        self.assertEqual(doc["minor"], "32")


class TokenTests(_Server):
    token = "s3cret"

    async def test_bearer_token_required(self):
        code, doc = await self.http("GET", "/api/v1/pods")
        self.assertEqual(code, 200)
        resp = await treq.get(self.api.url + "/api/v1/pods", pool=self.pool)
        self.assertEqual(resp.code, 401)
        self.assertEqual((await treq.json_content(resp))["reason"], "Unauthorized")
        with open(self.kubeconfig) as f:
            self.assertIn("s3cret", f.read())


class StateFileTests(TestCase):
    """A restart keeps the objects (with the state file) or loses them (without)."""

    async def test_restart_keeps_or_loses_state(self):
        d = tempfile.mkdtemp(prefix="contiv-kubeapi-")
        self.addCleanup(shutil.rmtree, d, True)
        state = os.path.join(d, "state.json")
        api = KubeAPIServer(reactor, state_file=state)
        await api.start(0)
        api.create("pods", pod("a"))
        uid, rv = api.get("pods", "default", "a")["metadata"]["uid"], api.rv
        await api.stop()
        again = KubeAPIServer(reactor, state_file=state)
        await again.start(0)
        self.addCleanup(lambda: defer.ensureDeferred(again.stop()))
        self.assertEqual(again.get("pods", "default", "a")["metadata"]["uid"], uid)
        self.assertEqual(again.rv, rv)  # versions go on from where they were
        self.assertEqual(again.create("pods", pod("b"))["metadata"]["resourceVersion"],
                         str(rv + 1))
        await again.stop()
        os.unlink(state)
        fresh = KubeAPIServer(reactor, state_file=state)
        self.addCleanup(lambda: defer.ensureDeferred(fresh.stop()))
        self.assertEqual(fresh.objects("pods"), [])


class ProcessTests(TestCase):
    """``python -m contiv_sdn.testing.kubeapi`` serves, writes a kubeconfig, stops on TERM."""

    async def test_runs_as_a_process(self):
        import sys
        from contiv_sdn.testing import free_tcp_port
        d = tempfile.mkdtemp(prefix="contiv-kubeapi-")
        self.addCleanup(shutil.rmtree, d, True)
        port, kc = free_tcp_port(), os.path.join(d, "kubeconfig")
        ended: defer.Deferred = defer.Deferred()

        class Proto(protocol.ProcessProtocol):
            def processEnded(self, reason):
                ended.callback(reason.value.exitCode)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = reactor.spawnProcess(Proto(), sys.executable,
                                    [sys.executable, "-m", "contiv_sdn.testing.kubeapi",
                                     "--port", str(port), "--kubeconfig", kc],
                                    env=dict(os.environ, PYTHONPATH=root), path=d)
        self.addCleanup(lambda: None if ended.called else proc.signalProcess("KILL"))
        await wait_for(lambda: os.path.exists(kc), 20, "the kubeconfig")
        with open(kc) as f:
            self.assertIn(f"http://127.0.0.1:{port}", f.read())
        resp = await treq.get(f"http://127.0.0.1:{port}/api/v1/namespaces",
                              pool=HTTPConnectionPool(reactor, persistent=False))
        names = [i["metadata"]["name"] for i in (await treq.json_content(resp))["items"]]
        self.assertIn("kube-system", names)
        proc.signalProcess("TERM")
        self.assertEqual(await ended, 0)


class PatchAndSelectorUnitTests(TestCase):
    def test_strategic_merge_directives(self):
        cur = {"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
               "spec": {"containers": [{"name": "one", "image": "i1", "env": [
                   {"name": "A", "value": "1"}]}, {"name": "two", "image": "i2"}],
                   "tolerations": [{"key": "k1"}], "volumes": [{"name": "v", "emptyDir": {}}]}}
        patch = {"metadata": {"labels": {"y": None}, "$deleteFromPrimitiveList/finalizers": ["a"],
                              "finalizers": ["c"]},
                 "spec": {"$setElementOrder/containers": [{"name": "two"}, {"name": "one"}],
                          "containers": [{"name": "one", "env": [{"name": "B", "value": "2"}]},
                                         {"name": "three", "$patch": "delete"}],
                          "tolerations": [{"key": "k2"}],
                          "volumes": [{"name": "v", "hostPath": {"path": "/x"},
                                       "$retainKeys": ["name", "hostPath"]}]}}
        out = strategic_merge_patch(cur, patch)
        self.assertEqual(out["metadata"], {"finalizers": ["b", "c"], "labels": {"x": "1"}})
        self.assertEqual([c["name"] for c in out["spec"]["containers"]], ["two", "one"])
        self.assertEqual(out["spec"]["containers"][1]["env"],
                         [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        self.assertEqual(out["spec"]["tolerations"], [{"key": "k2"}])  # no merge key: replaced
        self.assertEqual(out["spec"]["volumes"], [{"name": "v", "hostPath": {"path": "/x"}}])
        out = strategic_merge_patch(cur, {"spec": {"containers": [
            {"name": "two", "$patch": "delete"}]}})
        self.assertEqual([c["name"] for c in out["spec"]["containers"]], ["one"])
        out = strategic_merge_patch(cur, {"spec": {"$patch": "replace", "containers": []}})
        self.assertEqual(out["spec"], {"containers": []})
        self.assertEqual(cur["metadata"]["labels"], {"x": "1", "y": "2"})  # input untouched

    def test_merge_and_json_patch(self):
        self.assertEqual(merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]},
                                     {"a": {"b": None}, "l": [3]}), {"a": {"c": 2}, "l": [3]})
        doc = {"metadata": {"labels": {"a": "1"}}, "l": [1, 2]}
        out = json_patch(doc, [{"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                               {"op": "remove", "path": "/metadata/labels/a"},
                               {"op": "add", "path": "/l/-", "value": 3},
                               {"op": "replace", "path": "/l/0", "value": 0},
                               {"op": "test", "path": "/l/1", "value": 2}])
        self.assertEqual(out, {"metadata": {"labels": {"b/c": "2"}}, "l": [0, 2, 3]})
        with self.assertRaises(APIError) as e:
            json_patch(doc, [{"op": "remove", "path": "/metadata/nope"}])
        self.assertEqual(e.exception.code, 422)
        with self.assertRaises(APIError):
            json_patch(doc, [{"op": "test", "path": "/l/0", "value": 9}])

    def test_label_selector_grammar(self):
        def sel(text, labels):
            return all(r.matches(labels) for r in parse_label_selector(text))
        labels = {"app": "web", "tier": "front", "example.com/team": "a"}
        self.assertTrue(sel("", labels))
        self.assertTrue(sel("app=web,tier==front", labels))
        self.assertFalse(sel("app!=web", labels))
        self.assertTrue(sel("app in (db, web),example.com/team", labels))
        self.assertFalse(sel("app notin (web)", labels))
        self.assertTrue(sel("!missing,missing notin (x)", labels))
        self.assertFalse(sel("!app", labels))
        self.assertFalse(sel("missing", labels))
        self.assertTrue(sel("  app = web ,  tier in (front)", labels))
        for bad in ("app in web", "app=web tier", "app in (a", "=x"):
            with self.assertRaises(APIError, msg=bad) as e:
                parse_label_selector(bad)
            self.assertEqual(e.exception.code, 400)


class HistoryWindowTests(_Server):
    async def test_versions_older_than_the_window_are_gone(self):
        self.api.history_size = 3
        start = self.api.rv
        for n in "abcd":
            self.api.create("pods", pod(n))
        w = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={start}")
        await w.done
        self.assertEqual((w.types(), w.events[0]["object"]["code"]), (["ERROR"], 410))
        # the last three events are still there
        kept = await self.watch(f"/api/v1/pods?watch=1&resourceVersion={start + 1}")
        await wait_for(lambda: len(kept.events) >= 3, 10, "the three kept events")
        self.assertEqual(kept.names(), ["b", "c", "d"])
