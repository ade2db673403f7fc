"""The OpenAPI document: valid 3.1, served by the netmaster, and in agreement with
the router both ways.

Agreement is checked twice: against the router's table (``NetmasterAPI.routes``)
and against a real ``twistd netmaster`` answering real requests.  A request is
"answered" when the reply is anything but the router's ``404 page not found``
(a missing object is ``network not found``, a bad body is Go's decode error:
both are answers).  Bodies sent to write routes are JSON arrays, which every
route refuses before acting, so the probes change nothing.  Live answers (and
the request bodies that made them) are validated against the document's schemas.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from twisted.trial import unittest

from contiv_sdn.model.schema import TYPES
from contiv_sdn.ops import openapi
from contiv_sdn.testing import RedisServer, require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess

NOT_FOUND = b"404 page not found\n"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
SAMPLE = {"key": "zz:zz", "id": "zz", "tenant": "nonesuch", "category": "net"}


def fill(template: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: SAMPLE[m.group(1)], template)


def template_regex(template: str) -> re.Pattern:
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p)
                              for p in re.split(r"(\{[^}]+\})", template)))


def documented(method: str, path: str) -> Optional[str]:
    for m, template in openapi.operations():
        if m == method and template_regex(template).fullmatch(path):
            return template
    return None


def routed(api: Any, method: str, path: str) -> bool:
    return any(method in route[0] and route[1].fullmatch(path) for route in api.routes)


class _Stub:
    """Just enough of a Master for the router to be built (no handler runs)."""

    def __getattr__(self, name: str) -> Any:
        return _Stub()

    def __call__(self, *a: Any, **kw: Any) -> Any:
        return _Stub()


def schema_validator(doc: Dict[str, Any], schema: Dict[str, Any]) -> OAS31Validator:
    return OAS31Validator(dict(schema, components=doc["components"]))


class DocumentTests(unittest.TestCase):
    def test_valid_openapi_31(self):
        doc = openapi.document()
        validate(doc)  # raises on any violation
        self.assertEqual(doc["openapi"], "3.1.0")

    def test_from_the_model_tables(self):
        """Every object type's fields, limits and regexes are in its schema; every
        /plugin request shape is documented with its Go fields."""
        from contiv_sdn.model.plugin_api import REQUESTS
        doc = openapi.document()
        schemas = doc["components"]["schemas"]
        for spec in TYPES.values():
            if not spec.has_config:
                continue
            props = schemas[spec.go_name]["properties"]
            for f in spec.fields:
                self.assertIn(f.name, props, spec.go_name)
                if f.regex:
                    self.assertEqual(props[f.name]["pattern"], f.regex)
                if f.maxlen:
                    self.assertEqual(props[f.name]["maxLength"], f.maxlen)
            self.assertEqual(schemas[f"{spec.go_name}Request"]["required"],
                             list(spec.key_fields))
        for name, shape in REQUESTS.items():
            body = doc["paths"][f"/plugin/{name}"]["post"]["requestBody"]["content"]
            ref = body["application/json"]["schema"]["$ref"]
            self.assertEqual(ref, f"#/components/schemas/{shape.go_name}")
            self.assertEqual(list(schemas[shape.go_name]["properties"]), list(shape.fields))

    def test_route_table_and_document_agree(self):
        from contiv_sdn.api.app import NetmasterAPI
        api = NetmasterAPI(_Stub())
        ops = openapi.operations()
        # every documented operation is routed by the table
        for method, template in ops:
            self.assertTrue(routed(api, method, fill(template)),
                            f"documented but not routed: {method} {template}")
        # every route of the table, for each of its methods, is documented: its pattern
        # matches a documented path of that method
        for route in api.routes:
            methods, pattern = route[0], route[1]
            for method in methods:
                self.assertTrue(any(m == method and pattern.fullmatch(fill(t)) for m, t in ops),
                                f"routed but not documented: {method} {pattern.pattern}")


class LiveTests(unittest.TestCase):
    """Against a real netmaster process."""

    timeout = 180

    def setUp(self) -> None:
        require_binary("redis-server")
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.nm = NetmasterProcess(redis_url=self.redis.url)
        self.addCleanup(self.nm.stop)
        self.nm.start()

    def call(self, method: str, path: str, body: Any = None,
             raw: Optional[bytes] = None) -> Tuple[int, bytes]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        req = urllib.request.Request(self.nm.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def test_served_document_is_the_generated_one(self):
        code, body = self.call("GET", openapi.DOCUMENT_PATH)
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body), openapi.document())

    def probes(self) -> List[Tuple[str, str]]:
        paths = {fill(t) for _m, t in openapi.operations()}
        for spec in TYPES.values():  # every collection in every route shape
            c = spec.collection
            paths |= {f"/api/v1/{c}/", f"/api/v1/{c}/zz/", f"/api/v1/inspect/{c}/zz/"}
        paths |= {"/api/v1/nonesuch/", "/api/v1/nonesuch/zz/", "/api/v1/inspect/nonesuch/zz/",
                  "/plugin/nonesuch", "/version/", "/", "/api/v1/networks", "/service/",
                  "/debug/epcleanup/tenant/nonesuch/net"}
        return [(m, p) for p in sorted(paths) for m in METHODS]

    def test_every_answered_route_is_documented_and_every_documented_one_answers(self):
        answered = set()
        for method, path in self.probes():
            code, body = self.call(method, path, raw=b"[]")
            if body != NOT_FOUND and not (method == "HEAD" and code == 404):
                answered.add((method, path))
                self.assertIsNotNone(documented(method, path),
                                     f"answered but not documented: {method} {path} -> "
                                     f"{code} {body[:80]!r}")
        for method, template in openapi.operations():
            self.assertIn((method, fill(template)), answered,
                          f"documented but not answered: {method} {template}")

    def test_requests_and_answers_validate_against_the_schemas(self):
        doc = openapi.document()

        def check(method: str, template: str, path: str, body: Any = None) -> Any:
            op = doc["paths"][template][method.lower()]
            if body is not None:
                req = op["requestBody"]["content"]["application/json"]["schema"]
                schema_validator(doc, req).validate(body)
            code, raw = self.call(method, path, body)
            self.assertEqual(code, 200, f"{method} {path}: {raw[:200]!r}")
            answer = json.loads(raw)
            resp = op["responses"]["200"]["content"]["application/json"]["schema"]
            schema_validator(doc, resp).validate(answer)
            return answer

        check("POST", "/api/v1/tenants/{key}/", "/api/v1/tenants/oa/", {"tenantName": "oa"})
        net = {"tenantName": "oa", "networkName": "n1", "encap": "vxlan",
               "subnet": "10.79.0.0/24", "gateway": "10.79.0.254"}
        check("POST", "/api/v1/networks/{key}/", "/api/v1/networks/oa:n1/", net)
        check("PUT", "/api/v1/endpointGroups/{key}/", "/api/v1/endpointGroups/oa:web/",
              {"tenantName": "oa", "groupName": "web", "networkName": "n1"})
        check("POST", "/api/v1/policys/{key}/", "/api/v1/policys/oa:p/",
              {"tenantName": "oa", "policyName": "p"})
        check("POST", "/api/v1/rules/{key}/", "/api/v1/rules/oa:p:r1/",
              {"tenantName": "oa", "policyName": "p", "ruleId": "r1", "direction": "in",
               "action": "allow", "protocol": "tcp", "port": 80, "priority": 5})
        for template in ("/api/v1/networks/", "/api/v1/tenants/", "/api/v1/rules/"):
            check("GET", template, template)
        check("GET", "/api/v1/networks/{key}/", "/api/v1/networks/oa:n1/")
        check("GET", "/api/v1/globals/{key}/", "/api/v1/globals/global/")
        for coll in ("networks", "tenants", "endpointGroups", "policys"):
            key = "oa" if coll == "tenants" else ("oa:p" if coll == "policys" else
                                                  "oa:n1" if coll == "networks" else "oa:web")
            check("GET", f"/api/v1/inspect/{coll}/{{key}}/", f"/api/v1/inspect/{coll}/{key}/")
        ep = {"TenantName": "oa", "NetworkName": "n1", "ServiceName": "web",
              "EndpointID": "e" * 64, "EPCommonName": "web1", "ContainerID": "c" * 12,
              "ConfigEP": {"Container": "e" * 64, "Host": "h1", "IPAddress": "",
                           "ServiceName": "web", "IntfName": "cv" + "e" * 12,
                           "Labels": {"app": "web"}}}
        made = check("POST", "/plugin/createEndpoint", "/plugin/createEndpoint", ep)
        self.assertTrue(made["EndpointConfig"]["ipAddress"])
        check("GET", "/api/v1/inspect/endpoints/{key}/",
              f"/api/v1/inspect/endpoints/{made['EndpointConfig']['id']}/")
        alloc = check("POST", "/plugin/allocAddress", "/plugin/allocAddress",
                      {"AddressPool": "", "NetworkID": "n1.oa", "PreferredIPv4Address": ""})
        check("POST", "/plugin/releaseAddress", "/plugin/releaseAddress",
              {"NetworkID": "n1.oa", "IPv4Address": alloc["IPv4Address"]})
        check("POST", "/plugin/deleteEndpoint", "/plugin/deleteEndpoint",
              {"TenantName": "oa", "NetworkName": "n1", "ServiceName": "web",
               "EndpointID": "e" * 64})
        for path in ("/version", "/info", "/services", "/debug/ofnet"):
            check("GET", path, path)
        check("DELETE", "/api/v1/rules/{key}/", "/api/v1/rules/oa:p:r1/")
