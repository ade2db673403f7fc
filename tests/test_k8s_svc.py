"""Kubernetes Services on plain data: the watcher's records (Service, EndpointSlice), the
stand-in API server's clusterIP allocation and EndpointSlice controller, the snapshot's
Service inputs (every field), and the compiled datapath walked by the simulator (ClusterIP
across providers, ClientIP affinity, named target ports, headless = nothing)."""

from __future__ import annotations

import copy

from twisted.trial import unittest

from contiv_sdn.controller.snapshot import build_checked, build_snapshot
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.pipeline import servicelb as S
from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.compiler import compile_hosts
from contiv_sdn.pipeline.simulator import ConnTrack, Fabric
from contiv_sdn.pipeline.state import ROUTER_MAC
from drivers.kubernetes.objects import decode, service_record, slice_record
from tests.test_pip_servicelb import _store

CIP = "10.96.0.20"


def _svc(name="web", ns="default", **spec):
    body = {"metadata": {"name": name, "namespace": ns, "uid": "u-" + name, "resourceVersion": "5"},
            "spec": {"clusterIP": CIP, "type": "ClusterIP", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}}
    body["spec"].update(spec)
    return body


def _slice(name, svc="web", ns="default", endpoints=(), ports=(("http", 8080, "TCP"),)):
    return {"metadata": {"name": name, "namespace": ns, "uid": "s-" + name, "resourceVersion": "6",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": [dict(e) for e in endpoints],
            "ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in ports]}


def _ep(ip, pod, ready=None):
    e = {"addresses": [ip], "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}}
    if ready is not None:
        e["conditions"] = {"ready": ready}
    return e


class RecordTests(unittest.TestCase):
    """drivers/kubernetes/objects.py: what reaches Redis."""

    def test_service_record_every_field(self):
        rec = service_record(decode("Service", _svc(
            type="NodePort", sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
            ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP", "nodePort": 30080},
                   {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                   {"name": "s", "port": 9, "protocol": "SCTP"}])))
        self.assertEqual(rec, {
            "namespace": "default", "name": "web", "uid": "u-web", "clusterIP": CIP, "headless": False,
            "type": "NodePort", "selector": {"app": "web"}, "sessionAffinity": "ClientIP",
            "affinityTimeout": 60,
            "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP", "nodePort": 30080},
                      {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP", "nodePort": 0},
                      {"name": "s", "port": 9, "targetPort": 9, "protocol": "SCTP", "nodePort": 0}]})

    def test_affinity_default_timeout_and_headless(self):
        rec = service_record(decode("Service", _svc(sessionAffinity="ClientIP")))
        self.assertEqual(rec["affinityTimeout"], 10800)  # kube's default
        rec = service_record(decode("Service", _svc(clusterIP="None")))
        self.assertEqual((rec["clusterIP"], rec["headless"], rec["affinityTimeout"]), ("", True, 0))

    def test_wrong_types_are_refused_in_gos_words(self):
        with self.assertRaises(DecodeError):
            decode("Service", _svc(ports=[{"port": "80"}]))
        with self.assertRaises(DecodeError):
            decode("Service", _svc(ports=[{"port": 80, "targetPort": 1.5}]))
        with self.assertRaises(DecodeError):
            decode("EndpointSlice", _slice("x", endpoints=[{"addresses": "10.0.0.1"}]))

    def test_slice_keeps_ready_endpoints_only_absent_is_ready(self):
        rec = slice_record(decode("EndpointSlice", _slice("web-1", endpoints=[
            _ep("20.1.1.2", "a", True), _ep("20.1.1.3", "b", None), _ep("20.1.1.4", "c", False)])))
        self.assertEqual(rec, {"namespace": "default", "name": "web-1", "service": "web",
                               "addressType": "IPv4",
                               "endpoints": [{"addresses": ["20.1.1.2"], "pod": "default/a"},
                                             {"addresses": ["20.1.1.3"], "pod": "default/b"}],
                               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})


class StandInTests(unittest.TestCase):
    """contiv_sdn/testing/kubeapi.py: clusterIP allocation and the EndpointSlice controller."""

    def setUp(self):
        from twisted.internet.task import Clock
        from contiv_sdn.testing.kubeapi import KubeAPIServer
        self.clock = Clock()
        self.api = KubeAPIServer(self.clock, service_cidr="10.100.0.0/24")

    def _pod(self, name, ip, labels, ports=(("web", 8080),), phase="Running"):
        self.api.create("pods", {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]}},
            "default")
        if ip:
            self.api.patch("pods", "default", name, "application/merge-patch+json",
                           {"status": {"phase": phase, "podIP": ip}}, subresource="status")

    def _slices(self):
        self.clock.advance(0)
        return {o["metadata"]["name"]: o for o in self.api.objects("endpointslices", "default")}

    def test_cluster_ip_from_the_cidr_given_or_refused(self):
        from contiv_sdn.testing.kubeapi import APIError
        a = self.api.create("services", {"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}}, "default")
        self.assertTrue(a["spec"]["clusterIP"].startswith("10.100.0."), a["spec"])
        b = self.api.create("services", {"metadata": {"name": "b"}, "spec": {"clusterIP": "10.100.0.7",
                                                                              "ports": [{"port": 80}]}}, "default")
        self.assertEqual(b["spec"]["clusterIP"], "10.100.0.7")
        h = self.api.create("services", {"metadata": {"name": "h"}, "spec": {"clusterIP": "None",
                                                                              "ports": [{"port": 80}]}}, "default")
        self.assertEqual(h["spec"]["clusterIP"], "None")
        for ip, why in (("10.96.0.5", "not in the valid range"), ("10.100.0.7", "already allocated")):
            with self.assertRaises(APIError) as cm:
                self.api.create("services", {"metadata": {"name": "c"}, "spec": {"clusterIP": ip,
                                                                                  "ports": [{"port": 80}]}}, "default")
            self.assertEqual(cm.exception.code, 422)
            self.assertIn(why, str(cm.exception.status()))
        self.clock.advance(0)

    def test_node_ports_allocated_in_the_range_or_refused(self):
        """NodePort/LoadBalancer ports without a nodePort get a free one in 30000-32767,
        one asked for is kept; out of range or taken is 422; ClusterIP gets none."""
        from contiv_sdn.testing.kubeapi import APIError

        def svc(name, type_, ports):
            return self.api.create("services", {"metadata": {"name": name},
                                                "spec": {"type": type_, "ports": ports}}, "default")
        a = svc("a", "NodePort", [{"name": "h", "port": 80}, {"name": "d", "port": 53, "protocol": "UDP"}])
        got = [p["nodePort"] for p in a["spec"]["ports"]]
        self.assertTrue(all(30000 <= n <= 32767 for n in got) and len(set(got)) == 2, got)
        b = svc("b", "LoadBalancer", [{"port": 443, "nodePort": 30443}, {"name": "x", "port": 8443}])
        self.assertEqual(b["spec"]["ports"][0]["nodePort"], 30443)
        self.assertNotIn(b["spec"]["ports"][1]["nodePort"], got + [30443])
        self.assertNotIn("nodePort", svc("c", "ClusterIP", [{"port": 80}])["spec"]["ports"][0])
        for n, why in ((80, "not in the valid range. The range of valid ports is 30000-32767"),
                       (30443, "provided port is already allocated")):
            with self.assertRaises(APIError) as cm:
                svc("d", "NodePort", [{"port": 80, "nodePort": n}])
            self.assertEqual(cm.exception.code, 422)
            self.assertIn(why, str(cm.exception.status()))
            self.assertIn("spec.ports[0].nodePort", str(cm.exception.status()))
        self.clock.advance(0)

    def test_slices_follow_pods_named_port_readiness_and_deletion(self):
        self._pod("p1", "20.1.1.2", {"app": "web"})
        self._pod("p2", "20.1.1.3", {"app": "web"}, ports=(("web", 9090),))  # same name, other number
        self._pod("p3", "20.1.1.4", {"app": "web"}, phase="Pending")
        self._pod("p4", "", {"app": "web"})  # no IP yet: not an endpoint
        self._pod("other", "20.1.1.5", {"app": "db"})
        self.api.create("services", {"metadata": {"name": "web"}, "spec": {
            "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}, "default")
        slices = self._slices()
        self.assertEqual(len(slices), 2, slices)  # one per resolved port number
        seen = {}
        for s in slices.values():
            self.assertEqual(s["metadata"]["labels"]["kubernetes.io/service-name"], "web")
            (port,) = s["ports"]
            for e in s["endpoints"]:
                seen[e["targetRef"]["name"]] = (port["name"], port["port"], e["conditions"]["ready"])
        self.assertEqual(seen, {"p1": ("http", 8080, True), "p2": ("http", 9090, True),
                                "p3": ("http", 8080, False)})
        self.api.delete("pods", "default", "p1")
        names = {e["targetRef"]["name"] for s in self._slices().values() for e in s["endpoints"]}
        self.assertEqual(names, {"p2", "p3"})
        self.api.delete("services", "default", "web")
        self.assertEqual(self._slices(), {})


def _k8s_store(services, slices, extra_eps=()):
    data = _store()
    for eid in ("p1", "p2", "other"):
        data["endpoint"][eid]["k8sNamespace"] = "default"
    for n in extra_eps:
        data["endpoint"][f"c{n}"] = dict(data["endpoint"]["client"], ipAddress=f"20.1.1.{n}",
                                         macAddress=f"02:02:14:01:01:{n:02x}", intfName=f"cv{n}")
    data["k8sService"] = {f"{r['namespace']}/{r['name']}": r for r in services}
    data["k8sEndpointSlice"] = {f"{r['namespace']}/{r['name']}": r for r in slices}
    return data


def _records(spec=None, slices=None):
    svc = service_record(decode("Service", _svc(**(spec or {}))))
    if slices is None:
        slices = [_slice("web-a", endpoints=[_ep("20.1.1.2", "p1"), _ep("20.1.1.3", "p2")]),
                  _slice("web-b", endpoints=[_ep("20.1.1.4", "other")], ports=(("http", 9090, "TCP"),))]
    return [svc], [slice_record(decode("EndpointSlice", s)) for s in slices]


class SnapshotTests(unittest.TestCase):
    """controller/snapshot.py: k8sService + k8sEndpointSlice -> the ServicePort inputs."""

    def test_named_target_port_resolved_per_slice(self):
        built = build_checked(1, _k8s_store(*_records()), {})
        self.assertEqual(built.refused, ())
        sv = built.snapshot.services["k8s/default/web"]
        self.assertEqual((sv.tenant, sv.vip, sv.ports, sv.providers, sv.affinity_timeout),
                         ("default", CIP, ((80, 0, 6),), ("other", "p1", "p2"), 0))
        self.assertEqual(sv.port_providers, (((80, 6), (("other", 9090), ("p1", 8080), ("p2", 8080))),))

    def test_multiple_ports_tcp_udp_sctp_and_numeric_target(self):
        svcs, slices = _records({"ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
            {"name": "s", "port": 9, "targetPort": 9999, "protocol": "SCTP"}]},
            [_slice("web-a", endpoints=[_ep("20.1.1.2", "p1")],
                    ports=(("http", 8080, "TCP"), ("dns", 5353, "UDP"), ("s", 9999, "SCTP")))])
        sv = build_snapshot(1, _k8s_store(svcs, slices), {}).services["k8s/default/web"]
        self.assertEqual(sv.ports, ((9, 0, 132), (53, 0, 17), (80, 0, 6)))
        self.assertEqual(dict(sv.port_providers), {(80, 6): (("p1", 8080),), (53, 17): (("p1", 5353),),
                                                   (9, 132): (("p1", 9999),)})

    def test_affinity_headless_externalname_and_no_provider(self):
        svcs, slices = _records({"sessionAffinity": "ClientIP",
                                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}})
        sv = build_snapshot(1, _k8s_store(svcs, slices), {}).services["k8s/default/web"]
        self.assertEqual(sv.affinity_timeout, 30)
        for spec in ({"clusterIP": "None"}, {"type": "ExternalName", "clusterIP": ""}):
            svcs, slices = _records(spec)
            self.assertNotIn("k8s/default/web", build_snapshot(1, _k8s_store(svcs, slices), {}).services)
        svcs, _ = _records()
        self.assertNotIn("k8s/default/web", build_snapshot(1, _k8s_store(svcs, []), {}).services)
        # an address no endpoint has (a pod of another cluster, a stale slice): left out
        svcs, slices = _records(slices=[_slice("s", endpoints=[_ep("20.9.9.9", "ghost"), _ep("20.1.1.3", "p2")])])
        sv = build_snapshot(1, _k8s_store(svcs, slices), {}).services["k8s/default/web"]
        self.assertEqual(sv.providers, ("p2",))

    def test_wrong_records_are_refused(self):
        svcs, slices = _records()
        bad = dict(svcs[0], name="bad", ports=[{"name": "x", "port": 80, "targetPort": "x", "protocol": "ICMP"}])
        worse = dict(svcs[0], name="worse", clusterIP="10.96.0.300")
        built = build_checked(1, _k8s_store([svcs[0], bad, worse], slices + [dict(slices[0], endpoints="x")]), {})
        refused = {(r.kind, r.key): r.reason for r in built.refused}
        self.assertIn("not TCP, UDP or SCTP", refused[("k8sService", "default/bad")])
        self.assertIn("not an IPv4 address", refused[("k8sService", "default/worse")])
        self.assertIn(("k8sEndpointSlice", "default/web-a"), refused)
        self.assertIn("k8s/default/web", built.snapshot.services)  # web-b still gives it a provider


PORTS = {11: {"vxlan0": 1, "cv2": 5, "cv5": 6, "cv6": 7, "cv7": 8, "cv8": 9, "cv9": 10},
         12: {"vxlan0": 1, "cv3": 5, "cv4": 6}}
NAMES = {"cv2": "p1", "cv3": "p2", "cv4": "other"}


def _fabric(data):
    snap = build_snapshot(1, data, PORTS)
    out = compile_hosts(snap, ["node1", "node2"])
    assert not out.failed, out.failed
    return Fabric(out.flows, snap.hosts, conntrack=ConnTrack(), groups_by_host=out.groups), snap


def _connect(fab, snap, client, sport, dst=CIP, dport=80):
    e = snap.endpoints[client]
    pkt = {"eth_src": e.mac, "eth_dst": ROUTER_MAC, "eth_type": T.ETH_TYPE_IP, "ipv4_src": e.ip,
           "ipv4_dst": dst, "ip_proto": 6, "tcp_src": sport, "tcp_dst": dport, "ip_ttl": 64}
    tr = fab.trace(e.host, e.port, pkt)
    ds = [d for d in tr.deliveries if d.port_name in NAMES]
    assert len(ds) <= 1, str(tr)
    return (NAMES[ds[0].port_name], ds[0].packet["tcp_dst"], ds[0].packet["ipv4_dst"]) if ds else None


class DatapathTests(unittest.TestCase):
    def test_cluster_ip_reaches_every_provider_on_its_own_target_port(self):
        fab, snap = _fabric(_k8s_store(*_records()))
        seen = set()
        for sport in range(40000, 40060):
            got = _connect(fab, snap, "client", sport)
            self.assertIsNotNone(got, f"port {sport} reached no pod")
            seen.add(got)
        self.assertEqual(seen, {("p1", 8080, "20.1.1.2"), ("p2", 8080, "20.1.1.3"),
                                ("other", 9090, "20.1.1.4")})
        self.assertIsNone(_connect(fab, snap, "client", 40000, dport=81))  # not a service port

    def test_client_ip_affinity_pins_each_client_and_spreads_clients(self):
        """Each client's first connection learns its pin; its next 30 follow it; clients
        spread; a provider leaving (the flows recompiled, the switch's learned flows
        kept) moves only its own clients."""
        svcs, slices = _records({"sessionAffinity": "ClientIP"})
        fab, snap = _fabric(_k8s_store(svcs, slices, extra_eps=(6, 7, 8, 9)))
        chosen = {}
        for client in ("client", "c6", "c7", "c8", "c9"):
            got = {_connect(fab, snap, client, sport) for sport in range(41000, 41030)}
            self.assertEqual(len(got), 1, f"{client} was sent to {got}")
            chosen[client] = got.pop()
        self.assertGreater(len({c[0] for c in chosen.values()}), 1, chosen)
        gone = chosen["client"][0]
        svcs2, slices2 = copy.deepcopy(svcs), copy.deepcopy(slices)
        for s in slices2:
            s["endpoints"] = [e for e in s["endpoints"] if e["pod"] != f"default/{gone}"]
        fab2, snap2 = _fabric(_k8s_store(svcs2, slices2, extra_eps=(6, 7, 8, 9)))
        fab2.learned = fab.learned
        for client, was in chosen.items():
            now = _connect(fab2, snap2, client, 42000)
            if was[0] == gone:
                self.assertNotEqual(now[0], gone)
            else:
                self.assertEqual(now, was, client)

    def test_affinity_pin_expires_after_its_idle_timeout(self):
        """The pin is a learned flow with idle_timeout = timeoutSeconds: it holds while
        the client keeps connecting within the timeout (each connection refreshes it) and
        is gone once the client was idle that long; the next choice is the group's again
        (a select that walks the buckets makes it differ)."""
        svcs, slices = _records({"sessionAffinity": "ClientIP",
                                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}})
        snap = build_snapshot(1, _k8s_store(svcs, slices), PORTS)
        self.assertEqual(snap.services["k8s/default/web"].affinity_timeout, 30)
        out = compile_hosts(snap, ["node1", "node2"])
        picks = iter(range(1000))
        fab = Fabric(out.flows, snap.hosts, conntrack=ConnTrack(), groups_by_host=out.groups,
                     select=lambda host, group, pkt: next(picks))
        first = _connect(fab, snap, "client", 43000)
        for i in range(1, 25):
            fab.now += 29  # never idle 30 s: each connection refreshes the pin
            self.assertEqual(_connect(fab, snap, "client", 43000 + i), first, f"connection {i}")
        host = snap.endpoints["client"].host
        (pin,) = fab.learned_flows(host)
        self.assertEqual((pin.table, pin.cookie & (0xFFFF << 48)), (T.SVC_AFF, 0))  # not our cookie mark
        fab.now += 30
        self.assertEqual(fab.learned_flows(host), [])
        second = _connect(fab, snap, "client", 43100)
        self.assertNotEqual(second, first)
        self.assertEqual(_connect(fab, snap, "client", 43101), second)

    def test_affinity_shapes_buckets_choose_a_flow_learns(self):
        sp = S.ServicePort("k8s/d/w", "d", 1, (1,), 1, CIP, 6, 80, 0,
                           (S.Provider("20.1.1.2", "02:00:00:00:00:02", 1, "h", "a", 8080),
                            S.Provider("20.1.1.3", "02:00:00:00:00:03", 1, "h", "b", 8080)), affinity=100000)
        flows, (group,) = S.host_services([sp], "x", {})
        T.check_flows(flows)
        self.assertTrue(S.is_ours(group))
        self.assertEqual(sorted(group.buckets),
                         [(("set_field", T.REG_AFF, 0x14010102), ("resubmit", T.SVC_AFF_LEARN)),
                          (("set_field", T.REG_AFF, 0x14010103), ("resubmit", T.SVC_AFF_LEARN))])
        (learner,) = [f for f in flows if f.table == T.SVC_AFF_LEARN]
        learn = learner.actions[0]
        self.assertEqual((learn[0], learn[1], learn[2], learn[5][-1]),
                         ("learn", T.SVC_AFF, S.MAX_IDLE, ("load", T.REG_AFF, T.REG_AFF)))
        self.assertEqual(learner.actions[1], ("resubmit", T.SVC_AFF_SEL))
        sel = sorted((f.priority, f.actions[0][0]) for f in flows if f.table == T.SVC_AFF_SEL)
        self.assertEqual(sel, [(S.P_VIP - 1, "group"), (S.P_VIP, "ct_nat"), (S.P_VIP, "ct_nat")])
        no_aff = S.host_services([S.ServicePort(**{**sp.__dict__, "affinity": 0})], "x", {})
        self.assertFalse(any(f.table in (T.SVC_AFF, T.SVC_AFF_SEL) for f in no_aff[0]))
        self.assertEqual(len(no_aff[1][0].buckets[0]), 1)

    def test_headless_compiles_to_nothing(self):
        svcs, slices = _records({"clusterIP": "None"})
        fab, snap = _fabric(_k8s_store(svcs, slices))
        self.assertEqual(dict(snap.services).keys(), {"default:web"})
        self.assertIsNone(_connect(fab, snap, "client", 40000))


class DnsTests(unittest.TestCase):
    """contiv_sdn/dns/names.py: Service names; drivers/cni/main.py: the search path."""

    def _dir(self, domain=""):
        from contiv_sdn.dns.names import build
        svcs, slices = _records()
        head = dict(svcs[0], name="db", clusterIP="", headless=True)
        slices.append(slice_record(decode("EndpointSlice", _slice(
            "db-1", svc="db", endpoints=[_ep("20.1.1.4", "other"), _ep("20.1.1.3", "p2"),
                                         _ep("20.1.1.9", "notready", False)]))))
        data = _k8s_store(svcs + [head], slices)
        data["endpoint"]["client"].update(tenant="default", networkName="contiv-net")
        data["network"]["default:contiv-net"].update(tenant="default", networkName="contiv-net")
        return build(data, domain)

    def test_service_names(self):
        from contiv_sdn.dns.names import FOREIGN, MISSING, Addresses, Asker
        d = self._dir()
        me = Asker("default", "contiv-net", "20.1.1.5")
        self.assertEqual(d.lookup(me, "web.default.svc.cluster.local."), Addresses((CIP,), ()))
        self.assertEqual(d.lookup(me, "WEB.default.svc"), Addresses((CIP,), ()))
        self.assertEqual(sorted(d.lookup(me, "db.default.svc.cluster.local").v4), ["20.1.1.3", "20.1.1.4"])
        self.assertIs(d.lookup(me, "nope.default.svc.cluster.local"), MISSING)
        self.assertEqual(d.lookup(me, "default.svc.cluster.local"), Addresses((), ()))
        self.assertIs(d.lookup(me, "example.com"), FOREIGN)
        # any tenant's pods resolve them (names are cluster-wide in Kubernetes)
        self.assertEqual(d.lookup(Asker("blue", "bn", "20.1.1.6"), "web.default.svc.cluster.local"),
                         Addresses((CIP,), ()))
        # under Contiv's own suffix too
        d2 = self._dir("contiv.local")
        self.assertEqual(d2.lookup(me, "web.default.svc.contiv.local"), Addresses((CIP,), ()))
        # without any Service, *.svc.cluster.local is not ours: forwarded
        from contiv_sdn.dns.names import Directory
        self.assertIs(Directory().lookup(me, "web.default.svc.cluster.local"), FOREIGN)

    def test_cni_search_path_for_pods(self):
        from drivers.cni.main import k8s_dns
        self.assertEqual(k8s_dns({"nameservers": ["20.1.1.1"]}, "shop"),
                         {"nameservers": ["20.1.1.1"],
                          "search": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]})
        self.assertEqual(k8s_dns({"nameservers": ["x"], "domain": "k.io", "search": ["a.b", "k.io"]}, "n")["search"],
                         ["n.svc.k.io", "svc.k.io", "k.io", "a.b"])
        self.assertEqual(k8s_dns({"nameservers": ["x"]}, ""), {"nameservers": ["x"]})
        self.assertIsNone(k8s_dns(None, "n"))


class IncrementalTests(unittest.TestCase):
    def test_incremental_equals_full_through_service_changes(self):
        """Affinity switched on, a provider leaving, the Service gone and back: the
        incremental compiler's flows and groups equal a full compile at every step."""
        from contiv_sdn.pipeline.incremental import IncrementalCompiler
        svcs, slices = _records()
        sticky, _ = _records({"sessionAffinity": "ClientIP"})
        fewer = [slice_record(decode("EndpointSlice", _slice("web-a", endpoints=[_ep("20.1.1.3", "p2")])))]
        steps = [(svcs, slices), (sticky, slices), (sticky, fewer), ([], []), (svcs, slices)]
        ic = IncrementalCompiler()
        for i, (sv, sl) in enumerate(steps):
            snap = build_snapshot(i + 1, _k8s_store(sv, sl), PORTS)
            ic.update(snap, ["node1", "node2"])
            full = compile_hosts(snap, ["node1", "node2"])
            for h in ("node1", "node2"):
                self.assertEqual(ic.flows(h), full.flows[h], f"step {i} {h}")
                self.assertEqual(ic.groups(h), full.groups[h], f"step {i} {h}")
