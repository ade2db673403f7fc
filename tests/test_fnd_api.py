"""REST integration: a real netmaster process on a real redis-server, driven
over HTTP exactly as netctl and Contiv's clients drive it."""

from __future__ import annotations

import json

from twisted.trial import unittest

from contiv_sdn.testing import RedisServer
from contiv_sdn.testing.netmaster import NetmasterProcess
from tests.test_fnd_helpers import Client, async_test


class NetmasterCase(unittest.TestCase):
    extra_args: tuple = ()

    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.nm = NetmasterProcess(redis_url=self.redis.url, extra_args=self.extra_args).start()
        self.addCleanup(self.nm.stop)
        self.c = Client(self.nm.url)
        self.addCleanup(self.c.close)

    # -- shortcuts ----------------------------------------------------------
    async def tenant(self, name):
        return await self.c.ok("POST", f"/api/v1/tenants/{name}/", {"tenantName": name})

    async def net(self, name, subnet, tenant="default", encap="vxlan", **kw):
        body = {"tenantName": tenant, "networkName": name, "encap": encap, "subnet": subnet, **kw}
        return await self.c.ok("POST", f"/api/v1/networks/{tenant}:{name}/", body)

    async def net_err(self, name, subnet, tenant="default", encap="vxlan", **kw):
        body = {"tenantName": tenant, "networkName": name, "encap": encap, "subnet": subnet, **kw}
        return await self.c.err("POST", f"/api/v1/networks/{tenant}:{name}/", body)

    async def epg(self, name, network, tenant="default", ok=True, **kw):
        body = {"tenantName": tenant, "groupName": name, "networkName": network, **kw}
        call = self.c.ok if ok else self.c.err
        return await call("POST", f"/api/v1/endpointGroups/{tenant}:{name}/", body)

    async def policy(self, name, tenant="default"):
        return await self.c.ok("POST", f"/api/v1/policys/{tenant}:{name}/",
                               {"tenantName": tenant, "policyName": name})

    async def rule(self, policy, rid, ok=True, tenant="default", **kw):
        body = {"tenantName": tenant, "policyName": policy, "ruleId": rid, "action": "allow",
                "direction": "in", **kw}
        call = self.c.ok if ok else self.c.err
        return await call("POST", f"/api/v1/rules/{tenant}:{policy}:{rid}/", body)

    async def inspect(self, coll, key):
        return await self.c.ok("GET", f"/api/v1/inspect/{coll}/{key}/")

    async def plugin(self, name, body, ok=True):
        call = self.c.ok if ok else self.c.err
        return await call("POST", f"/plugin/{name}", body)

    async def endpoint(self, ep_id, network, group="", tenant="default", ip="", **cfg):
        return (await self.plugin("createEndpoint", {
            "TenantName": tenant, "NetworkName": network, "ServiceName": group,
            "EndpointID": ep_id, "EPCommonName": "c-" + ep_id,
            "ConfigEP": {"Host": "fnd-host1", "IPAddress": ip, **cfg}}))["EndpointConfig"]


class HttpBehaviourTests(NetmasterCase):
    @async_test
    async def test_routes_404_and_errors_500(self):
        for method, path in [("GET", "/api/v1/networks/default:x"), ("GET", "/api/v1/nosuch/"),
                             ("PATCH", "/api/v1/tenants/default/"), ("GET", "/api/v1/"),
                             ("GET", "/nothing"), ("POST", "/api/v1/tenants/"),
                             ("GET", "/api/v1/inspect/nosuch/x/"),
                             ("GET", "/api/v1/endpoints/")]:
            code, body, _ = await self.c.request(method, path)
            self.assertEqual((code, body), (404, b"404 page not found\n"), (method, path))
        self.assertEqual(await self.c.err("GET", "/api/v1/networks/default:none/"),
                         "network not found\n")
        self.assertEqual(await self.c.err("DELETE", "/api/v1/networks/default:none/"),
                         "network not found\n")
        self.assertEqual(await self.c.err("GET", "/api/v1/inspect/Bgps/none/"), "Bgp not found\n")
        self.assertEqual(await self.c.err("POST", "/api/v1/tenants/t1/", raw=b""), "EOF\n")
        self.assertEqual(await self.c.err("POST", "/api/v1/tenants/t1/", {"tenantName": "t2"}),
                         "Invalid Key\n")
        self.assertEqual(await self.c.err("POST", "/api/v1/networks/default:-ab/",
                                          {"tenantName": "default", "networkName": "-ab",
                                           "encap": "vxlan"}),
                         "networkName string invalid format\n")

    @async_test
    async def test_wire_compatibility(self):
        # any Content-Type, case-insensitive names, null fields, PUT == POST
        await self.c.ok("POST", "/api/v1/tenants/blue/", raw=b'{"TENANTNAME":"blue",'
                        b'"defaultNetwork":null}', content_type="application/x-www-form-urlencoded")
        net = await self.c.ok("PUT", "/api/v1/networks/blue:n1/", {
            "tenantname": "blue", "NetworkName": "n1", "Encap": "vlan", "subnet": "10.9.0.0/24",
            "gateway": None, "pktTag": None, "key": "ignored"})
        self.assertEqual(net, {"key": "blue:n1", "encap": "vlan", "networkName": "n1",
                               "nwType": "data", "subnet": "10.9.0.0/24", "tenantName": "blue",
                               "link-sets": {}, "links": {"Tenant": {"type": "tenant",
                                                                     "key": "blue"}}})
        code, body, headers = await self.c.request("GET", "/api/v1/networks/blue:n1/")
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(json.loads(body), net)
        self.assertEqual(await self.c.ok("GET", "/api/v1/networks/"), [net])
        tenant = await self.c.ok("GET", "/api/v1/tenants/blue/")
        self.assertEqual(tenant["link-sets"]["Networks"],
                         {"blue:n1": {"type": "network", "key": "blue:n1"}})
        code, body, _ = await self.c.request("DELETE", "/api/v1/networks/blue:n1/")
        self.assertEqual((code, body), (200, b'"blue:n1"\n'))
        self.assertEqual(await self.c.ok("GET", "/api/v1/networks/"), [])
        v = await self.c.ok("GET", "/version")
        self.assertEqual(sorted(v), ["BuildTime", "GitCommit", "Version"])
        info = await self.c.ok("GET", "/info")
        self.assertEqual(info["current-state"], "leader")
        self.assertEqual(len(info["netmaster-nodes"]), 1)

    @async_test
    async def test_volume_routes_exist_without_semantics(self):
        self.assertEqual(await self.c.ok("GET", "/api/v1/volumes/"), [])
        self.assertEqual(await self.c.err("POST", "/api/v1/volumes/default:v/",
                                          {"tenantName": "default", "volumeName": "v"}),
                         "Invalid object type\n")
        self.assertEqual(await self.c.err("POST", "/api/v1/volumeProfiles/default:v/",
                                          {"tenantName": "default", "volumeProfileName": "v"}),
                         "Invalid object type\n")
        self.assertEqual(await self.c.err("DELETE", "/api/v1/volumes/default:v/"),
                         "volume not found\n")


class GlobalTests(NetmasterCase):
    @async_test
    async def test_first_start_defaults_and_update_rules(self):
        g = await self.c.ok("GET", "/api/v1/globals/global/")
        self.assertEqual(g, {"key": "global", "arpMode": "proxy", "fwdMode": "bridge",
                             "name": "global", "networkInfraType": "default",
                             "pvtSubnet": "172.19.0.0/16", "vlans": "1-4094", "vxlans": "1-10000"})
        self.assertEqual([t["key"] for t in await self.c.ok("GET", "/api/v1/tenants/")],
                         ["default"])
        await self.net("n1", "10.1.0.0/24", pktTag=100)
        await self.net("n2", "10.2.0.0/24", encap="vlan", pktTag=10)
        await self.net("n3", "10.3.0.0/24", encap="vlan", pktTag=11)
        oper = (await self.inspect("globals", "global"))["Oper"]
        # freeVXLANsStart is 0 for 1-10000: omitted like every zero value
        self.assertEqual(oper, {"clusterMode": "docker", "numNetworks": 3,
                                "vlansInUse": "10-11", "vxlansInUse": "100"})

        async def update(**kw):
            return await self.c.err("POST", "/api/v1/globals/global/", dict(g, **kw))

        self.assertEqual(await update(fwdMode="routing"),
                         "Unable to update forwarding mode due to existing 2 vlans and 1 vxlans\n")
        self.assertEqual(await update(pvtSubnet="10.200.0.0/16"),
                         "Unable to update private subnet due to existing 2 vlans and 1 vxlans\n")
        self.assertEqual(await update(vlans="11-100"),
                         "cannot update the vlan range due to existing vlans 10-11\n")
        self.assertEqual(await update(vxlans="200-300"),
                         "cannot update the vxlan range due to existing vxlans 100\n")
        # like Contiv, an unparsable range "does not cover" the tags in use
        self.assertEqual(await update(vxlans="1-20000"),
                         "cannot update the vxlan range due to existing vxlans 100\n")
        self.assertEqual(await update(fwdMode="x"), "fwdMode string invalid format\n")
        ok = await self.c.ok("POST", "/api/v1/globals/global/", dict(g, arpMode="flood",
                                                                     vlans="5-500"))
        self.assertEqual(ok["arpMode"], "flood")
        self.assertEqual((await self.c.ok("GET", "/api/v1/globals/global/"))["vlans"], "5-500")
        self.assertEqual(await self.net_err("n4", "10.4.0.0/24", encap="vlan", pktTag=600),
                         "requested vlan not available - vlan:600\n")
        for n in ("n1", "n2", "n3"):
            await self.c.ok("DELETE", f"/api/v1/networks/default:{n}/")
        self.assertEqual(await update(vxlans="1-20000"),
                         "does not allow vxlan range to exceed 16000 range 1-20000\n")
        self.assertEqual(await update(vlans="0-10"), "invalid range 0-10, values less than 1\n")
        ok = await self.c.ok("POST", "/api/v1/globals/global/", dict(g, fwdMode="routing"))
        self.assertEqual(ok["fwdMode"], "routing")
        await self.c.ok("DELETE", "/api/v1/globals/global/")
        self.assertEqual(await self.net_err("n5", "10.5.0.0/24"),
                         "Global configuration is not ready: global configuration is not ready\n")


class TenantTests(NetmasterCase):
    @async_test
    async def test_tenant_lifecycle_and_refusals(self):
        await self.tenant("t1")
        self.assertEqual(await self.c.err("POST", "/api/v1/tenants/t1/", {"tenantName": "t1"}),
                         "Cant change tenant parameters after its created\n")
        await self.net("n1", "10.1.1.0/24", tenant="t1")
        await self.net("n2", "10.1.2.0/24", tenant="t1")
        await self.epg("g1", "n1", tenant="t1")
        await self.policy("p1", tenant="t1")
        await self.c.ok("POST", "/api/v1/netprofiles/t1:np/",
                        {"tenantName": "t1", "profileName": "np", "bandwidth": "10mbps"})
        await self.c.ok("POST", "/api/v1/appProfiles/t1:app/",
                        {"tenantName": "t1", "appProfileName": "app", "endpointGroups": ["g1"]})
        oper = (await self.inspect("tenants", "t1"))["Oper"]
        self.assertEqual({k: oper.get(k) for k in ("totalAppProfiles", "totalEPGs",
                                                   "totalNetprofiles", "totalNetworks",
                                                   "totalPolicies")},
                         {"totalAppProfiles": 1, "totalEPGs": 1, "totalNetprofiles": 1,
                          "totalNetworks": 2, "totalPolicies": 1})
        self.assertEqual(len(oper["networks"]), 2)
        steps = [
            ("cannot delete t1, has 1 app profiles", "/api/v1/appProfiles/t1:app/"),
            ("cannot delete t1 has 1 endpoint groups", "/api/v1/endpointGroups/t1:g1/"),
            ("cannot delete t1 has 1 policies", "/api/v1/policys/t1:p1/"),
            ("Cannot delete t1 has 1 netprofiles", "/api/v1/netprofiles/t1:np/"),
            ("cannot delete t1 has 2 networks", "/api/v1/networks/t1:n1/"),
            ("cannot delete t1 has 1 networks", "/api/v1/networks/t1:n2/"),
        ]
        for message, remove in steps:
            self.assertEqual(await self.c.err("DELETE", "/api/v1/tenants/t1/"), message + "\n")
            await self.c.ok("DELETE", remove)
        self.assertEqual(await self.c.ok("DELETE", "/api/v1/tenants/t1/"), "t1")
        self.assertEqual(await self.c.err("GET", "/api/v1/tenants/t1/"), "tenant not found\n")
        self.assertEqual(await self.net_err("n1", "10.1.1.0/24", tenant="t1"), "Tenant not found\n")


class NetworkTests(NetmasterCase):
    @async_test
    async def test_tags_subnets_and_refusals(self):
        await self.net("a", "10.1.0.0/24", pktTag=1000)
        await self.net("b", "10.2.0.0/24", pktTag=1001)
        await self.net("c", "10.3.0.0/24", pktTag=2000)
        await self.net("v", "10.4.0.0/24", encap="vlan")
        opers = [(await self.inspect("networks", f"default:{n}"))["Oper"] for n in "abcv"]
        self.assertEqual([(o.get("pktTag"), o.get("externalPktTag")) for o in opers],
                         [(1, 1000), (2, 1001), (3, 2000), (1, None)])
        self.assertEqual(opers[0]["availableIPAddresses"], "10.1.0.1-10.1.0.254")
        self.assertNotIn("allocatedIPAddresses", opers[0])
        # GET echoes the user's pkt-tag only
        self.assertNotIn("pktTag", await self.c.ok("GET", "/api/v1/networks/default:v/"))
        self.assertEqual(await self.net_err("x", "10.9.0.0/24", encap="vlan", pktTag=1),
                         "requested vlan not available - vlan:1\n")
        self.assertEqual(await self.net_err("x", "10.9.0.0/24", pktTag=1000),
                         "requested vxlan not available\n")
        self.assertEqual(await self.net_err("x", "10.9.0.0/24", pktTag=10001),
                         "requested vxlan not available\n")
        self.assertEqual(await self.net_err("x", "10.1.0.128/25"),
                         "network a conflicts with subnet 10.1.0.128/25\n")
        await self.net("six", "10.8.0.0/24", ipv6Subnet="2001:db8::/64")
        self.assertEqual(await self.net_err("x", "10.9.0.0/24", ipv6Subnet="2001:db8::/100"),
                         "network six conflicts with subnetv6  2001:db8::/100\n")
        self.assertEqual(await self.net_err("x", "10.9.0.0/24", gateway="10.9.1.254"),
                         "hostIP 10.9.1.254 is exceeding beyond subnet 10.9.0.0/24, hostID 510\n")
        self.assertEqual(await self.net_err("x", "12.0.0.0/7"), "subnet length 7 not supported\n")
        self.assertEqual(await self.net_err("x", "10.9.0.20-10.9.0.10/24"),
                         "Network subnet format not valid\n")
        self.assertEqual(await self.net_err("a", "10.1.0.0/24", pktTag=1000),
                         "Cant change network parameters after its created\n")
        # other tenants may overlap
        await self.tenant("t2")
        await self.net("a", "10.1.0.0/24", tenant="t2")
        await self.epg("web", "a")
        self.assertEqual(await self.net_err("web", "10.7.0.0/24"),
                         "EndpointGroup web conflicts with the network name\n")
        self.assertEqual(await self.c.err("DELETE", "/api/v1/networks/default:a/"),
                         "cannot delete a has 1 endpoint groups\n")
        await self.endpoint("fnd-ep1", "b")
        self.assertEqual(await self.c.err("DELETE", "/api/v1/networks/default:b/"),
                         "Error: Network has active endpoints\n")
        # a freed tag is reusable at once
        await self.c.ok("DELETE", "/api/v1/networks/default:c/")
        await self.net("c2", "10.3.0.0/24", pktTag=2000)
        self.assertEqual((await self.inspect("networks", "default:c2"))["Oper"]["pktTag"], 3)

    @async_test
    async def test_range_subnet_and_gateway_strings(self):
        await self.net("r", "60.1.1.10-60.1.1.20/24", gateway="60.1.1.254")
        oper = (await self.inspect("networks", "default:r"))["Oper"]
        self.assertEqual(oper["availableIPAddresses"], "60.1.1.10-60.1.1.20")
        self.assertNotIn("allocatedIPAddresses", oper)
        await self.net("g", "60.1.2.0/24", gateway="60.1.2.254")
        for i in range(2):
            ep = await self.endpoint(f"fnd-g{i}", "g")
            self.assertEqual(ep["ipAddress"], f"60.1.2.{i + 1}")
        ep = await self.endpoint("fnd-r0", "r")
        self.assertEqual((ep["ipAddress"], ep["macAddress"]), ("60.1.1.10", "02:02:3c:01:01:0a"))
        oper = (await self.inspect("networks", "default:g"))["Oper"]
        self.assertEqual((oper["allocatedIPAddresses"], oper["availableIPAddresses"],
                          oper["allocatedAddressesCount"], oper["numEndpoints"]),
                         ("60.1.2.1-60.1.2.2, 60.1.2.254", "60.1.2.3-60.1.2.253", 2, 2))
        self.assertEqual([e["endpointID"] for e in oper["endpoints"]], ["fnd-g0", "fnd-g1"])


class GroupTests(NetmasterCase):
    @async_test
    async def test_epg_create_update_delete(self):
        await self.net("n", "20.1.1.0/24", gateway="20.1.1.254")
        self.assertEqual(await self.epg("g", "nope", ok=False), "Network nope not found\n")
        self.assertEqual(await self.epg("g", "n", ok=False, tenant="nope"), "Tenant not found\n")
        await self.net("n2", "20.1.2.0/24")
        self.assertEqual(await self.epg("n2", "n", ok=False),
                         "Network n2 conflicts with the endpointGroup name\n")
        self.assertEqual(await self.epg("g", "n", ok=False, policies=["p"]), "Policy not found\n")
        self.assertEqual(await self.epg("g", "n", ok=False, netProfile="np"),
                         "netprofile not found\n")
        self.assertEqual(await self.epg("g", "n", ok=False, extContractsGrps=["ec"]),
                         "External contracts group ec not found\n")
        self.assertEqual(await self.epg("g", "n", ok=False, ipPool="20.1.2.1-20.1.2.5"),
                         "bad ip-pool 20.1.2.1-20.1.2.5, EPG ip-pool must be a subset of network "
                         "20.1.1.0/24\n")
        self.assertEqual(await self.epg("g", "n", ok=False, ipPool="20.1.1.250-20.1.1.255"),
                         "ip address 20.1.1.254 is not available\n")
        self.assertEqual(await self.epg("g", "n", ok=False, ipPool="20.1.1.9-20.1.2.1"),
                         "invalid ip-pool 20.1.1.9-20.1.2.1\n")
        # nothing of the refused creates was kept
        self.assertEqual(await self.c.ok("GET", "/api/v1/endpointGroups/"), [])
        await self.policy("p1")
        await self.policy("p2")
        await self.c.ok("POST", "/api/v1/netprofiles/default:np/",
                        {"tenantName": "default", "profileName": "np", "bandwidth": "1gbps"})
        g = await self.epg("g", "n", ipPool="20.1.1.10-20.1.1.12", policies=["p1"],
                           netProfile="np", cfgdTag="tag1")
        self.assertEqual(g["links"]["NetProfile"], {"type": "netprofile", "key": "default:np"})
        self.assertEqual(await self.epg("h", "n", ok=False, ipPool="20.1.1.12-20.1.1.20"),
                         "ip address 20.1.1.12 is not available\n")
        ids = []
        for name in ("h", "i"):
            await self.epg(name, "n")
            ids.append((await self.c.ok("GET", "/api/v1/inspect/endpointGroups/default:"
                                        + name + "/"))["Oper"].get("groupTag"))
        self.assertEqual(ids, ["h.default", "i.default"])
        self.assertEqual(await self.epg("g", "n2", ok=False, ipPool="20.1.1.10-20.1.1.12"),
                         "Cannot change network association after epg is created.\n")
        self.assertEqual(await self.epg("g", "n", ok=False),
                         "Cannot change IP pool after epg is created.\n")
        # update: swap policies, drop the netprofile
        await self.epg("g", "n", ipPool="20.1.1.10-20.1.1.12", policies=["p2"])
        stored = await self.c.ok("GET", "/api/v1/endpointGroups/default:g/")
        self.assertEqual((stored["policies"], stored.get("netProfile"), stored["cfgdTag"]),
                         (["p2"], None, "tag1"))
        p1 = await self.c.ok("GET", "/api/v1/policys/default:p1/")
        p2 = await self.c.ok("GET", "/api/v1/policys/default:p2/")
        self.assertEqual((p1["link-sets"], list(p2["link-sets"]["EndpointGroups"])),
                         ({}, ["default:g"]))
        self.assertEqual(await self.c.err("DELETE", "/api/v1/policys/default:p2/"),
                         "Policy is being used\n")
        # pool allocations, exhaustion and the EPG oper strings
        ips = [(await self.endpoint(f"fnd-p{i}", "n", group="g"))["ipAddress"] for i in range(3)]
        self.assertEqual(ips, ["20.1.1.10", "20.1.1.11", "20.1.1.12"])
        self.assertEqual(await self.plugin("createEndpoint", {
            "TenantName": "default", "NetworkName": "n", "ServiceName": "g",
            "EndpointID": "fnd-p3", "ConfigEP": {}}, ok=False),
            "auto allocation failed - address exhaustion in pool 20.1.1.10-20.1.1.12\n")
        oper = (await self.inspect("endpointGroups", "default:g"))["Oper"]
        self.assertEqual((oper["allocatedIPAddresses"], oper.get("availableIPAddresses"),
                          oper["numEndpoints"], oper["groupTag"]),
                         ("20.1.1.10-20.1.1.12", None, 3, "tag1"))
        net_oper = (await self.inspect("networks", "default:n"))["Oper"]
        self.assertEqual((net_oper["allocatedIPAddresses"], net_oper["allocatedAddressesCount"]),
                         ("20.1.1.10-20.1.1.12, 20.1.1.254", 3))
        self.assertEqual(await self.c.err("DELETE", "/api/v1/endpointGroups/default:g/"),
                         "Error: EPG g has active endpoints\n")
        await self.c.ok("POST", "/api/v1/appProfiles/default:app/",
                        {"tenantName": "default", "appProfileName": "app", "endpointGroups": ["h"]})
        self.assertEqual(await self.c.err("DELETE", "/api/v1/endpointGroups/default:h/"),
                         "Cannot delete h, associated to appProfile default:app\n")
        for i in range(3):
            await self.plugin("deleteEndpoint", {"TenantName": "default", "NetworkName": "n",
                                                 "EndpointID": f"fnd-p{i}"})
        await self.c.ok("DELETE", "/api/v1/endpointGroups/default:g/")
        net_oper = (await self.inspect("networks", "default:n"))["Oper"]
        self.assertEqual(net_oper["allocatedIPAddresses"], "20.1.1.254")
        p2 = await self.c.ok("GET", "/api/v1/policys/default:p2/")
        self.assertEqual(p2["link-sets"], {})


class PolicyTests(NetmasterCase):
    @async_test
    async def test_rules(self):
        await self.net("n", "30.1.1.0/24")
        await self.epg("web", "n")
        await self.policy("p")
        cases = [
            ({"toNetwork": "n"}, "can not specify 'to' parameters in incoming rule"),
            ({"fromNetwork": "n", "fromIpAddress": "1.2.3.4"},
             "can not specify both from network and from ip address"),
            ({"fromNetwork": "n", "fromEndpointGroup": "web"},
             "can not specify both from network and from EndpointGroup"),
            ({"direction": "out", "fromEndpointGroup": "web"},
             "can not specify 'from' parameters in outgoing rule"),
            ({"direction": "out", "toNetwork": "n", "toIpAddress": "1.2.3.4"},
             "can not specify both to-network and to-ip address"),
            ({"direction": "out", "toNetwork": "n", "toEndpointGroup": "web"},
             "can not specify both to-network and to-EndpointGroup"),
            ({"fromEndpointGroup": "db"}, "endpoint group not found"),
            ({"fromNetwork": "nn"}, "from Network not found"),
            ({"direction": "out", "toNetwork": "nn"}, "to Network not found"),
            ({"direction": "sideways"}, "direction string invalid format"),
            ({"priority": 101}, "priority Value Out of bound"),
            ({"toIpAddress": "30.1.1.5"},
             "failed to configure 30.1.1.5, 0 endpoint groups linked to policy p "),
        ]
        for kw, message in cases:
            self.assertEqual(await self.rule("p", "1", ok=False, **kw), message + "\n", kw)
        self.assertEqual(await self.rule("nop", "1", ok=False), "Policy not found\n")
        r = await self.rule("p", "1", fromEndpointGroup="web", protocol="tcp", port=80)
        self.assertEqual((r["priority"], r["links"]["MatchEndpointGroup"]),
                         (1, {"type": "endpointGroup", "key": "default:web"}))
        self.assertEqual(await self.rule("p", "1", ok=False),
                         "can not update a rule after its created\n")
        await self.rule("p", "2", direction="out", action="deny", protocol="icmp")
        pol = await self.c.ok("GET", "/api/v1/policys/default:p/")
        self.assertEqual(sorted(pol["link-sets"]["Rules"]), ["default:p:1", "default:p:2"])
        web = await self.c.ok("GET", "/api/v1/endpointGroups/default:web/")
        self.assertEqual(list(web["link-sets"]["MatchRules"]), ["default:p:1"])
        await self.epg("db", "n", policies=["p"])
        await self.endpoint("fnd-db1", "n", group="db")
        self.assertEqual(await self.rule("p", "3", ok=False, toIpAddress="30.1.1.9"),
                         "failed to configure 30.1.1.9, ip address is not in epg db:default\n")
        await self.rule("p", "3", toIpAddress="30.1.1.1")
        oper = (await self.inspect("policys", "default:p"))["Oper"]
        self.assertEqual((oper["numEndpoints"], [e["endpointID"] for e in oper["endpoints"]]),
                         (1, ["fnd-db1"]))
        await self.c.ok("POST", "/api/v1/policys/default:p/",
                        {"tenantName": "default", "policyName": "p"})
        await self.plugin("deleteEndpoint", {"EndpointID": "fnd-db1"})
        await self.epg("db", "n", policies=[])
        await self.c.ok("DELETE", "/api/v1/policys/default:p/")
        self.assertEqual(await self.c.ok("GET", "/api/v1/rules/"), [])
        web = await self.c.ok("GET", "/api/v1/endpointGroups/default:web/")
        self.assertEqual(web["link-sets"], {})


class OtherObjectTests(NetmasterCase):
    @async_test
    async def test_netprofile_appprofile_contracts_aci_bgp(self):
        np = {"tenantName": "default", "profileName": "np", "bandwidth": "10 kbps", "burst": 1}
        self.assertEqual(await self.c.err("POST", "/api/v1/netprofiles/default:np/", np),
                         "Invalid Burst size. burst size > 1500 bytes\n")
        self.assertEqual(await self.c.err("POST", "/api/v1/netprofiles/default:np/",
                                          dict(np, burst=10487)), "burst Value Out of bound\n")
        await self.c.ok("POST", "/api/v1/netprofiles/default:np/", dict(np, burst=100))
        await self.c.ok("POST", "/api/v1/netprofiles/default:np/", dict(np, burst=200, DSCP=5))
        stored = await self.c.ok("GET", "/api/v1/netprofiles/default:np/")
        self.assertEqual((stored["burst"], stored["DSCP"]), (200, 5))
        await self.net("n", "40.1.1.0/24")
        await self.epg("g", "n", netProfile="np")
        self.assertEqual(await self.c.err("DELETE", "/api/v1/netprofiles/default:np/"),
                         "NetProfile is being used\n")

        app = {"tenantName": "default", "appProfileName": "app", "endpointGroups": ["g", "x"]}
        self.assertEqual(await self.c.err("POST", "/api/v1/appProfiles/default:app/", app),
                         "EndpointGroup default:x not found\n")
        await self.c.ok("POST", "/api/v1/appProfiles/default:app/", dict(app, endpointGroups=["g"]))
        g = await self.c.ok("GET", "/api/v1/endpointGroups/default:g/")
        self.assertEqual(g["links"]["AppProfile"], {"type": "appProfile", "key": "default:app"})
        aci = {"name": "aciGw", "enforcePolicies": "yes", "includeCommonTenant": "no",
               "physicalDomain": "phys"}
        await self.c.ok("POST", "/api/v1/aciGws/aciGw/", aci)
        self.assertEqual((await self.inspect("aciGws", "aciGw"))["Oper"], {"numAppProfiles": 1})
        self.assertEqual(await self.c.err("DELETE", "/api/v1/aciGws/aciGw/"),
                         "1 App-Profiles found. Delete them first\n")
        await self.c.ok("POST", "/api/v1/appProfiles/default:app/", dict(app, endpointGroups=[]))
        g = await self.c.ok("GET", "/api/v1/endpointGroups/default:g/")
        self.assertEqual(g["links"]["AppProfile"], {})
        await self.c.ok("DELETE", "/api/v1/appProfiles/default:app/")
        await self.c.ok("DELETE", "/api/v1/aciGws/aciGw/")

        ec = {"tenantName": "default", "contractsGroupName": "ec", "contractsType": "both",
              "contracts": ["uni/tn-x/brc-y"]}
        self.assertEqual(await self.c.err("POST", "/api/v1/extContractsGroups/default:ec/", ec),
                         "Contracts group need to be either 'provided' or 'consumed'\n")
        await self.c.ok("POST", "/api/v1/extContractsGroups/default:ec/",
                        dict(ec, contractsType="consumed"))
        self.assertEqual(await self.c.err("POST", "/api/v1/extContractsGroups/default:ec/",
                                          dict(ec, contractsType="consumed")),
                         "external contracts update not supported\n")
        await self.epg("g", "n", netProfile="np", extContractsGrps=["ec"])
        self.assertEqual(await self.c.err("DELETE", "/api/v1/extContractsGroups/default:ec/"),
                         "External contracts group is in-use\n")

        bgp = {"hostname": "fnd-host1", "routerip": "50.1.1.1/24", "as": "65002",
               "neighbor-as": "500", "neighbor": "50.1.1.2"}
        await self.c.ok("POST", "/api/v1/Bgps/fnd-host1/", bgp)
        self.assertEqual(await self.inspect("Bgps", "fnd-host1"),
                         {"Config": dict(bgp, key="fnd-host1"), "Oper": {}})
        self.assertEqual(await self.c.err("POST", "/api/v1/Bgps/fnd-host1/",
                                          dict(bgp, routerip="50.1.1.1")),
                         "routerip string invalid format\n")
        await self.c.ok("DELETE", "/api/v1/Bgps/fnd-host1/")

    @async_test
    async def test_service_lb(self):
        await self.net("svc", "50.1.1.0/24")
        svc = {"tenantName": "default", "serviceName": "lb", "networkName": "svc",
               "selectors": ["app=web"], "ports": ["80:8080:TCP"]}
        path = "/api/v1/serviceLBs/default:lb/"
        self.assertEqual(await self.c.err("POST", path, dict(svc, selectors=[])),
                         "Invalid selector options\n")
        self.assertEqual(await self.c.err("POST", path, dict(svc, ports=["80:x:TCP"])),
                         "Invalid Port maping . Port format is - Port:TargetPort:Protocol\n")
        self.assertEqual(await self.c.err("POST", path, dict(svc, ports=["80"])),
                         "Invalid Port maping . Port format is - Port:TargetPort:Protocol\n")
        self.assertEqual(await self.c.err("POST", path, dict(svc, networkName="no")),
                         "Network no not found\n")
        self.assertEqual(await self.c.err("POST", path, dict(svc, selectors=["a=b=c"])),
                         "Invalid selector a=b=c. selector format is key1=value1\n")
        await self.c.ok("POST", path, dict(svc, ipAddress="50.1.1.100"))
        await self.endpoint("fnd-w1", "svc", **{"Labels": {"app": "web", "tier": "1"}})
        await self.endpoint("fnd-w2", "svc")
        await self.plugin("updateEndpoint", {"EndpointID": "fnd-w2", "Event": "start",
                                             "Labels": {"app": "web"}, "IPAddress": "x"})
        oper = (await self.inspect("serviceLBs", "default:lb"))["Oper"]
        self.assertEqual((oper["serviceVip"], oper["numProviders"],
                          [p["endpointID"] for p in oper["providers"]]),
                         ("50.1.1.100", 2, ["fnd-w1", "fnd-w2"]))
        self.assertEqual(oper["providers"][0]["labels"], "map[app:web tier:1]")
        await self.c.ok("POST", path, dict(svc, ports=["81:8080:UDP"]))
        self.assertEqual((await self.inspect("serviceLBs", "default:lb"))["Oper"]["serviceVip"],
                         "50.1.1.100")
        self.assertEqual(await self.c.err("DELETE", "/api/v1/networks/default:svc/"),
                         "cannot delete svc has 1 services \n")
        services = await self.c.ok("GET", "/services")
        self.assertEqual([s["ipaddress"] for s in services], ["50.1.1.100"])
        await self.c.ok("DELETE", path)
        oper = (await self.inspect("networks", "default:svc"))["Oper"]
        self.assertEqual(oper["allocatedIPAddresses"], "50.1.1.1-50.1.1.2")


class PluginTests(NetmasterCase):
    @async_test
    async def test_addresses_and_endpoints(self):
        await self.net("n", "70.1.1.0/29", gateway="70.1.1.6", ipv6Subnet="2001:db8:1::/64",
                       ipv6Gateway="2001:db8:1::1")
        code, body, _ = await self.c.request("POST", "/plugin/allocAddress",
                                             {"NetworkID": "n.default"}, content_type=None)
        self.assertEqual((code, body), (404, b"404 page not found\n"))
        got = [await self.plugin("allocAddress", {"NetworkID": "n.default"}) for _ in range(2)]
        self.assertEqual(got, [{"NetworkID": "n.default", "IPv4Address": "70.1.1.1/29"},
                               {"NetworkID": "n.default", "IPv4Address": "70.1.1.2/29"}])
        self.assertEqual(await self.plugin("allocAddress", {"NetworkID": "n.default",
                                                            "PreferredIPv4Address": "70.1.1.2"},
                                           ok=False),
                         "ip address 70.1.1.2 is not available\n")
        await self.plugin("releaseAddress", {"NetworkID": "n.default", "IPv4Address": "70.1.1.1/29"})
        # the docker flow: IPAM allocation first, then the endpoint with that address
        ep = await self.endpoint("fnd-e1", "n", ip="70.1.1.2")
        self.assertEqual((ep["ipAddress"], ep["macAddress"], ep["ipv6Address"]),
                         ("70.1.1.2", "02:02:46:01:01:02", "2001:db8:1::2"))
        again = await self.endpoint("fnd-e1", "n")
        self.assertEqual(again, ep)
        self.assertEqual(await self.plugin("createEndpoint", {
            "TenantName": "default", "NetworkName": "n", "EndpointID": "fnd-e2",
            "ConfigEP": {"IPAddress": "70.1.1.2"}}, ok=False),
            "ip address 70.1.1.2 is already in use\n")
        ips = [(await self.endpoint(f"fnd-x{i}", "n"))["ipAddress"] for i in range(3)]
        self.assertEqual(ips, ["70.1.1.1", "70.1.1.3", "70.1.1.4"])
        await self.endpoint("fnd-x3", "n")
        self.assertEqual(await self.plugin("allocAddress", {"NetworkID": "n.default"}, ok=False),
                         "auto allocation failed - address exhaustion in subnet 70.1.1.0/29\n")
        await self.plugin("updateEndpoint", {"EndpointID": "fnd-e1", "Event": "start",
                                             "ContainerID": "abcdef123", "Labels": {"k": "v"}})
        oper = await self.inspect("endpoints", "cdef1")
        self.assertEqual(oper, {"Oper": {
            "key": "cdef1", "containerID": "abcdef123", "containerName": "c-fnd-e1",
            "endpointID": "fnd-e1", "homingHost": "fnd-host1",
            "ipAddress": ["70.1.1.2", "2001:db8:1::2"], "labels": "map[k:v]",
            "macAddress": "02:02:46:01:01:02", "network": "n.default"}})
        self.assertEqual(await self.c.err("GET", "/api/v1/inspect/endpoints/nosuch/"),
                         "endpoint not found\n")
        deleted = await self.plugin("deleteEndpoint", {"TenantName": "default",
                                                       "NetworkName": "n", "EndpointID": "fnd-e1"})
        self.assertEqual(deleted["EndpointConfig"]["ipAddress"], "70.1.1.2")
        self.assertEqual(await self.plugin("deleteEndpoint", {"EndpointID": "fnd-e1"}),
                         {"EndpointConfig": None})
        self.assertEqual((await self.endpoint("fnd-e3", "n"))["ipAddress"], "70.1.1.2")
        oper = (await self.inspect("networks", "default:n"))["Oper"]
        self.assertEqual((oper["numEndpoints"], oper["allocatedAddressesCount"]), (5, 5))

    @async_test
    async def test_pools_ipv6_bodies_and_cleanup(self):
        await self.net("m", "80.1.1.0/24", ipv6Subnet="2001:db8:2::/64")
        await self.epg("mg", "m", ipPool="80.1.1.50-80.1.1.60")
        self.assertEqual(await self.c.err("POST", "/plugin/allocAddress", raw=b""), "EOF\n")
        self.assertEqual(await self.c.err("POST", "/plugin/allocAddress", raw=b"x"),
                         "invalid character 'x' looking for beginning of value\n")
        self.assertEqual(await self.plugin("allocAddress", {"NetworkID": "nope.default"}, ok=False),
                         "network not found\n")
        got = await self.plugin("allocAddress", {"NetworkID": "m:mg.default"})
        self.assertEqual(got["IPv4Address"], "80.1.1.50/24")
        got = await self.plugin("allocAddress", {"AddressPool": "80.1.1.0/24:default"})
        self.assertEqual(got["IPv4Address"], "80.1.1.1/24")
        got = await self.plugin("allocAddress", {"AddressPool": "2001:db8:2::/64"})
        self.assertEqual(got["IPv4Address"], "2001:db8:2::1/64")
        ep = await self.endpoint("fnd-m1", "m", group="mg", ip="80.1.1.50")
        self.assertEqual((ep["ipAddress"], ep["ipv6Address"], ep["group"]),
                         ("80.1.1.50", "2001:db8:2::2", "default:mg"))
        # an address held by an endpoint is not released by a stray IPAM call
        await self.plugin("releaseAddress", {"NetworkID": "m:mg.default",
                                             "IPv4Address": "80.1.1.50/24"})
        self.assertEqual((await self.endpoint("fnd-m2", "m", group="mg"))["ipAddress"],
                         "80.1.1.51")
        await self.endpoint("fnd-m3", "m")
        self.assertEqual(await self.c.ok("GET", "/debug/ofnet"), {})
        self.assertEqual(await self.c.ok("GET", "/services"), [])
        gone = await self.c.ok("DELETE", "/debug/epcleanup/tenant/default/group/mg")
        self.assertEqual(sorted(e["endpointID"] for e in gone), ["fnd-m1", "fnd-m2"])
        oper = (await self.inspect("endpointGroups", "default:mg"))["Oper"]
        self.assertEqual((oper.get("numEndpoints"), oper["availableIPAddresses"]),
                         (None, "80.1.1.50-80.1.1.60"))
        net = (await self.inspect("networks", "default:m"))["Oper"]
        self.assertEqual([e["endpointID"] for e in net["endpoints"]], ["fnd-m3"])
