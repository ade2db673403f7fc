"""The Docker driver with a real dockerd, agent, netmaster, Redis and OVS on one host.

Covers the issue's single-host items: docker networks follow Contiv intent
(created, removed, repaired after dockerd/netplugin restarts), the endpoint
lifecycle of ``docker run`` (address from the netmaster, record with host,
group, MAC, IP and container name, veth + OVS port, all released on removal),
``--ip`` honoured, and reaping of endpoints Docker forgot.  Traffic between
hosts is the lab e2e's job.
"""

from __future__ import annotations

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.test_drv_fixtures import (GATEWAY, NET, SUBNET, DockerHost, http_json, inspect_net,
                                     netctl_delete, netctl_group, netctl_net, refusing_plugin,
                                     wait_for)


def ensure(fn):
    """Run an ``async def`` test method under trial."""
    def wrapper(self):
        return defer.ensureDeferred(fn(self))
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class DockerDriverTests(unittest.TestCase):
    timeout = 180

    async def _setup(self) -> None:
        self.h = DockerHost(self)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        self.h.start_dockerd()
        await self.h.start_agent(grace=1.0)
        await wait_for("docker networks drvnet and web.drvnet",
                       lambda: self._has({NET, f"web.{NET}"}))

    async def _has(self, names: set) -> bool:
        return names <= await self.h.names()

    async def _lacks(self, name: str) -> bool:
        return name not in await self.h.names()

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    @ensure
    async def test_run_endpoint_lifecycle_and_requested_ip(self):
        h = self.h
        cid = (await h.out("run", "-d", "--name", "web1", "--net", f"web.{NET}",
                           "busybox:local", "sleep", "300")).strip().splitlines()[-1]
        info = (await h.docker_json("inspect", cid))[0]
        settings = info["NetworkSettings"]["Networks"][f"web.{NET}"]
        ip, mac, ep_id = settings["IPAddress"], settings["MacAddress"], settings["EndpointID"]
        self.assertEqual(ip, "10.37.1.1")  # lowest free, gateway .254 reserved
        self.assertEqual(mac, "02:02:0a:25:01:01")
        # inside the container: eth0 with that address and MAC, default route via the gateway
        self.assertIn("10.37.1.1/24", await h.out("exec", "web1", "ip", "-o", "addr", "show",
                                                  "eth0"))
        link = await h.out("exec", "web1", "ip", "link", "show", "eth0")
        self.assertIn(mac, link)
        self.assertIn("mtu 1450", link)
        self.assertIn(f"default via {GATEWAY}", await h.out("exec", "web1", "ip", "route"))
        # host side: an OVS port named after the endpoint
        port = "cv" + ep_id[:12]
        self.assertIn(port, h.ports())
        # the netmaster's record: host, group, MAC, IP and (soon) the container name
        eps = await wait_for("container name in the endpoint record",
                             lambda: {k: v for k, v in h.endpoints_in_redis().items()
                                      if v.get("containerName") == "web1"})
        record = eps[ep_id]
        self.assertEqual(record["homingHost"], h.host)
        self.assertEqual(record["group"], "default:web")
        self.assertEqual(record["ipAddress"], ip)
        self.assertEqual(record["macAddress"], mac)
        self.assertEqual(record["containerID"], cid)
        self.assertEqual(inspect_net(h.url, f"default:{NET}")["Oper"].get("numEndpoints"), 1)
        # removal releases everything
        await h.docker("rm", "-f", "web1")
        await wait_for("endpoint record gone", lambda: not h.endpoints_in_redis())
        self.assertNotIn(port, h.ports())
        self.assertFalse({l for l in h.host_links() if l.startswith(("cv", "ct"))})
        self.assertFalse(inspect_net(h.url, f"default:{NET}")["Oper"].get("numEndpoints"))
        self.assertFalse(h.plugin.state.pending)
        net = (await h.docker_json("network", "inspect", f"web.{NET}"))[0]
        self.assertFalse(net.get("Containers"))
        # the address is reusable: the next container gets .1 again
        await h.docker("run", "-d", "--name", "web2", "--net", NET, "busybox:local",
                       "sleep", "300")
        ip2 = await h.out("inspect", "-f",
                          "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "web2")
        self.assertEqual(ip2.strip(), "10.37.1.1")
        await h.docker("rm", "-f", "web2")
        await wait_for("web2's endpoint gone", lambda: not h.endpoints_in_redis())
        await self.requested_ip_is_honoured_and_refused_when_taken()

    async def requested_ip_is_honoured_and_refused_when_taken(self):
        h = self.h
        await h.docker("run", "-d", "--name", "db1", "--net", NET, "--ip", "10.37.1.77",
                       "busybox:local", "sleep", "300")
        self.assertIn("10.37.1.77/24", await h.out("exec", "db1", "ip", "-o", "addr", "show",
                                                   "eth0"))
        self.assertEqual([e["ipAddress"] for e in h.endpoints_in_redis().values()],
                         ["10.37.1.77"])
        # the same address again is refused with the netmaster's words, and leaks nothing
        bad = await h.docker("run", "-d", "--name", "db2", "--net", NET, "--ip", "10.37.1.77",
                             "busybox:local", "sleep", "300", check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("10.37.1.77", bad.stderr)
        await h.docker("rm", "-f", "db2", check=False)
        self.assertEqual(len(h.endpoints_in_redis()), 1)
        self.assertFalse(h.plugin.state.pending)
        # a container restart keeps its requested address (a new endpoint)
        await h.docker("restart", "-t", "0", "db1")
        self.assertIn("10.37.1.77/24", await h.out("exec", "db1", "ip", "-o", "addr", "show",
                                                   "eth0"))
        await wait_for("one endpoint after restart", lambda: len(h.endpoints_in_redis()) == 1)

    @ensure
    async def test_networks_follow_intent(self):
        h = self.h
        # a new tenant's network and group appear with /<tenant>
        http_json(h.url, "POST", "/api/v1/tenants/blue/", {"tenantName": "blue"})
        netctl_net(h.url, "bnet", "10.38.0.0/16", tenant="blue")
        netctl_group(h.url, "bnet", "app", tenant="blue")
        await wait_for("blue networks", lambda: self._has({"bnet/blue", "app.bnet/blue"}))
        net = (await h.docker_json("network", "inspect", "app.bnet/blue"))[0]
        self.assertEqual(net["Driver"], "netplugin")
        self.assertEqual(net["IPAM"]["Driver"], "netplugin")
        self.assertEqual(net["IPAM"]["Config"][0]["Subnet"], "10.38.0.0/16")
        self.assertEqual(net["Labels"]["io.contiv.tenant"], "blue")
        self.assertEqual(net["Labels"]["io.contiv.net-group"], "app")
        # a container in the gateway-less network has no default route
        await h.docker("run", "-d", "--name", "app1", "--net", "app.bnet/blue",
                       "busybox:local", "sleep", "300")
        self.assertNotIn("default", await h.out("exec", "app1", "ip", "route"))
        await h.docker("rm", "-f", "app1")
        # deleting the group and the network in Contiv removes them from Docker
        netctl_delete(h.url, "endpointGroups", "blue:app")
        await wait_for("app.bnet/blue removed", lambda: self._lacks("app.bnet/blue"))
        netctl_delete(h.url, "networks", "blue:bnet")
        await wait_for("bnet/blue removed", lambda: self._lacks("bnet/blue"))
        # a docker network of ours removed behind our back comes back
        old_id = (await h.out("network", "inspect", "-f", "{{.Id}}", f"web.{NET}")).strip()
        self.assertIn(old_id, h.plugin.state.networks)
        await h.docker("network", "rm", f"web.{NET}")
        h.plugin.reconciler.kick()
        await wait_for("web.drvnet repaired", lambda: self._has({f"web.{NET}"}))
        await h.plugin.reconciler.idle()
        h.plugin.reconciler.kick()
        await h.plugin.reconciler.idle()
        self.assertNotIn(old_id, h.plugin.state.networks)  # the removed one is forgotten
        # a network someone made by hand with our driver is left alone
        await h.docker("network", "create", "-d", "netplugin", "--ipam-driver", "netplugin",
                       "--ipam-opt", f"network={NET}", "--subnet", SUBNET, "handmade")
        h.plugin.reconciler.kick()
        await h.plugin.reconciler.idle()
        self.assertIn("handmade", await h.names())

    @ensure
    async def test_dockerd_and_netplugin_restarts(self):
        h = self.h
        await h.docker("run", "-d", "--name", "web1", "--net", f"web.{NET}", "busybox:local",
                       "sleep", "300")
        before = h.endpoints_in_redis()
        self.assertEqual(len(before), 1)
        # dockerd restart (live-restore): the container stays, so does its endpoint
        await threads.deferToThread(h.dockerd.restart)
        self.assertIn("web1", (await h.out("ps", "--format", "{{.Names}}")).split())
        self.assertIn("10.37.1.1/24", await h.out("exec", "web1", "ip", "-o", "addr", "show",
                                                  "eth0"))
        await wait_for("reconciled after the dockerd restart",
                       lambda: h.plugin.reconciler.docker_up)
        await h.plugin.reconciler.idle()
        self.assertEqual(h.endpoints_in_redis().keys(), before.keys())
        # a group created while netplugin is down gets its docker network after the restart;
        # the running container's endpoint is kept
        await h.stop_agent()
        netctl_group(h.url, NET, "db")
        await h.start_agent(grace=1.0)
        await wait_for("db.drvnet after a netplugin restart", lambda: self._has({f"db.{NET}"}))
        await h.plugin.reconciler.idle()
        self.assertEqual(h.endpoints_in_redis().keys(), before.keys())
        self.assertIn("web1", (await h.out("ps", "--format", "{{.Names}}")).split())
        # netplugin broken while the container is removed: dockerd drops the endpoint without
        # us; the next netplugin reaps it and releases its address
        await h.stop_agent()
        port = await refusing_plugin(h.plugin_socket)
        await h.docker("rm", "-f", "web1", timeout=120)
        await port.stopListening()
        self.assertEqual(h.endpoints_in_redis().keys(), before.keys())
        await h.start_agent(grace=0.5)

        def reaped() -> bool:
            h.plugin.reconciler.kick()
            return not h.endpoints_in_redis()

        await wait_for("forgotten endpoint reaped", reaped, timeout=60, every=0.5)
        self.assertFalse({p for p in h.ports() if p.startswith("cv")})


class NetworkCacheTests(unittest.TestCase):
    """The driver's cache of network shapes against Redis' change feed (stand-ins for the
    netmaster and the store: only the calls are counted, the cache logic is what runs)."""

    CONFIG = {"key": "default:drvnet", "encap": "vxlan", "gateway": "10.37.1.254",
              "networkName": "drvnet", "nwType": "data", "subnet": "10.37.1.0/24"}
    # the state record the netmaster rewrites on every endpoint create/delete
    STATE = {"networkName": "drvnet", "epCount": 3, "subnetLen": 24, "subnet": "10.37.1.0/24",
             "key": "default:drvnet", "vni": 1, "tenant": "default", "gateway": "10.37.1.254",
             "vlan": 0, "encap": "vxlan"}

    def setUp(self):
        from types import SimpleNamespace
        from drivers.docker.endpoints import DockerEndpoints
        from drivers.docker.names import Placement
        self.calls = 0
        test = self

        class Netmaster:
            async def network(self, tenant, network):
                test.calls += 1
                return dict(test.CONFIG)

        agent = SimpleNamespace(endpoints=SimpleNamespace(ready=True),
                                plumber=SimpleNamespace(host_netns=None))
        self.eps = DockerEndpoints(agent, Netmaster())
        self.p = Placement("default", "drvnet")
        self.key = self.p.network_key

    def network(self) -> dict:
        return self.successResultOf(defer.ensureDeferred(self.eps.network(self.p)))

    def test_shape_is_the_same_in_inspect_and_state(self):
        from drivers.docker.endpoints import network_shape
        self.assertEqual(network_shape(self.CONFIG), network_shape(self.STATE))
        self.assertEqual(network_shape(self.CONFIG), (24, "10.37.1.254", "vxlan"))
        self.assertNotEqual(network_shape(self.CONFIG),
                            network_shape(dict(self.STATE, encap="vlan")))

    def test_endpoint_count_rewrites_keep_the_entry(self):
        self.network()
        self.network()
        self.assertEqual(self.calls, 1)
        self.eps.revalidate(self.key, lambda: defer.succeed(dict(self.STATE, epCount=4)))
        self.network()
        self.assertEqual(self.calls, 1)

    def test_shape_change_or_deletion_drops_the_entry(self):
        self.network()
        self.eps.revalidate(self.key, lambda: defer.succeed(dict(self.STATE, gateway="10.37.1.1")))
        self.network()
        self.assertEqual(self.calls, 2)
        self.eps.revalidate(self.key, lambda: defer.succeed(None))  # gone from Redis
        self.network()
        self.assertEqual(self.calls, 3)
        self.eps.revalidate(self.key, lambda: defer.fail(RuntimeError("redis down")))
        self.network()
        self.assertEqual(self.calls, 4)

    def test_a_create_during_the_check_waits_for_the_verdict(self):
        self.network()
        pending: defer.Deferred = defer.Deferred()
        self.eps.revalidate(self.key, lambda: pending)
        d = defer.ensureDeferred(self.eps.network(self.p))
        self.assertNoResult(d)
        pending.callback(dict(self.STATE, epCount=9))
        self.assertEqual(self.successResultOf(d), self.CONFIG)
        self.assertEqual(self.calls, 1)

    def test_forget_or_another_change_during_the_check_wins(self):
        for interrupt in (lambda: self.eps.forget(self.key),
                          lambda: self.eps.revalidate(self.key, lambda: defer.succeed(None))):
            self.network()
            calls = self.calls
            pending: defer.Deferred = defer.Deferred()
            self.eps.revalidate(self.key, lambda: pending)
            interrupt()
            pending.callback(dict(self.STATE))  # same shape, but read before the interruption
            self.network()
            self.assertEqual(self.calls, calls + 1)
