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


class KubectlTests(_Server):
    """The real kubectl against the stand-in."""

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
