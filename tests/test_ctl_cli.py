"""netctl: Go-style flag parsing, Contiv's output formats, and the requests it
sends, first against a recording HTTP server, then against a live netmaster.

Expected bodies and tables below are derived from Contiv's Go source
(netctl/netctl.go, contivmodel/client, codegangsta/cli, text/tabwriter).
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from twisted.trial import unittest

from contiv_sdn.model.gojson import marshal, marshal_indent
from contiv_sdn import netctl
from contiv_sdn.netctl import goflag
from contiv_sdn.netctl.actions import check_rule_flags, netprofile_rows, sort_rules
from contiv_sdn.netctl.app import DEFAULT_MASTER, run
from contiv_sdn.netctl.commands import COMMANDS
from contiv_sdn.netctl.goflag import FlagError, parse_flags, parse_go_int, parse_leaf
from contiv_sdn.netctl.tabwriter import tabwrite
from contiv_sdn.netctl.wire import encode_object
from contiv_sdn.testing import free_tcp_port, require, require_binary

NETCTL = os.path.join(os.path.dirname(sys.executable), "netctl")


def _leaf(group: str, name: str):
    for command in COMMANDS:
        if command.has_name(group):
            for sub in command.subcommands:
                if sub.has_name(name):
                    return sub
    raise KeyError((group, name))


# ---------------------------------------------------------------------------
# Plain-data tests: flags, tables, wire format
# ---------------------------------------------------------------------------

class GoFlagTests(unittest.TestCase):
    def test_every_spelling_of_a_flag_is_the_same(self):
        create = _leaf("net", "create")
        for spelling in (["--subnet=20.1.1.0/24"], ["--subnet", "20.1.1.0/24"],
                         ["-subnet=20.1.1.0/24"], ["-subnet", "20.1.1.0/24"],
                         ["-s", "20.1.1.0/24"], ["--s=20.1.1.0/24"]):
            values, args = parse_leaf(create.flags, ["contiv-net"] + spelling)
            self.assertEqual(values.string("subnet"), "20.1.1.0/24", spelling)
            self.assertEqual(values.string("s"), "20.1.1.0/24", spelling)
            self.assertEqual(args, ["contiv-net"])

    def test_seed_lines_parse(self):
        create = _leaf("net", "create")
        values, args = parse_leaf(create.flags, [
            "contiv-net", "--subnet=20.1.1.0/24", "--gateway=20.1.1.254", "--pkt-tag=1001"])
        self.assertEqual(args, ["contiv-net"])
        self.assertEqual((values.string("gateway"), values.int("pkt-tag")), ("20.1.1.254", 1001))
        self.assertEqual((values.string("tenant"), values.string("encap"),
                          values.string("nw-type")), ("default", "vxlan", "data"))

        rule_add = _leaf("policy", "rule-add")
        values, args = parse_leaf(rule_add.flags, [
            "prod_web", "2", "-direction=in", "-protocol=tcp", "-port=80", "-action=allow",
            "-priority=10"])
        self.assertEqual(args, ["prod_web", "2"])
        self.assertEqual((values.string("direction"), values.string("protocol"),
                          values.int("port"), values.string("action"), values.int("priority")),
                         ("in", "tcp", 80, "allow", 10))
        values, _ = parse_leaf(rule_add.flags, ["prod_web", "1", "-direction=in"])
        self.assertEqual((values.int("priority"), values.string("action"), values.int("port")),
                         (1, "allow", 0))

        group = _leaf("group", "create")
        values, args = parse_leaf(group.flags, ["contiv-net", "web", "-policy=prod_web"])
        self.assertEqual(args, ["contiv-net", "web"])
        self.assertEqual(values.string_slice("policy"), ["prod_web"])

    def test_multi_letter_aliases_and_repeatable_flags(self):
        group = _leaf("group", "create")
        values, args = parse_leaf(group.flags, ["n", "g", "-tag", "io.x", "-p", "a", "-p", "b",
                                                "-e", "c1", "-e=c2"])
        self.assertEqual(args, ["n", "g"])
        self.assertEqual(values.string("epg-tag"), "io.x")
        self.assertEqual(values.string_slice("policy"), ["a", "b"])
        self.assertEqual(values.string_slice("external-contract"), ["c1", "c2"])
        create = _leaf("net", "create")
        values, _ = parse_leaf(create.flags, ["n", "-s", "1.0.0.0/8", "-s6", "2001::/64",
                                              "--g6=2001::1"])
        self.assertEqual((values.string("subnetv6"), values.string("gatewayv6")),
                         ("2001::/64", "2001::1"))

    def test_two_forms_of_one_flag_is_an_error(self):
        group = _leaf("group", "create")
        with self.assertRaises(FlagError) as caught:
            parse_leaf(group.flags, ["n", "g", "-p", "a", "--policy", "b"])
        self.assertIn("Cannot use two forms of the same flag", str(caught.exception))
        values, _ = parse_leaf(_leaf("net", "create").flags, ["n", "-s", "a", "-s", "b"])
        self.assertEqual(values.string("subnet"), "b")

    def test_positional_between_flags_ends_parsing(self):
        # codegangsta moves flags in front, Go's flag stops at the first
        # non-flag: "foo" then "-g" "x" stay positional.
        values, args = parse_leaf(_leaf("net", "create").flags,
                                  ["-s", "1.0.0.0/8", "foo", "-g", "1.0.0.1"])
        self.assertEqual(args, ["foo", "-g", "1.0.0.1"])
        self.assertEqual(values.string("gateway"), "")

    def test_terminator(self):
        values, args = parse_leaf(_leaf("net", "create").flags, ["-s", "x", "--", "-weird"])
        self.assertEqual((values.string("subnet"), args), ("x", ["-weird"]))
        self.assertEqual(goflag.reorder_leaf_args(["a", "-b", "c", "--", "d"]),
                         ["-b", "c", "a", "--", "d"])

    def test_booleans(self):
        flags = _leaf("net", "ls").flags
        values, args = parse_leaf(flags, ["-j", "-a=true", "--quiet=false"])
        self.assertEqual((values.bool("json"), values.bool("all"), values.bool("quiet")),
                         (True, True, False))
        self.assertEqual(args, [])
        with self.assertRaises(FlagError):
            parse_leaf(flags, ["-j=maybe"])

    def test_usage_errors(self):
        flags = _leaf("net", "create").flags
        for bad, message in ((["-x"], "flag provided but not defined: -x"),
                             (["-s"], "flag needs an argument: -s"),
                             (["---s"], "bad flag syntax: ---s"),
                             (["-=s"], "bad flag syntax: -=s"),
                             (["-p", "ten"], 'invalid value "ten" for flag -p: parse error')):
            with self.assertRaises(FlagError) as caught:
                parse_leaf(flags, bad)
            self.assertEqual(str(caught.exception), message)

    def test_go_integers(self):
        self.assertEqual([parse_go_int(s) for s in ("10", "-3", "+4", "0x1f", "010", "0o17",
                                                    "0b101", "0", "1_000"[:1])],
                         [10, -3, 4, 31, 8, 15, 5, 0, 1])
        self.assertEqual(parse_go_int("0x_1f"), 31)
        for bad in ("", " 1", "1 ", "1_000", "08", "0x", "1e3", "9223372036854775808", "--1"):
            with self.assertRaises(ValueError, msg=bad):
                parse_go_int(bad)

    def test_env_default_and_global_flags_stop_at_command(self):
        values, args = parse_flags(
            (goflag.string_flag("netmaster", default="http://d", env="NETMASTER"),),
            ["net", "--netmaster", "x"], {"NETMASTER": "http://env:1"})
        self.assertEqual(values.string("netmaster"), "http://env:1")
        self.assertEqual(args, ["net", "--netmaster", "x"])


class RuleCheckTests(unittest.TestCase):
    def _values(self, *args):
        values, _ = parse_leaf(_leaf("policy", "rule-add").flags, ["p", "1"] + list(args))
        return values

    def test_direction_checks(self):
        cases = [
            (["-d", "in", "-e", "g"], "Cant specify to-group for incoming rule"),
            (["-d", "in", "-o", "n"], "Cant specify to-network for incoming rule"),
            (["-d", "in", "-g", "g", "-n", "n"],
             "Can't specify both from-group argument and -from-network "),
            (["-d", "out", "-g", "g"], "Cant specify from-group for outgoing rule"),
            (["-d", "out", "-n", "n"], "Cant specify from-network for outgoing rule"),
            (["-d", "out", "-i", "1.1.1.1"], "Cant specify from-ip-address for outgoing rule"),
            (["-d", "out", "-e", "g", "-o", "n"], "Can't specify both -to-group and -to-network"),
            (["-d", "sideways"], "Unknown direction"),
            (["-d", "in", "-s", "1.1.1.1", "-g", "g"], None),  # to-ip on "in" is allowed
            (["-d", "out", "-e", "g", "-s", "1.1.1.1"], None),
        ]
        for args, expected in cases:
            values = self._values(*args)
            self.assertEqual(check_rule_flags(values.string("direction"), values), expected, args)


class TabwriterTests(unittest.TestCase):
    def test_column_blocks(self):
        # Last cell of a line is not padded; a column aligns only over
        # consecutive lines that have it.
        self.assertEqual(tabwrite("a\tbbb\tc\nxx\ty\n", padding=2), "a   bbb  c\nxx  y\n")
        self.assertEqual(tabwrite("a\tb\nheader\nlonger\tc\n", padding=2),
                         "a  b\nheader\nlonger  c\n")
        # Trailing empty cell: the row is padded (Contiv's tenant table).
        self.assertEqual(tabwrite("Name\t\n------\t\ndefault\t\n", tabwidth=4, padding=2),
                         "Name     \n------   \ndefault  \n")
        self.assertEqual(tabwrite("a\t\tb\n", padding=1), "a  b\n")

    def test_tab_padding_and_partial_line(self):
        self.assertEqual(tabwrite("ab\tc\nabcdefghij\td\n", tabwidth=8, padding=1, padchar="\t"),
                         "ab\t\tc\nabcdefghij\td\n")
        self.assertEqual(tabwrite("x\ty", padding=1), "x y")


class WireTests(unittest.TestCase):
    def test_network_body_is_go_struct_order_with_links(self):
        body = encode_object("networks", {
            "tenantName": "default", "networkName": "contiv-net", "encap": "vxlan",
            "subnet": "20.1.1.0/24", "gateway": "20.1.1.254", "ipv6Subnet": "",
            "ipv6Gateway": "", "pktTag": 1001, "nwType": "data", "cfgdTag": ""})
        self.assertEqual(marshal(body),
                         '{"encap":"vxlan","gateway":"20.1.1.254","networkName":"contiv-net",'
                         '"nwType":"data","pktTag":1001,"subnet":"20.1.1.0/24",'
                         '"tenantName":"default","link-sets":{},"links":{"Tenant":{}}}')

    def test_structs_without_links_and_zero_values(self):
        self.assertEqual(encode_object("Bgps", {"hostname": "h", "as": "", "routerip": "1/2"}),
                         {"hostname": "h", "routerip": "1/2"})
        self.assertEqual(encode_object("tenants", {"tenantName": "t"}),
                         {"tenantName": "t", "link-sets": {}})
        self.assertEqual(encode_object("serviceLBs", {"serviceName": "s", "ports": []}),
                         {"serviceName": "s", "links": {"Network": {}, "Tenant": {}}})
        # A GET result re-posted keeps key, drops unknown fields, folds case.
        self.assertEqual(encode_object("globals", {"key": "global", "Name": "global",
                                                   "extra": 1, "vlans": "1-10"}),
                         {"key": "global", "name": "global", "vlans": "1-10"})

    def test_go_json_escaping_and_indent(self):
        self.assertEqual(marshal({"a": "<&>"}), '{"a":"\\u003c\\u0026\\u003e"}')
        self.assertEqual(marshal_indent([{"a": [], "b": {}}]),
                         '[\n  {\n    "a": [],\n    "b": {}\n  }\n]')


    def test_bodies_use_the_model_declaration_and_go_escapes(self):
        """netctl's client structs are the model's: a type netctl never declared on
        its own (volumes) gets its body from schema.py; and a control byte leaves as
        the Go releases Contiv was built with wrote it (\\u0008, not \\b)."""
        self.assertEqual(encode_object("volumes", {"volumeName": "v", "TenantName": "t"}),
                         {"tenantName": "t", "volumeName": "v",
                          "link-sets": {}, "links": {"Tenant": {}}})
        self.assertEqual(marshal(encode_object("tenants", {"tenantName": "a\bb\fc"})),
                         '{"tenantName":"a\\u0008b\\u000cc","link-sets":{}}')
        self.assertRaises(KeyError, encode_object, "endpoints", {})


def _netctl_modules() -> list[str]:
    folder = os.path.dirname(netctl.__file__)
    return sorted(name[:-3] for name in os.listdir(folder)
                  if name.endswith(".py") and name != "__init__.py")


class ModuleBoundaryTests(unittest.TestCase):
    def test_each_module_imports_alone(self):
        """Every netctl module imports first, in a fresh interpreter (no module
        relies on another having been imported before it)."""
        for name in _netctl_modules():
            proc = subprocess.run([sys.executable, "-c", f"import contiv_sdn.netctl.{name}"],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual((proc.returncode, proc.stderr), (0, ""), name)

    def test_imports_form_no_cycle(self):
        """No netctl module reaches itself through imports, counting the imports
        inside functions too: a deferred import (as app.run once did for the command
        table) only hides a cycle from the interpreter, not from the reader."""
        folder = os.path.dirname(netctl.__file__)
        modules = set(_netctl_modules())
        graph: dict[str, set[str]] = {}
        for name in modules:
            with open(os.path.join(folder, name + ".py"), encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            targets: set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "contiv_sdn.netctl":
                    targets.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    targets.add(node.module or "")
                elif isinstance(node, ast.Import):
                    targets.update(alias.name for alias in node.names)
            graph[name] = {t.rpartition(".")[2] for t in targets
                           if t.startswith("contiv_sdn.netctl.") or t in modules} & modules
        self.assertIn("commands", graph["app"])  # the walk sees what it should

        def reach(start: str) -> set[str]:
            seen: set[str] = set()
            todo = list(graph[start])
            while todo:
                here = todo.pop()
                if here not in seen:
                    seen.add(here)
                    todo.extend(graph[here])
            return seen
        self.assertEqual([name for name in sorted(modules) if name in reach(name)], [])


class FormatTests(unittest.TestCase):
    def test_rules_sorted_by_priority_then_list_order(self):
        rules = [{"tenantName": "default", "policyName": "p", "ruleId": r, "priority": pr}
                 for r, pr in (("a", 10), ("b", 1), ("c", 10), ("d", 5))]
        rules.append({"tenantName": "other", "policyName": "p", "ruleId": "x", "priority": 1})
        rules.append({"tenantName": "default", "policyName": "q", "ruleId": "y", "priority": 1})
        self.assertEqual([r["ruleId"] for r in sort_rules(rules, "default", "p")],
                         ["b", "d", "a", "c"])

    def test_netprofile_bandwidth_display(self):
        rows = netprofile_rows([
            {"profileName": "p1", "tenantName": "t", "bandwidth": "10 kbps", "DSCP": 3},
            {"profileName": "p2", "tenantName": "t", "bandwidth": "100mbps", "burst": 20},
            {"profileName": "p3", "tenantName": "t", "bandwidth": "7"},
            {"profileName": "p4", "tenantName": "t"},
        ])
        self.assertEqual(rows.splitlines(), [
            "p1\tt\t10Kbps\t3\t0", "p2\tt\t100Mbps\t0\t20",
            "p3\tt\t7Mbps\t0\t0",  # the unit carries over, as in Contiv
            "p4\tt\t\t0"])


# ---------------------------------------------------------------------------
# netctl against a recording HTTP server
# ---------------------------------------------------------------------------

class _Recorder(BaseHTTPRequestHandler):
    server: "_FakeNetmaster"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, raw, dict(self.headers)))
        status, body = self.server.routes.get((self.command, self.path),
                                              (404, b"404 page not found\n"))
        if not isinstance(body, bytes):
            body = (json.dumps(body) + "\n").encode()
            ctype = "application/json"
        else:
            ctype = "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


class _FakeNetmaster(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.requests: list = []
        self.routes: dict = {}

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # e.g. a refused TLS handshake; the client side is what is tested


DEFAULT_TENANT = {"key": "default", "tenantName": "default", "link-sets": {}}


class RecordedCliTests(unittest.TestCase):
    def setUp(self):
        self.server = _FakeNetmaster()
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.home = tempfile.mkdtemp(prefix="ctl-home-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.addCleanup(self.thread.join, 5)
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.route("GET", "/api/v1/tenants/default/", DEFAULT_TENANT)

    def route(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.server.routes[(method, path)] = (status, body)

    def netctl(self, *argv: str, env: Optional[dict] = None, stdin: str = ""):
        environ = {"HOME": self.home, "NETMASTER": self.server.url}
        environ.update(env or {})
        out, err = io.StringIO(), io.StringIO()
        code = run(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin),
                   environ=environ)
        return code, out.getvalue(), err.getvalue()

    def bodies(self, method: str = "POST"):
        return [(path, json.loads(raw)) for m, path, raw, _ in self.server.requests
                if m == method]

    def test_seed_network_create(self):
        self.route("POST", "/api/v1/networks/default:contiv-net/", {})
        code, out, err = self.netctl("net", "create", "contiv-net", "--subnet=20.1.1.0/24",
                                     "--gateway=20.1.1.254", "--pkt-tag=1001")
        self.assertEqual((code, out, err), (0, "Creating network default:contiv-net\n", ""))
        [(method, path, raw, headers)] = self.server.requests
        self.assertEqual((method, path), ("POST", "/api/v1/networks/default:contiv-net/"))
        self.assertEqual(raw.decode(), marshal({
            "encap": "vxlan", "gateway": "20.1.1.254", "networkName": "contiv-net",
            "nwType": "data", "pktTag": 1001, "subnet": "20.1.1.0/24", "tenantName": "default",
            "link-sets": {}, "links": {"Tenant": {}}}))
        self.assertNotIn("X-Auth-Token", headers)

    def test_seed_policy_lines(self):
        self.route("POST", "/api/v1/policys/default:prod_web/", {})
        for rule in ("1", "2", "3"):
            self.route("POST", f"/api/v1/rules/default:prod_web:{rule}/", {})
        self.route("POST", "/api/v1/endpointGroups/default:web/", {})
        runs = [
            ("policy", "create", "prod_web"),
            ("policy", "rule-add", "prod_web", "1", "-direction=in", "-protocol=tcp",
             "-action=deny"),
            ("policy", "rule-add", "prod_web", "2", "-direction=in", "-protocol=tcp",
             "-port=80", "-action=allow", "-priority=10"),
            ("policy", "rule-add", "prod_web", "3", "-direction=in", "-protocol=tcp",
             "-port=443", "-action=allow", "-priority=10"),
            ("group", "create", "contiv-net", "web", "-policy=prod_web"),
        ]
        outputs = [self.netctl(*argv) for argv in runs]
        self.assertEqual(outputs, [
            (0, "Creating policy default:prod_web\n", ""), (0, "", ""), (0, "", ""),
            (0, "", ""), (0, "Creating EndpointGroup default:web\n", "")])
        rule = {"action": "allow", "direction": "in", "policyName": "prod_web",
                "priority": 10, "protocol": "tcp", "tenantName": "default",
                "link-sets": {}, "links": {"MatchEndpointGroup": {}}}
        self.assertEqual(self.bodies(), [
            ("/api/v1/policys/default:prod_web/",
             {"policyName": "prod_web", "tenantName": "default", "link-sets": {},
              "links": {"Tenant": {}}}),
            ("/api/v1/rules/default:prod_web:1/",
             dict(rule, action="deny", priority=1, ruleId="1")),
            ("/api/v1/rules/default:prod_web:2/", dict(rule, port=80, ruleId="2")),
            ("/api/v1/rules/default:prod_web:3/", dict(rule, port=443, ruleId="3")),
            ("/api/v1/endpointGroups/default:web/",
             {"groupName": "web", "networkName": "contiv-net", "policies": ["prod_web"],
              "tenantName": "default", "link-sets": {},
              "links": {"AppProfile": {}, "NetProfile": {}, "Network": {}, "Tenant": {}}}),
        ])

    def test_net_ls_table_quiet_json_and_all(self):
        nets = [
            {"key": "default:contiv-net", "encap": "vxlan", "gateway": "20.1.1.254",
             "networkName": "contiv-net", "nwType": "data", "pktTag": 1001,
             "subnet": "20.1.1.0/24", "tenantName": "default", "link-sets": {},
             "links": {"Tenant": {"type": "tenant", "key": "default"}}},
            {"key": "blue:n2", "encap": "vlan", "networkName": "n2", "nwType": "data",
             "subnet": "10.1.0.0/16", "tenantName": "blue", "cfgdTag": "tag.x"},
        ]
        self.route("GET", "/api/v1/networks/", nets)
        code, out, err = self.netctl("net", "ls")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines(), [
            "Tenant   Network     Nw Type  Encap type  Packet tag  Subnet       Gateway     "
            "IPv6Subnet  IPv6Gateway  Cfgd Tag ",
            "------   -------     -------  ----------  ----------  -------      ------      "
            "----------  -----------  ---------",
            "default  contiv-net  data     vxlan       1001        20.1.1.0/24  20.1.1.254  "
            "                         ",
        ])
        self.assertEqual(self.server.requests[0][:2], ("GET", "/api/v1/tenants/default/"))
        code, out, _ = self.netctl("network", "list", "-a", "-q")
        self.assertEqual((code, out), (0, "contiv-net\nn2\n"))
        code, out, _ = self.netctl("net", "ls", "-j")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out), nets[:1])
        self.assertEqual(out, marshal_indent(nets[:1]) + "\n")
        self.route("GET", "/api/v1/tenants/blue/", {"tenantName": "blue"})
        code, out, _ = self.netctl("net", "ls", "-t", "blue")
        self.assertEqual(out.splitlines()[2].split(), ["blue", "n2", "data", "vlan", "0",
                                                       "10.1.0.0/16", "tag.x"])

    def test_ls_of_missing_tenant_fails_with_server_message(self):
        self.route("GET", "/api/v1/tenants/nope/", b"tenant not found\n", 500)
        code, out, err = self.netctl("group", "ls", "-t", "nope")
        self.assertEqual((code, out), (3, ""))
        self.assertEqual(err.count("tenant not found"), 1)
        self.assertNotIn("Traceback", err)
        self.assertEqual(len(self.server.requests), 1)

    def test_duplicate_create_prints_server_message_once(self):
        message = b"Cant change network parameters after its created\n"
        self.route("POST", "/api/v1/networks/default:contiv-net/", message, 500)
        code, out, err = self.netctl("net", "create", "contiv-net", "-s", "20.1.1.0/24")
        self.assertEqual((code, out), (3, ""))
        self.assertEqual(err.count("Cant change network parameters after its created"), 1)
        self.assertTrue(err.startswith("ERRO["), err)

    def test_other_http_errors(self):
        self.route("GET", "/api/v1/policys/", b"nope", 403)
        code, _, err = self.netctl("policy", "ls")
        self.assertEqual(code, 3)
        self.assertRegex(err, r"^ERRO\[[0-9]{4}\] Access denied!\n$")
        self.route("GET", "/api/v1/policys/", b"", 502)
        code, _, err = self.netctl("policy", "ls")
        self.assertEqual(code, 3)
        self.assertIn("502 Bad Gateway", err)
        code, _, err = self.netctl("policy", "inspect", "missing")
        self.assertEqual((code, err.strip()[-15:]), (3, "Page not found!"))
        self.route("GET", "/api/v1/policys/", b"not json", 200)
        self.assertEqual(self.netctl("policy", "ls")[0], 3)

    def test_delete_announces_first_and_404_counts_as_success(self):
        self.route("DELETE", "/api/v1/networks/default:gone/", b"network not found\n", 500)
        code, out, err = self.netctl("net", "rm", "gone")
        self.assertEqual((code, out), (3, "Deleting network default:gone\n"))
        self.assertIn("network not found", err)
        # No route: our fake answers 404, which Contiv's client treats as done.
        code, out, err = self.netctl("network", "delete", "-t", "blue", "x")
        self.assertEqual((code, out, err), (0, "Deleting network blue:x\n", ""))
        self.assertEqual(self.server.requests[-1][:2], ("DELETE", "/api/v1/networks/blue:x/"))

    def test_client_side_checks_send_nothing(self):
        code, out, err = self.netctl("net", "create", "n1")
        self.assertEqual(code, 1)
        self.assertIn("Subnet is required", err)
        self.assertIn("netctl network create", out)  # the command's help
        self.assertEqual(self.netctl("net", "create", "n1", "-s", "1.1.1.0/24", "-g", "x")[0], 1)
        code, _, err = self.netctl("policy", "rule-add", "p", "1", "-d", "out", "-g", "web")
        self.assertEqual((code, err.count("Cant specify from-group for outgoing rule")), (1, 1))
        code, _, err = self.netctl("policy", "rule-add", "p")
        self.assertEqual(code, 1)
        self.assertIn("Policy name and Rule ID required", err)
        code, _, err = self.netctl("net", "ls", "--bogus")
        self.assertEqual(code, 1)
        self.assertIn("flag provided but not defined: -bogus", err)
        self.assertEqual(self.netctl("bgp", "create", "h1", "--router-ip", "1.1.1.1")[0], 1)
        self.assertEqual(self.netctl("external-contracts", "create", "c", "-c", "-p",
                                     "-a", "x")[0], 1)
        self.assertEqual(self.server.requests, [])

    def test_help_and_unknown_commands(self):
        code, out, _ = self.netctl()
        self.assertEqual(code, 0)
        self.assertIn(DEFAULT_MASTER, out)
        self.assertIn("network, net", out)
        self.assertEqual(self.netctl("net")[0], 0)
        self.assertEqual(self.netctl("net", "create", "--help")[0], 0)
        self.assertEqual(self.netctl("help", "net")[0], 0)
        self.assertEqual(self.netctl("frobnicate")[0::2], (1, "No help topic for 'frobnicate'\n"))
        self.assertEqual(self.netctl("net", "frob")[0], 1)
        self.assertEqual(self.server.requests, [])

    def test_unreachable_netmaster_exit_2(self):
        port = free_tcp_port()
        url = f"http://127.0.0.1:{port}"
        code, out, err = self.netctl("--netmaster", url, "tenant", "ls")
        self.assertEqual((code, out), (2, ""))
        self.assertIn(url, err)
        self.assertIn("--netmaster", err)
        self.assertIn("NETMASTER", err)
        self.assertEqual(err.count("\n"), 1)
        code, _, err = self.netctl("--netmaster", "ftp://x", "tenant", "ls")
        self.assertEqual(code, 1)
        self.assertIn("must begin with http:// or https://", err)

    def test_netmaster_flag_beats_env(self):
        self.route("GET", "/api/v1/tenants/", [DEFAULT_TENANT])
        bad_env = {"NETMASTER": f"http://127.0.0.1:{free_tcp_port()}"}
        code, out, _ = self.netctl("--netmaster", self.server.url, "tenant", "ls", env=bad_env)
        self.assertEqual((code, out), (0, "Name     \n------   \ndefault  \n"))
        code, out, _ = self.netctl("tenant", "ls", "--netmaster=" + self.server.url,
                                   env=bad_env)
        self.assertEqual(code, 0)
        self.assertEqual(self.netctl("tenant", "ls", env=bad_env)[0], 2)
        self.assertEqual(self.netctl("tenant", "ls", "-q")[1], "default\n")

    def test_rule_ls(self):
        self.route("GET", "/api/v1/policys/default:prod_web/", {"policyName": "prod_web"})
        base = {"tenantName": "default", "policyName": "prod_web", "protocol": "tcp"}
        self.route("GET", "/api/v1/rules/", [
            dict(base, ruleId="3", priority=10, direction="in", port=443, action="allow"),
            dict(base, ruleId="1", priority=1, direction="in", action="deny"),
            dict(base, ruleId="9", priority=5, direction="out", toEndpointGroup="db",
                 action="allow"),
            dict(base, policyName="other", ruleId="7", priority=1, direction="in"),
        ])
        code, out, err = self.netctl("policy", "rule-ls", "prod_web")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, (
            "Incoming Rules:\n"
            "Rule  Priority  From EndpointGroup  From Network  From IpAddress  To IpAddress  "
            "Protocol  Port  Action\n"
            "----  --------  ------------------  ------------  ---------       ------------  "
            "--------  ----  ------\n"
            "1     1                                                                         "
            "tcp       0     deny\n"
            "3     10                                                                        "
            "tcp       443   allow\n"
            "Outgoing Rules:\n"
            "Rule  Priority  To EndpointGroup  To Network  To IpAddress  Protocol  Port  Action\n"
            "----  --------  ----------------  ----------  ---------     --------  ----  ------\n"
            "9     5         db                                          tcp       0     allow\n"))
        self.assertEqual(self.netctl("policy", "rule-ls", "prod_web", "-q")[1], "1\n9\n3\n")
        self.assertEqual([r["ruleId"] for r in
                          json.loads(self.netctl("policy", "rule-ls", "-j", "prod_web")[1])],
                         ["1", "9", "3"])

    def test_global_info_and_set(self):
        current = {"key": "global", "arpMode": "proxy", "fwdMode": "bridge", "name": "global",
                   "networkInfraType": "default", "pvtSubnet": "172.19.0.0/16",
                   "vlans": "1-4094", "vxlans": "1-10000"}
        self.route("GET", "/api/v1/globals/", [current])
        self.route("GET", "/api/v1/globals/global/", current)
        self.route("POST", "/api/v1/globals/global/", current)
        code, out, _ = self.netctl("global", "info")
        self.assertEqual((code, out), (0, "Fabric mode: default\nForward mode: bridge\n"
                                          "ARP mode: proxy\nVlan Range: 1-4094\n"
                                          "Vxlan range: 1-10000\nPrivate subnet: 172.19.0.0/16\n"))
        code, out, _ = self.netctl("global", "set", "--fwd-mode", "routing", "-v", "1-100")
        self.assertEqual((code, out), (0, ""))
        [(path, body)] = self.bodies()
        self.assertEqual(path, "/api/v1/globals/global/")
        self.assertEqual(body, dict(current, fwdMode="routing", vlans="1-100"))

    def test_inspect_prints_server_json(self):
        inspect = {"Config": {"key": "default:contiv-net", "networkName": "contiv-net"},
                   "Oper": {"allocatedIPAddresses": "20.1.1.254", "pktTag": 1}}
        self.route("GET", "/api/v1/inspect/networks/default:contiv-net/", inspect)
        code, out, _ = self.netctl("net", "inspect", "contiv-net")
        self.assertEqual((code, out), (0, marshal_indent(inspect) + "\n"))
        self.route("GET", "/api/v1/inspect/endpoints/abc/", {"Oper": {"ipAddress": ["1.1.1.1"]}})
        self.assertEqual(json.loads(self.netctl("ep", "inspect", "abc")[1]),
                         {"Oper": {"ipAddress": ["1.1.1.1"]}})

    def test_version(self):
        self.route("GET", "/version", {"GitCommit": "abc", "Version": "9.9", "BuildTime": "now"})
        code, out, _ = self.netctl("version")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("Client Version:\nVersion: "), out)
        self.assertTrue(out.endswith("\nServer Version:\nVersion: 9.9\nGitCommit: abc\n"
                                     "BuildTime: now\n"), out)
        self.route("GET", "/version", b"boom\n", 500)
        code, _, err = self.netctl("version")
        self.assertEqual(code, 3)
        self.assertIn("boom", err)
        self.assertIn("Status 500 in request response", err)

    def test_auth_token_only_over_https(self):
        os.makedirs(os.path.join(self.home, ".netctl"))
        with open(os.path.join(self.home, ".netctl", "config.json"), "w") as handle:
            handle.write('{"token": "t0k"}')
        code, _, err = self.netctl("policy", "ls")
        self.assertEqual(code, 3)
        self.assertIn("requires a https auth_proxy URL", err)
        self.assertEqual(self.server.requests, [])

    def test_login_needs_https(self):
        code, out, _ = self.netctl("login", stdin="admin\nsecret\n")
        self.assertEqual(code, 3)
        self.assertTrue(out.startswith("login requires a https auth_proxy URL\n"), out)
        self.assertEqual(self.server.requests, [])
        self.assertFalse(os.path.exists(os.path.join(self.home, ".netctl")))

    def test_https_login_then_token(self):
        require_binary("openssl")
        cert = os.path.join(self.home, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=127.0.0.1", "-keyout", cert, "-out", cert],
                       check=True, capture_output=True, timeout=60)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        https = self.server.url.replace("http://", "https://")
        self.route("POST", "/api/v1/auth_proxy/login/", b'{"token":"t0k"}', 401)
        code, out, _ = self.netctl("--insecure", "login", stdin="admin\nbad\n",
                                   env={"NETMASTER": https})
        self.assertEqual(code, 3)
        self.assertIn("Login failed: Bad username or password.", out)
        self.route("POST", "/api/v1/auth_proxy/login/", b'{"token":"t0k"}', 200)
        code, out, err = self.netctl("--insecure", "login", stdin="admin\nsecret\n",
                                     env={"NETMASTER": https})
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.endswith("Login succeeded.\n"), out)
        logins = [json.loads(raw) for m, path, raw, _ in self.server.requests
                  if path == "/api/v1/auth_proxy/login/"]
        self.assertEqual(logins, [{"username": "admin", "password": "bad"},
                                  {"username": "admin", "password": "secret"}])
        config = os.path.join(self.home, ".netctl", "config.json")
        self.assertEqual(os.stat(config).st_mode & 0o777, 0o600)
        self.route("GET", "/api/v1/tenants/", [DEFAULT_TENANT])
        # Without --insecure the self-signed certificate is refused: no answer.
        code, _, err = self.netctl("tenant", "ls", "-q", env={"NETMASTER": https})
        self.assertEqual(code, 2)
        self.assertIn("--insecure", err)
        code, out, _ = self.netctl("--insecure", "tenant", "ls", "-q", env={"NETMASTER": https})
        self.assertEqual((code, out), (0, "default\n"))
        self.assertEqual(self.server.requests[-1][3].get("X-Auth-Token"), "t0k")

    def test_other_objects_requests(self):
        for path in ("netprofiles/default:np", "appProfiles/default:app", "Bgps/h1",
                     "serviceLBs/default:svc", "extContractsGroups/default:cg",
                     "aciGws/aciGw", "tenants/blue"):
            self.route("POST", f"/api/v1/{path}/", {})
        runs = [
            (("netprofile", "create", "np", "-b", "10 kbps", "--dscp=5", "-s", "64"),
             "Creating netprofile default:np\n"),
            (("app-profile", "create", "app", "-g", "web,db"), "Creating AppProfile default:app\n"),
            (("bgp", "create", "h1", "--router-ip=10.0.0.1/24", "--as=65000",
              "--neighbor-as=65001", "--neighbor=10.0.0.2"), ""),
            (("service", "create", "svc", "-s", "contiv-net", "-l", "app=web", "-l", "t=x",
              "-p", "80:8080:TCP"), "Creating ServiceLB default:svc\n"),
            (("external-contracts", "create", "cg", "-p", "-a", "uni/x"),
             "Creating ExternalContracts default:cg\n"),
            (("aci-gw", "set", "-d", "dom"), ""),
            (("tenant", "create", "blue"), "Creating tenant: blue\n"),
        ]
        for argv, expected in runs:
            self.assertEqual(self.netctl(*argv), (0, expected, ""), argv)
        bodies = dict(self.bodies())
        self.assertEqual(bodies["/api/v1/netprofiles/default:np/"],
                         {"DSCP": 5, "bandwidth": "10 kbps", "burst": 64, "profileName": "np",
                          "tenantName": "default", "link-sets": {}, "links": {"Tenant": {}}})
        self.assertEqual(bodies["/api/v1/appProfiles/default:app/"]["endpointGroups"],
                         ["web", "db"])
        self.assertEqual(bodies["/api/v1/Bgps/h1/"],
                         {"as": "65000", "hostname": "h1", "neighbor": "10.0.0.2",
                          "neighbor-as": "65001", "routerip": "10.0.0.1/24"})
        self.assertEqual(bodies["/api/v1/serviceLBs/default:svc/"],
                         {"networkName": "contiv-net", "ports": ["80:8080:TCP"],
                          "selectors": ["app=web", "t=x"], "serviceName": "svc",
                          "tenantName": "default", "links": {"Network": {}, "Tenant": {}}})
        self.assertEqual(bodies["/api/v1/extContractsGroups/default:cg/"],
                         {"contracts": ["uni/x"], "contractsGroupName": "cg",
                          "contractsType": "provided", "tenantName": "default",
                          "link-sets": {}})
        # aci-gw set: the GET failed (404 here), so a fresh object is posted.
        self.assertEqual(bodies["/api/v1/aciGws/aciGw/"],
                         {"enforcePolicies": "yes", "includeCommonTenant": "no",
                          "name": "aciGw", "physicalDomain": "dom"})


# ---------------------------------------------------------------------------
# netctl (the console script) against a live netmaster
# ---------------------------------------------------------------------------

def _netmaster_process():
    try:
        from contiv_sdn.testing.netmaster import NetmasterProcess
    except ImportError as exc:
        require(False, "LIVE NETCTL TESTS NOT RUN: contiv_sdn.testing.netmaster."
                       f"NetmasterProcess is not available yet ({exc})")
    return NetmasterProcess


class LiveNetmasterTests(unittest.TestCase):
    """The seed README's lines, run as a user would, against a real netmaster."""

    def setUp(self):
        netmaster_process = _netmaster_process()
        self.home = tempfile.mkdtemp(prefix="ctl-live-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.netmaster = netmaster_process()
        self.addCleanup(self.netmaster.stop)
        self.netmaster.start()

    def netctl(self, *argv: str) -> tuple[int, str, str]:
        env = dict(os.environ, HOME=self.home, NETMASTER=self.netmaster.url)
        proc = subprocess.run([NETCTL] + list(argv), capture_output=True, text=True, env=env,
                              timeout=60)
        return proc.returncode, proc.stdout, proc.stderr

    def ok(self, *argv: str) -> str:
        code, out, err = self.netctl(*argv)
        self.assertEqual((code, err), (0, ""), argv)
        return out

    def _walkthrough(self, policy: str) -> None:
        self.assertEqual(self.ok("net", "create", "contiv-net", "--subnet=20.1.1.0/24",
                                 "--gateway=20.1.1.254", "--pkt-tag=1001"),
                         "Creating network default:contiv-net\n")
        lines = self.ok("net", "ls").splitlines()
        self.assertEqual(lines[0].split(), ["Tenant", "Network", "Nw", "Type", "Encap", "type",
                                            "Packet", "tag", "Subnet", "Gateway", "IPv6Subnet",
                                            "IPv6Gateway", "Cfgd", "Tag"])
        self.assertEqual(lines[2].split(), ["default", "contiv-net", "data", "vxlan", "1001",
                                            "20.1.1.0/24", "20.1.1.254"])
        self.assertEqual(self.ok("net", "ls", "-q"), "contiv-net\n")

        self.assertEqual(self.ok("policy", "create", policy),
                         f"Creating policy default:{policy}\n")
        self.ok("policy", "rule-add", policy, "1", "-direction=in", "-protocol=tcp",
                "-action=deny")
        self.ok("policy", "rule-add", policy, "2", "-direction=in", "-protocol=tcp",
                "-port=80", "-action=allow", "-priority=10")
        self.ok("policy", "rule-add", policy, "3", "-direction=in", "-protocol=tcp",
                "-port=443", "-action=allow", "-priority=10")
        rules = self.ok("policy", "rule-ls", policy).splitlines()
        self.assertEqual(rules[0], "Incoming Rules:")
        # By priority; rules 2 and 3 tie, so their order is the server's.
        self.assertEqual(rules[3].split(), ["1", "1", "tcp", "0", "deny"])
        self.assertEqual(sorted(line.split() for line in rules[4:6]),
                         [["2", "10", "tcp", "80", "allow"], ["3", "10", "tcp", "443", "allow"]])
        self.assertEqual(rules[6], "Outgoing Rules:")
        self.assertEqual(len(rules), 9)

        self.assertEqual(self.ok("group", "create", "contiv-net", "web", "-policy=" + policy),
                         "Creating EndpointGroup default:web\n")
        groups = self.ok("group", "ls").splitlines()
        self.assertEqual(groups[2].split(), ["default", "web", "contiv-net", policy])

        inspect = json.loads(self.ok("net", "inspect", "contiv-net"))
        self.assertEqual(inspect["Config"]["networkName"], "contiv-net")
        self.assertEqual(inspect["Oper"]["externalPktTag"], 1001)
        self.assertIn("default", self.ok("tenant", "ls", "-q").split())
        info = self.ok("global", "info").splitlines()
        self.assertEqual([line.split(":")[0] for line in info],
                         ["Fabric mode", "Forward mode", "ARP mode", "Vlan Range",
                          "Vxlan range", "Private subnet"])

        version = self.ok("version")
        self.assertTrue(version.startswith("Client Version:\nVersion: "), version)
        self.assertIn("\n\nServer Version:\nVersion: ", version)
        code, out, err = self.netctl("ep", "inspect", "no-such-container")
        self.assertEqual((code, out, err.count("endpoint not found")), (3, "", 1))

        # The error case: a duplicate create prints the server's message once.
        code, out, err = self.netctl("net", "create", "contiv-net", "-s", "20.1.1.0/24")
        self.assertEqual((code, out), (3, ""))
        self.assertEqual(err.count("ERRO["), 1, err)
        self.assertNotIn("Traceback", err)

        # Deleting: a network with a group is refused; then in order it works.
        code, _, err = self.netctl("net", "rm", "contiv-net")
        self.assertEqual(code, 3, err)
        self.ok("group", "rm", "web")
        self.ok("policy", "rule-rm", policy, "1")
        self.assertEqual(self.ok("policy", "rule-ls", "-q", policy), "2\n3\n")
        self.assertEqual(self.ok("policy", "rm", policy), f"Deleting policy default:{policy}\n")
        self.assertEqual(self.ok("net", "rm", "contiv-net"), "Deleting network default:contiv-net\n")
        self.assertEqual(self.ok("net", "ls", "-q"), "")
        self.assertEqual(self.ok("net", "ls", "-j"), "[]\n")

    def test_seed_walkthrough(self):
        """The seed's lines exactly as written, policy prod_web included (our names
        accept an inner underscore, a documented deviation from Contiv's NAME_RE)."""
        self._walkthrough("prod_web")

    def test_seed_walkthrough_dashed_policy(self):
        """The same walkthrough with a name Contiv itself accepts."""
        self._walkthrough("prod-web")
