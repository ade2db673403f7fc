"""The JSON Contiv clients read: Go struct order, omitempty, link-sets/links
always present, Go's json.Encoder escaping."""

from __future__ import annotations

import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from contiv_sdn.model import (
    TYPES,
    decode,
    encode_json,
    endpoint_oper_to_wire,
    inspect_to_wire,
    make_link,
    oper_to_wire,
    to_wire,
    validate,
)
from contiv_sdn.model.gojson import marshal, marshal_indent

NET = TYPES["network"]


def wire(spec, obj) -> bytes:
    return encode_json(to_wire(spec, obj))


class ConfigWireTests(SynchronousTestCase):
    def test_spec_example_issue_1165(self):
        body = (b'{"networkName":"vlan45","tenantName":"default","subnet":"10.0.45.0/24",'
                b'"gateway":"10.0.45.254","encap":"vlan","pktTag":45}')
        obj = validate(NET, decode(NET, body), "default:vlan45")
        obj["links"]["Tenant"] = make_link("tenant", "default")
        self.assertEqual(
            wire(NET, obj),
            b'{"key":"default:vlan45","encap":"vlan","gateway":"10.0.45.254",'
            b'"networkName":"vlan45","nwType":"data","pktTag":45,"subnet":"10.0.45.0/24",'
            b'"tenantName":"default","link-sets":{},"links":{"Tenant":{"type":"tenant",'
            b'"key":"default"}}}\n')

    def test_field_order_is_struct_order_whatever_the_input_order(self):
        spec = TYPES["rule"]
        names = [f.name for f in spec.fields]
        full = {"key": "k"}
        for f in reversed(spec.fields):
            full[f.name] = 7 if f.type is int else "v"
        out = to_wire(spec, full)
        self.assertEqual(list(out), ["key"] + names + ["link-sets", "links"])
        self.assertEqual(names[:3], ["action", "direction", "fromEndpointGroup"])
        np = TYPES["netprofile"]
        self.assertEqual([f.name for f in np.fields],
                         ["DSCP", "bandwidth", "burst", "profileName", "tenantName"])

    def test_omitempty(self):
        obj = NET.zero()
        obj.update(key="t:n", tenantName="t", networkName="n", pktTag=0, gateway="")
        self.assertEqual(wire(NET, obj),
                         b'{"key":"t:n","networkName":"n","tenantName":"t",'
                         b'"link-sets":{},"links":{"Tenant":{}}}\n')
        # missing keys are zero values too; an empty key is omitted
        self.assertEqual(wire(TYPES["serviceLB"], {"ports": [], "selectors": ["a=b"]}),
                         b'{"selectors":["a=b"],"links":{"Network":{},"Tenant":{}}}\n')
        self.assertEqual(wire(TYPES["netprofile"], {"DSCP": 0, "burst": 5}),
                         b'{"burst":5,"link-sets":{},"links":{"Tenant":{}}}\n')

    def test_link_structs_per_type(self):
        expect = {
            "aciGw": (False, None), "Bgp": (False, None), "global": (False, None),
            "appProfile": (True, {"Tenant": {}}),
            "endpointGroup": (True, {"AppProfile": {}, "NetProfile": {}, "Network": {},
                                     "Tenant": {}}),
            "extContractsGroup": (True, None),
            "netprofile": (True, {"Tenant": {}}),
            "network": (True, {"Tenant": {}}),
            "policy": (True, {"Tenant": {}}),
            "rule": (True, {"MatchEndpointGroup": {}}),
            "serviceLB": (False, {"Network": {}, "Tenant": {}}),
            "tenant": (True, None),
            "volume": (True, {"Tenant": {}}),
            "volumeProfile": (True, {"Tenant": {}}),
        }
        for name, (has_sets, links) in expect.items():
            out = to_wire(TYPES[name], {})
            self.assertEqual("link-sets" in out, has_sets, name)
            if has_sets:
                self.assertEqual(out["link-sets"], {}, name)
            self.assertEqual(out.get("links"), links, name)

    def test_link_sets_sorted_and_only_non_empty(self):
        obj = {"tenantName": "t", "link-sets": {
            "Policies": {"t:b": make_link("policy", "t:b"), "t:a": make_link("policy", "t:a")},
            "MatchRules": {},
            "Unknown": {"x": make_link("x", "y")},
        }, "links": {"Network": make_link("network", "t:n"), "Tenant": {"type": "tenant"}}}
        self.assertEqual(
            wire(TYPES["endpointGroup"], obj),
            b'{"tenantName":"t","link-sets":{"Policies":{"t:a":{"type":"policy","key":"t:a"},'
            b'"t:b":{"type":"policy","key":"t:b"}}},"links":{"AppProfile":{},"NetProfile":{},'
            b'"Network":{"type":"network","key":"t:n"},"Tenant":{"type":"tenant"}}}\n')

    def test_round_trip(self):
        spec = TYPES["endpointGroup"]
        body = encode_json({
            "key": "ignored", "tenantName": "t", "groupName": "g", "networkName": "n",
            "policies": ["p1", "p2"], "cfgdTag": "tag", "ipPool": "10.1.1.1-10.1.1.9",
            "link-sets": {"Policies": {"t:p1": make_link("policy", "t:p1")}},
            "links": {"Network": make_link("network", "t:n")},
        })
        obj = validate(spec, decode(spec, body), "t:g")
        again = validate(spec, decode(spec, wire(spec, obj)), "t:g")
        self.assertEqual(again, obj)
        self.assertEqual(json.loads(wire(spec, obj))["link-sets"],
                         {"Policies": {"t:p1": {"type": "policy", "key": "t:p1"}}})


class OperWireTests(SynchronousTestCase):
    def test_network_oper_with_endpoints(self):
        ep = {"containerName": "web", "ipAddress": ["10.1.1.2", ""], "endpointID": "abc",
              "homingHost": "h1", "macAddress": "02:02:0a:01:01:02", "network": "n.t",
              "endpointGroupId": 0, "labels": "map[app:web]"}
        oper = {"pktTag": 4, "numEndpoints": 1, "endpoints": [ep, {}],
                "allocatedIPAddresses": "10.1.1.1-10.1.1.2", "externalPktTag": 0,
                "availableIPAddresses": "10.1.1.3-10.1.1.254", "allocatedAddressesCount": 2}
        self.assertEqual(
            encode_json(oper_to_wire(NET, oper)),
            b'{"allocatedAddressesCount":2,"allocatedIPAddresses":"10.1.1.1-10.1.1.2",'
            b'"availableIPAddresses":"10.1.1.3-10.1.1.254","endpoints":[{"containerName":"web",'
            b'"endpointID":"abc","homingHost":"h1","ipAddress":["10.1.1.2",""],'
            b'"labels":"map[app:web]","macAddress":"02:02:0a:01:01:02","network":"n.t"},{}],'
            b'"numEndpoints":1,"pktTag":4}\n')
        self.assertEqual(oper_to_wire(NET, None), {})
        self.assertEqual(oper_to_wire(NET, {"endpoints": []}), {})

    def test_tenant_oper_nests_other_opers(self):
        oper = {"totalNetworks": 1, "networks": [{"pktTag": 1, "endpoints": [{"key": "e"}]}],
                "servicelbs": [{"serviceVip": "10.9.0.1", "providers": [{"vtepIP": "1.1.1.1"}]}]}
        self.assertEqual(
            oper_to_wire(TYPES["tenant"], oper),
            {"networks": [{"endpoints": [{"key": "e"}], "pktTag": 1}],
             "servicelbs": [{"providers": [{"vtepIP": "1.1.1.1"}], "serviceVip": "10.9.0.1"}],
             "totalNetworks": 1})

    def test_endpoint_oper(self):
        ep = {"vtepIP": "1.1.1.1", "virtualPort": "vvport1", "key": "abc", "containerID": "c1",
              "endpointGroupKey": "g:t", "endpointGroupId": 3, "intfName": ""}
        out = endpoint_oper_to_wire(ep)
        self.assertEqual(list(out), ["key", "containerID", "endpointGroupId", "endpointGroupKey",
                                     "virtualPort", "vtepIP"])
        self.assertEqual(out, oper_to_wire(TYPES["endpoint"], ep))

    def test_inspect_shapes(self):
        net = {"key": "t:n", "tenantName": "t", "networkName": "n"}
        self.assertEqual(list(inspect_to_wire(NET, net, {"pktTag": 3})), ["Config", "Oper"])
        self.assertEqual(inspect_to_wire(NET, net)["Oper"], {})
        self.assertEqual(inspect_to_wire(TYPES["rule"], {"key": "a:b:c"}),
                         {"Config": {"key": "a:b:c", "link-sets": {},
                                     "links": {"MatchEndpointGroup": {}}}})
        self.assertEqual(inspect_to_wire(TYPES["endpoint"], None, {"key": "x"}),
                         {"Oper": {"key": "x"}})


class EncodeJsonTests(SynchronousTestCase):
    def test_go_escaping(self):
        s = "<a href='x'>&amp;</a> \u2028\u2029 caf\u00e9 \U0001f600 \x00\x01\x08\x0c\x1f \n\r\t \"q\" \\ / \x7f"
        self.assertEqual(
            encode_json({"s": s}),
            b'{"s":"\\u003ca href=\'x\'\\u003e\\u0026amp;\\u003c/a\\u003e \\u2028\\u2029 caf'
            + "\u00e9 \U0001f600".encode() +
            b' \\u0000\\u0001\\u0008\\u000c\\u001f \\n\\r\\t \\"q\\" \\\\ / \x7f"}\n')
        # what Go would make of invalid UTF-8 (a lone surrogate here)
        self.assertEqual(encode_json("a\ud800b"), b'"a\\ufffdb"\n')
        self.assertEqual(encode_json({"<k>": 1}), b'{"\\u003ck\\u003e":1}\n')

    def test_scalars_and_containers(self):
        self.assertEqual(encode_json([]), b"[]\n")
        self.assertEqual(encode_json("default:net1"), b'"default:net1"\n')
        self.assertEqual(encode_json(None), b"null\n")
        self.assertEqual(encode_json([True, False, 0, -5, (1, 2), {}]),
                         b'[true,false,0,-5,[1,2],{}]\n')
        self.assertEqual(encode_json({"b": 1, "a": [{"z": None}]}), b'{"b":1,"a":[{"z":null}]}\n')

    def test_floats_like_go(self):
        cases = {1.0: "1", 1.5: "1.5", -0.0: "-0", 100.0: "100", 1e20: "100000000000000000000",
                 1e21: "1e+21", 1.5e-7: "1.5e-7", 1e-6: "0.000001", 123456.789: "123456.789",
                 1e-100: "1e-100", 0.1: "0.1"}
        for f, text in cases.items():
            self.assertEqual(encode_json(f), text.encode() + b"\n", f)
        self.assertRaises(ValueError, encode_json, float("nan"))
        self.assertRaises(TypeError, encode_json, object())


    def test_control_bytes_escape_as_go_1_7_to_1_21(self):
        """Every byte below 0x20 is ``\\u00XX`` except ``\\n \\r \\t``; backspace and
        form feed are ``\\u0008``/``\\u000c``, never ``\\b``/``\\f``, in all three writers
        (the REST replies, netctl's bodies, netctl's ``-j``).

        Source: golang/go ``src/encoding/json/encode.go``, ``encodeState.string``
        (read at commit 02196d36575636a64f868ee0ffe6bb61442e7245): the switch has
        cases for ``'\\\\'``, ``'"'``, ``'\\n'``, ``'\\r'``, ``'\\t'`` only, and the
        default writes ``\\u00`` + two hex digits ("This encodes bytes < 0x20 except
        for \\t, \\n and \\r").  The short ``\\b``/``\\f`` came with Go 1.22 (commit
        2763146099384e320e2d1c0fc41b3b3906050652, CL 521675; golang/go#64346 asked
        for it under 1.21.4).  Contiv was built with Go 1.7 (contiv/netplugin's
        Dockerfile: ``FROM golang:1.7.6 as builder``)."""
        short = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
        for c in range(0x20):
            want = '"' + short.get(c, "\\u%04x" % c) + '"'
            self.assertEqual(encode_json(chr(c)), want.encode() + b"\n", hex(c))
            self.assertEqual(marshal(chr(c)), want, hex(c))
            self.assertEqual(marshal_indent([chr(c)]), "[\n  " + want + "\n]", hex(c))
        self.assertEqual(marshal({"a\bb": "c\fd"}), '{"a\\u0008b":"c\\u000cd"}')

    def test_marshal_indent_is_go_indent(self):
        """json.MarshalIndent(v, "", "  "): one element a line, ": " after a key,
        empty containers kept whole, punctuation inside strings untouched."""
        value = {"a": [1, {}, []], "b": {"k:": "[x, {y}]", "e": None}, "c": True}
        self.assertEqual(marshal_indent(value),
                         '{\n  "a": [\n    1,\n    {},\n    []\n  ],\n'
                         '  "b": {\n    "k:": "[x, {y}]",\n    "e": null\n  },\n  "c": true\n}')
        self.assertEqual(marshal_indent({}), "{}")
        self.assertEqual(marshal_indent('q"\\'), '"q\\"\\\\"')
        self.assertEqual(json.loads(marshal_indent(value)), value)


class LinkTargetTests(SynchronousTestCase):
    def test_link_types_are_modeldb_types(self):
        self.assertEqual(TYPES["network"].link_type("Tenant"), "tenant")
        self.assertEqual(TYPES["tenant"].link_type("Servicelbs"), "serviceLB")
        self.assertEqual(TYPES["endpointGroup"].link_type("NetProfile"), "netprofile")
        self.assertEqual(TYPES["endpointGroup"].link_type("ExtContractsGrps"), "extContractsGroup")
        self.assertEqual(TYPES["rule"].link_type("MatchEndpointGroup"), "endpointGroup")
        self.assertRaises(KeyError, TYPES["tenant"].link_type, "Tenant")
        # every declared link points at a real type, except the two never-filled sets
        for spec in TYPES.values():
            for name in spec.links + spec.link_sets:
                target = spec.link_type(name)
                if name not in ("Services", "ServiceInstances"):
                    self.assertIn(target, TYPES, f"{spec.name}.{name}")


class ModelPackageTests(SynchronousTestCase):
    def _fresh(self, code: str) -> str:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        self.assertEqual((proc.returncode, proc.stderr), (0, ""), code)
        return proc.stdout

    def test_package_loads_its_parts_on_use(self):
        """``contiv-cni`` imports ``errors`` and ``shapes`` per run: the package
        import must not build validation or the wire encoder (nor pull in
        typing/dataclasses for errors alone)."""
        out = self._fresh(
            "import sys, contiv_sdn.model.errors\n"
            "print(sorted(m for m in sys.modules if m.startswith('contiv_sdn.model')"
            " or m in ('typing', 'dataclasses', 'inspect')))")
        self.assertEqual(out, "['contiv_sdn.model', 'contiv_sdn.model.errors']\n")
        out = self._fresh(
            "import sys, contiv_sdn.model.shapes\n"
            "print([m for m in ('contiv_sdn.model.validate', 'contiv_sdn.model.wire',"
            " 'dataclasses', 'inspect') if m in sys.modules])")
        self.assertEqual(out, "[]\n")

    def test_function_names_win_over_submodules_in_any_order(self):
        """``decode`` and ``validate`` name a function and its submodule; the
        package name is the function whichever was imported first."""
        out = self._fresh(
            "import contiv_sdn.model.decode, contiv_sdn.model.validate\n"
            "from contiv_sdn.model import decode, validate, TYPES, encode_json, gojson\n"
            "import contiv_sdn.model as m\n"
            "print(callable(decode), callable(validate), m.decode is decode,"
            " gojson.__name__, len(TYPES) == len(m.TYPES))")
        self.assertEqual(out, "True True True contiv_sdn.model.gojson True\n")
        self.assertRaises(AttributeError, getattr, __import__("contiv_sdn.model").model, "nope")
