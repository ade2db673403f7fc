"""The stand-in APIC against the APIC's documented JSON, through the real client and raw HTTP.

The payloads are the Cisco APIC REST API Configuration Guide's examples (the
ExampleCorp tenant); the error codes/texts checked are the ones recorded from
APICs (see drivers/aci/standin.py).  Everything listens on loopback.
"""

import json

import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool
from twisted.trial.unittest import TestCase

from drivers.aci.client import ApicClient, ApicError
from drivers.aci.standin import NO_TOKEN, StandinApic

EXAMPLE_CORP = {"fvTenant": {"attributes": {"dn": "uni/tn-ExampleCorp", "name": "ExampleCorp"},
                             "children": [
    {"fvCtx": {"attributes": {"name": "pvn1"}}},
    {"fvBD": {"attributes": {"name": "bd1"}, "children": [
        {"fvRsCtx": {"attributes": {"tnFvCtxName": "pvn1"}}},
        {"fvSubnet": {"attributes": {"ip": "10.10.100.1/24"}}}]}},
    {"fvAp": {"attributes": {"name": "OnlineStore"}, "children": [
        {"fvAEPg": {"attributes": {"name": "web"}, "children": [
            {"fvRsBd": {"attributes": {"tnFvBDName": "bd1"}}},
            {"fvRsProv": {"attributes": {"tnVzBrCPName": "webCtrct"}}}]}}]}}]}}


def dns(imdata):
    return sorted(next(iter(i.values()))["attributes"]["dn"] for i in imdata)


class StandinTests(TestCase):
    async def _setUp(self):
        self.apic = StandinApic("admin", "s3cret", token_timeout=600)
        port = await self.apic.listen()
        self.addCleanup(lambda: defer.ensureDeferred(self.apic.stop()))
        self.url = f"http://127.0.0.1:{port}"
        self.client = ApicClient([self.url], "admin", "s3cret")
        self.addCleanup(lambda: defer.ensureDeferred(self.client.close()))

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def raw(self, method, path, body=None, cookies=None, headers=None):
        resp = await treq.request(method, self.url + path, cookies=cookies or {},
                                  pool=HTTPConnectionPool(reactor, persistent=False),
                                  headers=headers or {},
                                  data=None if body is None else json.dumps(body).encode())
        return resp.code, json.loads(await treq.content(resp)), resp

    def error(self, doc):
        return doc["imdata"][0]["error"]["attributes"]

    async def test_login_reply_cookie_and_refusals(self):
        code, doc, resp = await self.raw("POST", "/api/aaaLogin.json",
                                         {"aaaUser": {"attributes": {"name": "admin",
                                                                     "pwd": "s3cret"}}})
        self.assertEqual(code, 200)
        attrs = doc["imdata"][0]["aaaLogin"]["attributes"]
        self.assertEqual(attrs["refreshTimeoutSeconds"], "600")
        self.assertEqual(doc["totalCount"], "1")
        self.assertIn(f"APIC-cookie={attrs['token']}",
                      resp.headers.getRawHeaders("set-cookie")[0])
        code, doc, _ = await self.raw("GET", "/api/class/fvTenant.json")
        self.assertEqual((code, self.error(doc)["text"]), (403, NO_TOKEN))
        self.apic.expire_tokens()
        code, doc, _ = await self.raw("GET", "/api/class/fvTenant.json",
                                      cookies={"APIC-cookie": attrs["token"]})
        self.assertEqual((code, self.error(doc)["text"]),
                         (403, "Token was invalid (Error: Token timeout)"))
        code, doc, _ = await self.raw("POST", "/api/aaaLogin.json",
                                      {"aaaUser": {"attributes": {"name": "admin", "pwd": "x"}}})
        self.assertEqual(code, 401)

    async def test_refresh_replaces_the_token_and_challenge_is_enforced(self):
        await self.client.login()
        old = self.client.token
        await self.client._refresh()
        self.assertNotEqual(self.client.token, old)
        code, _, _ = await self.raw("GET", "/api/class/fvTenant.json",
                                    cookies={"APIC-cookie": old})
        self.assertEqual(code, 403)
        chal = ApicClient([self.url], "admin", "s3cret", challenge=True)
        self.addCleanup(lambda: defer.ensureDeferred(chal.close()))
        self.assertEqual(await chal.get_class("fvTenant"), [])
        self.assertTrue(chal.url_token)
        code, doc, _ = await self.raw("GET", "/api/class/fvTenant.json",
                                      cookies={"APIC-cookie": chal.token})
        self.assertEqual(code, 403)

    async def test_documented_tenant_example_and_queries(self):
        await self.client.post("uni/tn-ExampleCorp", EXAMPLE_CORP)
        sub = await self.client.get_mo("uni/tn-ExampleCorp", query_target="subtree")
        self.assertEqual(dns(sub), sorted([
            "uni/tn-ExampleCorp", "uni/tn-ExampleCorp/ctx-pvn1", "uni/tn-ExampleCorp/BD-bd1",
            "uni/tn-ExampleCorp/BD-bd1/rsctx", "uni/tn-ExampleCorp/BD-bd1/subnet-[10.10.100.1/24]",
            "uni/tn-ExampleCorp/ap-OnlineStore", "uni/tn-ExampleCorp/ap-OnlineStore/epg-web",
            "uni/tn-ExampleCorp/ap-OnlineStore/epg-web/rsbd",
            "uni/tn-ExampleCorp/ap-OnlineStore/epg-web/rsprov-webCtrct"]))
        kids = await self.client.get_mo("uni/tn-ExampleCorp", query_target="children")
        self.assertEqual(len(kids), 3)
        only = await self.client.get_mo("uni/tn-ExampleCorp", query_target="subtree",
                                        target_subtree_class="fvAEPg,fvSubnet")
        self.assertEqual([next(iter(i)) for i in only], ["fvSubnet", "fvAEPg"])
        full = await self.client.get_mo("uni/tn-ExampleCorp/ap-OnlineStore", rsp_subtree="full")
        epg = full[0]["fvAp"]["children"][0]["fvAEPg"]
        self.assertEqual(epg["attributes"]["name"], "web")
        self.assertEqual(len(epg["children"]), 2)
        found = await self.client.get_class(
            "fvAEPg", query_target_filter='eq(fvAEPg.name,"web")')
        self.assertEqual(dns(found), ["uni/tn-ExampleCorp/ap-OnlineStore/epg-web"])
        self.assertEqual(await self.client.get_mo("uni/tn-Nope"), [])
        # the documented delete
        await self.client.post("uni/tn-ExampleCorp", {"fvTenant": {"attributes": {
            "dn": "uni/tn-ExampleCorp", "status": "deleted"}}})
        self.assertEqual(await self.client.get_mo("uni/tn-ExampleCorp", query_target="subtree"),
                         [])
        # posting at the parent's URL names the child by its naming properties
        await self.client.post("uni", {"fvTenant": {"attributes": {"name": "Other"}}})
        self.assertEqual(dns(await self.client.get_class("fvTenant")), ["uni/tn-Other"])

    async def assertRefused(self, dn, body, code, text):
        with self.assertRaises(ApicError) as cm:
            await self.client.post(dn, body)
        self.assertEqual((cm.exception.code, cm.exception.http), (code, 400))
        self.assertIn(text, cm.exception.text)

    async def test_refusals_as_the_apic_words_them_and_nothing_half_applied(self):
        await self.assertRefused("uni/tn-A", {"fvTenant": {"attributes": {"dn": "uni/tn-A"},
                                                           "children": [{"fvAp": {"attributes": {}}}]}},
                                 "822", "naming property ('fvAp.name') is not set.")
        await self.assertRefused("uni/tn-A", {"fvTenant": {"attributes": {"name": "A",
                                                                          "colour": "red"}}},
                                 "121", "Prop 'colour' not found in class 'fvTenant' "
                                        "property table")
        await self.assertRefused("uni/tn-A", {"fvTenant": {"attributes": {"name": "A"},
                                                           "children": [{"fvAEPg": {
                                                               "attributes": {"name": "e"}}}]}},
                                 "102", "fvAEPg cannot be a child of fvTenant")
        await self.assertRefused("uni/tn-A/ap-x/epg-e", {"fvAEPg": {"attributes": {
            "dn": "uni/tn-A/ap-x/epg-e", "name": "e"}}}, "102", "Dn0=uni/tn-A/ap-x")
        await self.assertRefused("uni/tn-A", {"fvTenant": {"attributes": {"name": "A"},
                                                           "children": [{"fvCtx": {"attributes": {
                                                               "name": "v",
                                                               "pcEnfPref": "maybe"}}}]}},
                                 "107", "unknown property value maybe, name pcEnfPref")
        await self.assertRefused("uni/tn-A", {"fvBogus": {"attributes": {}}}, "122", "fvBogus")
        # none of the refused requests left anything behind
        self.assertEqual(await self.client.get_class("fvTenant"), [])
        await self.client.post("uni/tn-A", {"fvTenant": {"attributes": {"name": "A"}}})
        await self.assertRefused("uni/tn-A", {"fvTenant": {"attributes": {
            "name": "A", "status": "created"}}}, "103", "already exists")

    async def test_certificate_signed_requests(self):
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.apic.add_cert("admin", "contiv", key.public_key())
        signed = ApicClient([self.url], "admin", cert_key=key, cert_name="contiv")
        self.addCleanup(lambda: defer.ensureDeferred(signed.close()))
        await signed.post("uni/tn-S", {"fvTenant": {"attributes": {"name": "S"}}})
        self.assertEqual(dns(await signed.get_class("fvTenant")), ["uni/tn-S"])
        self.assertNotIn("login", signed.calls)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = ApicClient([self.url], "admin", cert_key=other, cert_name="contiv")
        self.addCleanup(lambda: defer.ensureDeferred(forged.close()))
        with self.assertRaises(ApicError) as cm:
            await forged.get_class("fvTenant")
        self.assertEqual(cm.exception.http, 403)
