"""Freshness: the DNS service follows Redis, written by a real netmaster.

A real redis-server and a real ``twistd netmaster`` on it; endpoints are
created and deleted through ``/plugin/createEndpoint`` exactly as netplugin
does, groups/networks/serviceLBs through the REST API.  The DNS service (as
netplugin runs it) connects to the same Redis.  The network's subnet is in
127.0.0.0/8 so that the test's client can send from an endpoint's address, as
the container would.

Proves: a new endpoint becomes resolvable and a deleted one NXDOMAIN by
following the change feed; a change published while the subscription was
down is picked up by the resync on reconnection; serviceLB names; and the
last view keeps answering while the netmaster and Redis are down.
"""

from __future__ import annotations

import socket

import dns.rcode
from twisted.internet import defer, threads
from twisted.trial import unittest

from contiv_sdn.agent.netmaster import NetmasterClient
from contiv_sdn.dns.service import DNSService
from contiv_sdn.testing import RedisServer
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.wait import wait_for
from tests.test_dns_fixtures import addresses, query
from tests.test_fnd_helpers import async_test

SUBNET = "127.42.1.0/24"


class FeedTests(unittest.TestCase):
    timeout = 120

    @async_test
    async def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.nm = NetmasterProcess(redis_url=self.redis.url)
        await threads.deferToThread(self.nm.start)
        self.addCleanup(lambda: threads.deferToThread(self.nm.stop))
        self.client = NetmasterClient(self.nm.url)
        self.addCleanup(self.client.close)
        await self.rest("POST", "/api/v1/networks/default:contiv-net/", {
            "tenantName": "default", "networkName": "contiv-net", "encap": "vxlan",
            "subnet": SUBNET, "gateway": "127.42.1.254"})
        for group in ("web", "db"):
            await self.rest("POST", f"/api/v1/endpointGroups/default:{group}/", {
                "tenantName": "default", "networkName": "contiv-net", "groupName": group})
        self.dns = DNSService(["127.0.0.6:0"], [], store_url=self.redis.url)
        self.dns.startService()
        self.addCleanup(self.dns.stopService)
        self.port = self.dns.addresses[0][1]
        await wait_for(lambda: self.dns.feed is not None, timeout=10,
                       what="the DNS service connected to Redis")
        await self.dns.feed.synced()
        self.n = 0

    def rest(self, method, path, body=None):
        return defer.ensureDeferred(self.client.request(method, path, f"{method} {path}", body))

    async def endpoint(self, group, name):
        self.n += 1
        return await self.client.create_endpoint("default", "contiv-net", group,
                                                 f"{self.n:064x}", name, f"c{self.n}", "h1", "",
                                                 f"port{self.n}")

    def ask(self, name, source, rdtype="A"):
        return query(name, rdtype, port=self.port, host="127.0.0.6", source=source)

    async def resolves(self, name, source, want):
        m = await self.ask(name, source)
        return sorted(addresses(m)) == sorted(want) and m.rcode() == dns.rcode.NOERROR

    @async_test
    async def test_endpoints_appear_and_disappear(self):
        web = await self.endpoint("web", "web1")
        db = await self.endpoint("db", "db")
        me = web["ipAddress"]
        await wait_for(lambda: self.resolves("db", me, [db["ipAddress"]]), timeout=10,
                       what="db resolvable after its endpoint was created")
        web2 = await self.endpoint("web", "web2")
        await wait_for(lambda: self.resolves("web", me, [me, web2["ipAddress"]]), timeout=10,
                       what="the group's new member in its answer")
        await self.client.delete_endpoint("default", "contiv-net", "db", db["id"])

        async def gone():
            return (await self.ask("db", me)).rcode() == dns.rcode.NXDOMAIN
        await wait_for(gone, timeout=10, what="db NXDOMAIN after its endpoint was deleted")

    @async_test
    async def test_change_lost_while_unsubscribed_is_read_on_resync(self):
        web = await self.endpoint("web", "web1")
        me = web["ipAddress"]
        await wait_for(lambda: self.resolves("web1", me, [me]), timeout=10, what="web1")
        # One send: the subscription is killed, then a record is written without any
        # notification.  Only the resync after the reconnection can show it.
        record = ('{"id":"ghost","tenant":"default","network":"default:contiv-net",'
                  '"networkName":"contiv-net","group":"","groupName":"","ipAddress":'
                  '"127.42.1.77","ipv6Address":"","containerName":"ghost"}')
        cmds = [["CLIENT", "KILL", "TYPE", "pubsub"],
                ["HSET", "contiv:state:endpoint", "ghost", record]]
        wire = b"".join(b"*%d\r\n" % len(c) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in c) for c in cmds)

        def send():
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.redis.socket)
                s.sendall(wire)
                got = b""
                while got.count(b"\r\n") < 2:
                    got += s.recv(100)
                return got
        await threads.deferToThread(send)
        await wait_for(lambda: self.resolves("ghost", me, ["127.42.1.77"]), timeout=10,
                       what="a record written while unsubscribed, after the resync")

    @async_test
    async def test_service_lb_name(self):
        web = await self.endpoint("web", "web1")
        await self.rest("POST", "/api/v1/serviceLBs/default:frontend/", {
            "tenantName": "default", "serviceName": "frontend", "networkName": "contiv-net",
            "ipAddress": "127.42.1.200", "selectors": ["app=web"], "ports": ["80:8080:TCP"]})
        await wait_for(lambda: self.resolves("frontend", web["ipAddress"], ["127.42.1.200"]),
                       timeout=10, what="the serviceLB's name resolving to its VIP")

    @async_test
    async def test_answers_survive_netmaster_and_redis_down(self):
        web = await self.endpoint("web", "web1")
        db = await self.endpoint("db", "db")
        me = web["ipAddress"]
        await wait_for(lambda: self.resolves("db", me, [db["ipAddress"]]), timeout=10, what="db")
        await threads.deferToThread(self.nm.stop)
        self.redis.stop(remove=False)
        self.assertTrue(await self.resolves("db", me, [db["ipAddress"]]))
        self.assertTrue(await self.resolves("web", me, [me]))
