"""Request-body decoding with Go's json.Decoder rules: case-insensitive names,
null, unknown fields, wrong types, EOF and syntax errors, worded as Go words them."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from contiv_sdn.model import TYPES, DecodeError, ModelError, decode, validate

NET = TYPES["network"]


class DecodeTests(SynchronousTestCase):
    def err(self, body, spec=NET) -> str:
        with self.assertRaises(DecodeError) as cm:
            decode(spec, body)
        self.assertIsInstance(cm.exception, ModelError)
        return str(cm.exception)

    def test_zero_values_filled(self):
        obj = decode(NET, b'{"tenantName":"default"}')
        self.assertEqual(obj["tenantName"], "default")
        self.assertEqual(obj["pktTag"], 0)
        self.assertEqual(obj["subnet"], "")
        self.assertEqual(obj["link-sets"], {"EndpointGroups": {}, "Servicelbs": {}, "Services": {}})
        self.assertEqual(obj["links"], {"Tenant": {"type": "", "key": ""}})
        self.assertEqual(set(obj), {"key", "link-sets", "links"} | {f.name for f in NET.fields})
        sl = decode(TYPES["serviceLB"], "{}")
        self.assertEqual(sl["ports"], [])
        self.assertEqual(sl["link-sets"], {})

    def test_str_and_bytes_bodies(self):
        self.assertEqual(decode(NET, '{"networkName":"n\u00e9"}')["networkName"], "n\u00e9")
        self.assertEqual(decode(NET, '{"networkName":"n\u00e9"}'.encode())["networkName"], "n\u00e9")

    def test_case_insensitive_names(self):
        obj = decode(NET, b'{"TENANTNAME":"a","NetworkName":"b","pkttag":7,"Link-Sets":{}}')
        self.assertEqual((obj["tenantName"], obj["networkName"], obj["pktTag"]), ("a", "b", 7))
        # Go's folding also equates the Kelvin sign with k and the long s with s
        obj = decode(NET, '{"networ\u212aName":"k","\u017fubnet":"1.1.1.0/24"}'.encode())
        self.assertEqual((obj["networkName"], obj["subnet"]), ("k", "1.1.1.0/24"))
        self.assertEqual(decode(TYPES["netprofile"], b'{"dscp":5}')["DSCP"], 5)
        self.assertEqual(decode(TYPES["Bgp"], b'{"Neighbor-AS":"65000"}')["neighbor-as"], "65000")
        # no other folding: these are unknown fields
        self.assertEqual(decode(NET, b'{"tenant_name":"a","tenantName ":"b"}')["tenantName"], "")

    def test_duplicate_keys_last_wins(self):
        obj = decode(NET, b'{"tenantName":"a","TenantName":"b"}')
        self.assertEqual(obj["tenantName"], "b")

    def test_unknown_fields_ignored(self):
        obj = decode(NET, b'{"foo":[1,{"x":null}],"bar":{"a":[true]},"tenantName":"t"}')
        self.assertEqual(obj["tenantName"], "t")
        self.assertNotIn("foo", obj)
        # link-sets/links are unknown to types that have none
        obj = decode(TYPES["global"], b'{"links":5,"link-sets":"x","name":"global"}')
        self.assertEqual(obj["name"], "global")

    def test_null(self):
        obj = decode(NET, b'{"pktTag":null,"tenantName":null,"links":null,"link-sets":null}')
        self.assertEqual((obj["pktTag"], obj["tenantName"]), (0, ""))
        # null leaves a scalar as it was, but empties a list or a map
        obj = decode(NET, b'{"pktTag":5,"pktTag":null,"encap":"vlan","encap":null}')
        self.assertEqual((obj["pktTag"], obj["encap"]), (5, "vlan"))
        obj = decode(TYPES["serviceLB"], b'{"ports":["1:2:TCP"],"ports":null,"selectors":[null,"a=b"]}')
        self.assertEqual(obj["ports"], [])
        self.assertEqual(obj["selectors"], ["", "a=b"])
        obj = decode(NET, b'{"link-sets":{"EndpointGroups":{"a":{"type":"endpointGroup","key":"a"}}},'
                          b'"link-sets":{"EndpointGroups":null}}')
        self.assertEqual(obj["link-sets"]["EndpointGroups"], {})
        # a top-level null decodes to the zero object, as Go does
        self.assertEqual(decode(NET, b"null"), NET.zero())

    def test_links_and_link_sets_kept(self):
        body = (b'{"tenantName":"t","links":{"tenant":{"Type":"tenant","KEY":"t"}},'
                b'"link-sets":{"endpointgroups":{"t:g1":{"type":"endpointGroup","key":"t:g1"},'
                b'"t:g2":null}},"LINK-SETS":{"EndpointGroups":{"t:g3":{"type":"endpointGroup"}}}}')
        obj = decode(NET, body)
        self.assertEqual(obj["links"], {"Tenant": {"type": "tenant", "key": "t"}})
        # a second link-sets object merges into the map, as Go's map decoding does
        self.assertEqual(obj["link-sets"]["EndpointGroups"], {
            "t:g1": {"type": "endpointGroup", "key": "t:g1"},
            "t:g2": {"type": "", "key": ""},
            "t:g3": {"type": "endpointGroup", "key": ""},
        })

    def test_numbers(self):
        self.assertEqual(decode(NET, b'{"pktTag":-0}')["pktTag"], 0)
        self.assertEqual(decode(NET, b'{"pktTag":-12}')["pktTag"], -12)
        self.assertEqual(decode(NET, b'{"pktTag":9223372036854775807}')["pktTag"], (1 << 63) - 1)
        for lit in ("1.5", "1e3", "1.0", "9223372036854775808", "-9223372036854775809", "1E2"):
            self.assertEqual(
                self.err(b'{"pktTag":' + lit.encode() + b"}"),
                f"json: cannot unmarshal number {lit} into Go struct field Network.pktTag of type int")

    def test_wrong_types(self):
        cases = [
            (b'{"pktTag":"45"}', "string", "Network.pktTag", "int"),
            (b'{"pktTag":true}', "bool", "Network.pktTag", "int"),
            (b'{"pktTag":[1]}', "array", "Network.pktTag", "int"),
            (b'{"pktTag":{}}', "object", "Network.pktTag", "int"),
            (b'{"tenantName":1}', "number", "Network.tenantName", "string"),
            (b'{"tenantName":false}', "bool", "Network.tenantName", "string"),
            (b'{"tenantName":["a"]}', "array", "Network.tenantName", "string"),
            (b'{"TENANTNAME":{"a":1}}', "object", "Network.tenantName", "string"),
            (b'{"key":5}', "number", "Network.key", "string"),
            (b'{"links":[]}', "array", "Network.links", "contivModel.NetworkLinks"),
            (b'{"links":{"Tenant":"t"}}', "string", "NetworkLinks.links.Tenant", "modeldb.Link"),
            (b'{"links":{"Tenant":{"key":1}}}', "number", "Link.links.Tenant.key", "string"),
            (b'{"link-sets":"x"}', "string", "Network.link-sets", "contivModel.NetworkLinkSets"),
            (b'{"link-sets":{"Services":[]}}', "array", "NetworkLinkSets.link-sets.Services",
             "map[string]modeldb.Link"),
            (b'{"link-sets":{"Services":{"k":1}}}', "number",
             "NetworkLinkSets.link-sets.Services", "modeldb.Link"),
            (b'{"link-sets":{"Services":{"k":{"type":[]}}}}', "array",
             "Link.link-sets.Services.type", "string"),
        ]
        for body, kind, where, gotype in cases:
            self.assertEqual(self.err(body),
                             f"json: cannot unmarshal {kind} into Go struct field {where} of type {gotype}",
                             body)
        sl = TYPES["serviceLB"]
        self.assertEqual(self.err(b'{"ports":"80:80:TCP"}', sl),
                         "json: cannot unmarshal string into Go struct field ServiceLB.ports of type []string")
        self.assertEqual(self.err(b'{"selectors":["a=b",1]}', sl),
                         "json: cannot unmarshal number into Go struct field ServiceLB.selectors of type string")

    def test_first_type_error_in_document_order(self):
        self.assertEqual(
            self.err(b'{"tenantName":1,"pktTag":"x"}'),
            "json: cannot unmarshal number into Go struct field Network.tenantName of type string")
        self.assertEqual(
            self.err(b'{"pktTag":"x","tenantName":1}'),
            "json: cannot unmarshal string into Go struct field Network.pktTag of type int")

    def test_top_level_not_an_object(self):
        for body, kind in ((b"[]", "array"), (b'"x"', "string"), (b"12", "number"),
                           (b"true", "bool"), (b" 3.5 ", "number")):
            self.assertEqual(self.err(body),
                             f"json: cannot unmarshal {kind} into Go value of type contivModel.Network")
        self.assertEqual(self.err(b"[1]", TYPES["Bgp"]),
                         "json: cannot unmarshal array into Go value of type contivModel.Bgp")

    def test_eof(self):
        for body in (b"", b" ", b"\n\t\r ", ""):
            self.assertEqual(self.err(body), "EOF")
        for body in (b"{", b'{"a"', b'{"a":', b'{"a":1', b'{"a":"xx', b'{"a":[1,', b"nul", b"-",
                     b'{"a":"\\u12', b"1.", b"[", b'{"a":1.5e+'):
            self.assertEqual(self.err(body), "unexpected EOF", body)

    def test_syntax_errors(self):
        cases = {
            b"x": "invalid character 'x' looking for beginning of value",
            b"{a}": "invalid character 'a' looking for beginning of object key string",
            b'{"a" 1}': "invalid character '1' after object key",
            b'{"a":1 "b":2}': "invalid character '\"' after object key:value pair",
            b'{"a":1,}': "invalid character '}' looking for beginning of object key string",
            b'{"a":[1 2]}': "invalid character '2' after array element",
            b'{"a":[1,]}': "invalid character ']' looking for beginning of value",
            b'{"a":"\x01"}': "invalid character '\\x01' in string literal",
            b'{"a":"\t"}': "invalid character '\\t' in string literal",
            b'{"a":"\\x"}': "invalid character 'x' in string escape code",
            b'{"a":"\\u12g4"}': "invalid character 'g' in \\u hexadecimal character escape",
            b'{"a":-x}': "invalid character 'x' in numeric literal",
            b'{"a":1.x}': "invalid character 'x' after decimal point in numeric literal",
            b'{"a":1ex}': "invalid character 'x' in exponent of numeric literal",
            b'{"a":01}': "invalid character '1' after object key:value pair",
            b'{"a":tru}': "invalid character '}' in literal true (expecting 'e')",
            b'{"a":fals3}': "invalid character '3' in literal false (expecting 'e')",
            b'{"a":nil}': "invalid character 'i' in literal null (expecting 'u')",
            b'{"a":NaN}': "invalid character 'N' looking for beginning of value",
            b'{"a":Infinity}': "invalid character 'I' looking for beginning of value",
            b'{"a":-Infinity}': "invalid character 'I' in numeric literal",
            b"{'a':1}": "invalid character '\\'' looking for beginning of object key string",
            b"\xef\xbb\xbf{}": "invalid character '\u00ef' looking for beginning of value",
            b"\xa0{}": "invalid character '\\u00a0' looking for beginning of value",
            b"\x7f": "invalid character '\\x7f' looking for beginning of value",
        }
        for body, msg in cases.items():
            self.assertEqual(self.err(body), msg, body)

    def test_trailing_data_ignored(self):
        # json.Decoder reads one value and never looks at the rest of the body
        obj = decode(NET, b'{"tenantName":"t"} trailing {garbage')
        self.assertEqual(obj["tenantName"], "t")
        obj = decode(NET, b'{"tenantName":"t"}{"tenantName":"u"}')
        self.assertEqual(obj["tenantName"], "t")

    def test_nesting(self):
        deep = b"[" * 3000 + b"]" * 3000
        obj = decode(NET, b'{"x":' + deep + b',"tenantName":"t"}')  # deeper than Python's limit
        self.assertEqual(obj["tenantName"], "t")
        self.assertEqual(
            self.err(b'{"tenantName":' + deep + b"}"),
            "json: cannot unmarshal array into Go struct field Network.tenantName of type string")
        self.assertEqual(self.err(b"[" * 10001), "invalid character '[' exceeded max depth")
        self.assertEqual(self.err(b"[" * 10000), "unexpected EOF")

    def test_strings(self):
        def name(raw: bytes) -> str:
            return decode(NET, b'{"networkName":"' + raw + b'"}')["networkName"]

        self.assertEqual(name(b"caf\\u00e9 \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t"),
                         'caf\u00e9 "q" \\ / \b\f\n\r\t')
        self.assertEqual(name(b"\\ud83d\\ude00"), "\U0001f600")
        self.assertEqual(name("\U0001f600".encode()), "\U0001f600")
        # Go turns a lone surrogate escape and each invalid UTF-8 byte into U+FFFD
        self.assertEqual(name(b"a\\ud800b"), "a\ufffdb")
        self.assertEqual(name(b"\\udc00\\ud800\\u0041"), "\ufffd\ufffdA")
        self.assertEqual(name(b"a\xffb\xe2\x82"), "a\ufffdb\ufffd\ufffd")
        # the same in the slow path (a syntax error elsewhere forces it)
        with self.assertRaises(DecodeError):
            decode(NET, b'{"networkName":"a\\ud800b\xff", x}')

    def test_slow_path_values_match_fast_path(self):
        body = ('{"tenantName":"t\u00e9\\u00e9\\ud83d\\ude00","pktTag":-12,"links":{"Tenant":'
                '{"type":"tenant","key":"t"}},"x":[1.5e3,true,false,null,{}],'
                '"link-sets":{"EndpointGroups":{"k":{"type":"a","key":"b"}}}}')
        fast = decode(NET, body.encode())
        deep = "[" * 2000 + "]" * 2000
        slow = decode(NET, body[:-1].encode() + b',"y":' + deep.encode() + b"}")
        self.assertEqual(fast, slow)
        self.assertEqual(fast["tenantName"], "t\u00e9\u00e9\U0001f600")

    def test_decode_then_validate(self):
        body = b'{"tenantName":"default","networkName":"vlan45","encap":"vlan","subnet":"10.0.45.0/24"}'
        obj = validate(NET, decode(NET, body), "default:vlan45")
        self.assertEqual(obj["nwType"], "data")
        self.assertRaises(ValueError, decode, TYPES["endpoint"], b"{}")
