"""``contiv-cni`` under hostile input (issue 18, item 6): never a traceback, always CNI error JSON.

Every case runs the installed ``contiv-cni`` as a runtime does (a subprocess with
``CNI_*`` variables and the configuration on stdin) and checks the whole answer:
exit status non-zero, stdout one JSON object ``{cniVersion, code, msg[, details]}``
with the spec's code, a message naming what was wrong, nothing on stderr, and not
the plugin's catch-all for bugs ("internal error in contiv-cni") — so each case is
refused by a check made for it, not by accident.

netplugin is the plugin's peer process, so its replies are input too: a stand-in
on a UNIX socket (in this module only) answers the plugin with hostile replies —
wrong types, NaN, non-JSON, no HTTP, silence, a trickle — and a stand-in TCP server
plays a Kubernetes API server that never finishes answering.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer, endpoints, protocol, reactor, task, threads
from twisted.trial import unittest

from drivers.cni import netplugin
from tests.test_drv_cni import CNI, require_cni

CONF = {"cniVersion": "1.0.0", "name": "hard", "type": "contiv-cni",
        "socket": "/nonexistent/netplugin.sock"}
ENV = {"CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}
POD_ARGS = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1"
# Python's own words, which must never reach a runtime
PYTHON_WORDS = ("Traceback", "RecursionError", "TypeError", "ValueError", "KeyError",
                "AttributeError", "internal error in contiv-cni")
# a Python repr of a dict or list ({'a': 1}, ['x']); Go quotes a character as '{'
PYTHON_REPR = re.compile(r"(?<!')[\[{]'")


def invoke(command: Optional[str], stdin: bytes, env: Optional[Dict[Any, Any]] = None
           ) -> Tuple[int, bytes, bytes]:
    """Run the plugin; (exit status, stdout, stderr)."""
    full: Dict[Any, Any] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if command is not None:
        full["CNI_COMMAND"] = command
    full.update(env or {})
    proc = subprocess.run([CNI], input=stdin, env=full, capture_output=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def conf(**fields: Any) -> bytes:
    return json.dumps(dict(CONF, **fields)).encode()


def k8s_conf(**k8s: Any) -> bytes:
    return conf(kubernetes=dict({"apiServer": "http://127.0.0.1:1"}, **k8s))


class CNITestCase(unittest.TestCase):
    def setUp(self) -> None:
        require_cni()

    def assertCNIError(self, result: Tuple[int, bytes, bytes], code: int,
                       *words: str) -> Dict[str, Any]:
        """A spec error: exit 1, one JSON object with exactly the spec's keys, the code,
        the words in msg or details, nothing on stderr, no Python in the text."""
        status, out, err = result
        self.assertEqual(err, b"", err.decode(errors="replace")[-2000:])
        self.assertEqual(status, 1, out)
        self.assertTrue(out.endswith(b"\n") and out.count(b"\n") == 1, out)
        answer = json.loads(out)
        self.assertIsInstance(answer, dict)
        self.assertLessEqual({"cniVersion", "code", "msg"}, set(answer), answer)
        self.assertLessEqual(set(answer), {"cniVersion", "code", "msg", "details"}, answer)
        self.assertEqual(answer["code"], code, answer)
        text = answer["msg"] + " " + answer.get("details", "")
        for word in words:
            self.assertIn(word, text)
        for word in PYTHON_WORDS:
            self.assertNotIn(word, text)
        self.assertIsNone(PYTHON_REPR.search(text), text)
        return answer

    def cni(self, command: Optional[str], stdin: bytes, env: Optional[Dict[Any, Any]] = None
            ) -> defer.Deferred:
        # in a thread: a stand-in peer may be running on this reactor
        return threads.deferToThread(invoke, command, stdin, env)


class HostileStdinTests(CNITestCase):
    """Stdin no Go plugin would accept: refused with codes 6/7, for every command."""

    def test_deep_nesting(self):
        deep = b"[" * 5000
        # an unfinished document: cannot be decoded (code 6)
        self.assertCNIError(invoke("ADD", deep, ENV), 6, "decode", "unexpected EOF")
        # VERSION reads only cniVersion: it still answers, in the latest version
        status, out, err = invoke("VERSION", deep)
        self.assertEqual((status, err), (0, b""))
        self.assertEqual(json.loads(out)["cniVersion"], "1.1.0")
        # no CNI_COMMAND: that is what is wrong, said as an environment error
        self.assertCNIError(invoke(None, deep, ENV), 4, "CNI_COMMAND", "unset")
        self.assertCNIError(invoke("FROB", deep, ENV), 4, "CNI_COMMAND", '"FROB"')
        # deeper than Go allows
        self.assertCNIError(invoke("DEL", b"[" * 20000, ENV), 6, "max depth")
        # complete but nested 5000 deep: valid JSON, not a configuration
        balanced = b"[" * 5000 + b"]" * 5000
        self.assertCNIError(invoke("ADD", balanced, ENV), 6, "JSON object")
        # nested inside a field the plugin reads, and inside one it does not
        nested = b"[" * 5000 + b"]" * 5000

        def with_field(name: str) -> bytes:
            return conf()[:-1] + b', "' + name.encode() + b'": ' + nested + b"}"
        self.assertCNIError(invoke("ADD", with_field("dns"), ENV), 7, "NetConf.dns")
        status, out, err = invoke("VERSION", with_field("extra"))
        self.assertEqual((status, err, json.loads(out)["cniVersion"]), (0, b"", "1.0.0"))
        # ... and ignored where the plugin does not look (it gets as far as netplugin)
        self.assertCNIError(invoke("ADD", with_field("extra"), ENV), 11, "not running")

    def test_nan_and_infinity_anywhere(self):
        base = conf()[:-1]
        for tail in (b', "x": NaN}', b', "x": [1, Infinity]}', b', "x": {"y": -Infinity}}',
                     b', "kubernetes": {"timeout": NaN}}'):
            self.assertCNIError(invoke("ADD", base + tail, ENV), 6, "decode",
                                "invalid character")
            self.assertCNIError(invoke("DEL", base + tail, ENV), 6, "decode")
        # VERSION does not need the document: answers (latest version) rather than failing
        status, out, _ = invoke("VERSION", base + b', "x": NaN}')
        self.assertEqual((status, json.loads(out)["cniVersion"]), (0, "1.1.0"))

    def test_kubernetes_timeout(self):
        env = dict(ENV, CNI_ARGS=POD_ARGS)
        self.assertCNIError(invoke("ADD", k8s_conf(timeout="abc"), env), 7,
                            "kubernetes.timeout", "float64")
        self.assertCNIError(invoke("ADD", k8s_conf(timeout=-1), env), 7,
                            "kubernetes.timeout", "greater than 0")
        self.assertCNIError(invoke("ADD", k8s_conf(timeout=1e6), env), 7,
                            "kubernetes.timeout", "at most")
        # beyond float64: the strict parser refuses the document itself, as Go's does
        raw = k8s_conf()[:-2] + b', "timeout": 1e309}}'
        self.assertCNIError(invoke("ADD", raw, env), 6, "1e309", "float64")

    def test_kubernetes_api_server(self):
        env = dict(ENV, CNI_ARGS=POD_ARGS)
        for url in ("http://[::1", "http://host:99999", "http://host:port", "ftp://host",
                    "http://", "http://a b", "http://host/\r\nX-Evil: 1"):
            self.assertCNIError(invoke("ADD", k8s_conf(apiServer=url), env), 7,
                                "kubernetes.apiServer")
        self.assertCNIError(invoke("ADD", k8s_conf(apiServer=["http://x"]), env), 7,
                            "kubernetes.apiServer", "string")

    def test_kubernetes_files_and_tokens(self):
        env = dict(ENV, CNI_ARGS=POD_ARGS)
        for field, value in (("caFile", 5), ("caFile", {"a": 1}), ("tokenFile", 5),
                             ("tokenFile", []), ("token", 7)):
            self.assertCNIError(invoke("ADD", k8s_conf(**{field: value}), env), 7,
                                f"kubernetes.{field}", "of type string")
        tmp = self.mktemp()
        os.makedirs(tmp)
        for content in (b"abc\r\nX-Evil: 1\n", b"abc\ndef", b"a b", b"\xff\xfe"):
            path = os.path.join(tmp, "token")
            with open(path, "wb") as f:
                f.write(content)
            self.assertCNIError(invoke("ADD", k8s_conf(tokenFile=path), env), 7,
                                "kubernetes.tokenFile", "not a bearer token")
        self.assertCNIError(invoke("ADD", k8s_conf(token="abc\r\nX-Evil: 1"), env), 7,
                            "kubernetes.token", "not a bearer token")
        # bounded: a token file that never ends
        self.assertCNIError(invoke("ADD", k8s_conf(tokenFile="/dev/zero"), env), 7,
                            "larger than")
        self.assertCNIError(invoke("ADD", k8s_conf(tokenFile=tmp), env), 5,
                            "kubernetes.tokenFile")
        self.assertCNIError(invoke("ADD", k8s_conf(apiServer="https://127.0.0.1:1",
                                                   caFile=os.path.join(tmp, "none.crt")), env),
                            5, "kubernetes.caFile")
        self.assertCNIError(invoke("ADD", k8s_conf(apiServer="https://127.0.0.1:1",
                                                   caFile=path), env),
                            5, "kubernetes.caFile")

    def test_every_declared_field_is_type_checked(self):
        cases: List[Tuple[str, Dict[str, Any], str]] = [
            ("ADD", {"socket": 5}, "NetConf.socket"),
            ("ADD", {"tenant": [1]}, "NetConf.tenant"),
            ("ADD", {"network": {"a": 1}}, "NetConf.network"),
            ("ADD", {"group": True}, "NetConf.group"),
            ("ADD", {"name": 5}, "NetConf.name"),
            ("ADD", {"type": None, "x": 1}, '"type"'),
            ("ADD", {"dns": "8.8.8.8"}, "NetConf.dns"),
            ("ADD", {"dns": {"nameservers": "8.8.8.8"}}, "dns.nameservers"),
            ("ADD", {"dns": {"search": [1]}}, "dns.search"),
            ("ADD", {"kubernetes": "http://x"}, "NetConf.kubernetes"),
            ("ADD", {"args": {"org.apache.mesos": {"network_info": {"labels": {"labels": [
                {"key": 1, "value": "x"}]}}}}}, "labels.labels.key"),
            ("ADD", {"args": {"org.apache.mesos": {"network_info": {"labels": {"labels": [
                {"key": "k", "value": {"v": 1}}]}}}}}, "labels.labels.value"),
            ("ADD", {"args": {"org.apache.mesos": []}}, "args.org.apache.mesos"),
            ("ADD", {"runtimeConfig": {"ips": [1]}}, "runtimeConfig.ips"),
            ("ADD", {"runtimeConfig": {"ips": "10.0.0.1"}}, "runtimeConfig.ips"),
            ("CHECK", {"prevResult": {"ips": "10.0.0.1/24"}}, "prevResult.ips"),
            ("CHECK", {"prevResult": {"ips": [{"address": 5}]}}, "prevResult.ips.address"),
            ("CHECK", {"prevResult": []}, "NetConf.prevResult"),
            ("GC", {"cniVersion": "1.1.0", "cni.dev/valid-attachments": {"a": 1}},
             "cni.dev/valid-attachments"),
            ("GC", {"cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"ifname": 5}]},
             "valid-attachments.ifname"),
        ]
        for command, fields, words in cases:
            answer = self.assertCNIError(invoke(command, conf(**fields), ENV), 7, words)
            self.assertNotIn("not running", answer["msg"], (fields, answer))
        # the version is told before the fields
        self.assertCNIError(invoke("ADD", conf(cniVersion="0.1.0", tenant=5), ENV), 1, "0.1.0")
        self.assertCNIError(invoke("ADD", conf(cniVersion=1), ENV), 7, "cniVersion")
        # a NUL in the socket path (valid JSON) is no path
        self.assertCNIError(invoke("ADD", conf(socket="/run/x\u0000y"), ENV), 7, "socket")
        # CHECK without a prevResult to check against
        self.assertCNIError(invoke("CHECK", conf(), ENV), 7, "prevResult")

    def test_environment_that_is_not_text(self):
        self.assertCNIError(invoke("ADD", conf(), dict(ENV, CNI_ARGS=b"K8S_POD_NAME=\xff")), 4,
                            "CNI_ARGS")
        self.assertCNIError(invoke("ADD", conf(), dict(ENV, CNI_NETNS=b"/run/netns/\xff")), 4,
                            "CNI_NETNS")
        self.assertCNIError(invoke("ADD", conf(), dict(ENV, CNI_PATH=b"/opt/\xfe")), 4,
                            "CNI_PATH")
        # the value is shown as a JSON string, not as Python would print it
        answer = self.assertCNIError(invoke("ADD", conf(), dict(ENV, CNI_ARGS="a=1;'b'")), 4,
                                     "CNI_ARGS")
        self.assertIn('"\'b\'" is not KEY=VALUE', answer["details"])

    def test_stdin_sweep(self):
        """A bounded table of hostile documents × every command: each answers with a spec
        error of the right family (or VERSION's answer), never anything else."""
        docs = [b"", b" ", b"null", b"0", b'"s"', b"[]", b"{}", b"\xff\xfe", b"{\"a\":",
                b"\x00", b"{" * 100000, b'{"cniVersion": 1.0}', b'{"cniVersion": "1.0.0"}',
                b'{"cniVersion": "9.9.9", "name": "x", "type": "y"}',
                b'{"cniVersion": "1.0.0", "name": "", "type": "y"}',
                b'{"cniVersion": "1.0.0", "name": "x", "type": "y", "socket": "rel"}',
                b'{"cniVersion": "1.0.0", "name": "x", "type": "y", "dns": null}' + b"]" * 9]
        for doc in docs:
            for command in ("ADD", "DEL", "CHECK", "STATUS", "GC"):
                status, out, err = result = invoke(command, doc, ENV)
                answer = json.loads(out)
                self.assertIn(answer["code"], (1, 6, 7, 11), (command, doc[:40], answer))
                self.assertCNIError(result, answer["code"])
            status, out, err = invoke("VERSION", doc)
            self.assertEqual((status, err), (0, b""), doc[:40])
            self.assertIn("supportedVersions", json.loads(out))


# -- netplugin's replies ----------------------------------------------------------


class StandInNetplugin(protocol.Protocol):
    """Reads one HTTP/1.0 request, then answers with ``reply`` (raw bytes) and closes;
    ``reply`` None: never answers; ``trickle``: sends a byte every 0.1 s forever."""

    def __init__(self, factory: "StandInFactory"):
        self.factory = factory
        self.buf = b""
        self.loop: Optional[task.LoopingCall] = None

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        self.factory.requests.append((head.split(b"\r\n")[0].decode(), body))
        reply = self.factory.reply
        if self.factory.trickle:
            self.loop = task.LoopingCall(self.transport.write, b"H")
            self.loop.start(0.1)
        elif reply is not None:
            self.transport.write(reply)
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()


class StandInFactory(protocol.Factory):
    def __init__(self) -> None:
        self.reply: Optional[bytes] = None
        self.trickle = False
        self.requests: List[Tuple[str, bytes]] = []
        self.protocols: List[StandInNetplugin] = []

    def buildProtocol(self, addr: Any) -> StandInNetplugin:
        p = StandInNetplugin(self)
        self.protocols.append(p)
        return p

    def answer(self, body: Any, status: str = "200 OK") -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.reply = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


GOOD_RECORD = {"id": "abc123", "containerID": "abc123", "ifname": "eth0",
               "intfName": "cvabc123", "ipAddress": "10.37.1.5", "prefixLen": 24,
               "gateway": "10.37.1.254", "macAddress": "02:02:0a:25:01:05", "ofport": 7,
               "labels": {"cni.contiv.io/network": "hard"}}


class NetpluginReplyTests(CNITestCase):
    """The plugin trusts nothing netplugin sends: every reply is bounded and type-checked."""

    timeout = 120

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="hardcni")  # short: AF_UNIX paths are
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sock = os.path.join(self.dir, "np.sock")
        self.peer = StandInFactory()
        d = endpoints.UNIXServerEndpoint(reactor, self.sock).listen(self.peer)

        def listening(port: Any) -> None:
            self.addCleanup(self.drop_connections)
            self.addCleanup(port.stopListening)
        return d.addCallback(listening)

    def drop_connections(self) -> None:
        for p in self.peer.protocols:
            if p.transport is not None:
                p.transport.abortConnection()

    def conf(self, **fields: Any) -> bytes:
        return conf(socket=self.sock, **fields)

    async def add(self, reply: Any, status: str = "200 OK") -> Dict[str, Any]:
        self.peer.answer(reply, status)
        return await self.cni("ADD", self.conf(), ENV)

    @defer.inlineCallbacks
    def test_well_formed_reply_is_used(self):
        """The stand-in speaks netplugin's API faithfully: the refusals below are about
        the replies' content."""
        self.peer.answer(GOOD_RECORD)
        status, out, err = yield self.cni("ADD", self.conf(), ENV)
        self.assertEqual((status, err), (0, b""), out)
        result = json.loads(out)
        self.assertEqual(result["ips"], [{"address": "10.37.1.5/24", "gateway": "10.37.1.254",
                                          "interface": 1}])
        self.assertEqual(result["interfaces"][1]["mac"], "02:02:0a:25:01:05")
        self.assertEqual(result["dns"], {"nameservers": ["10.37.1.254"]})
        line, body = self.peer.requests[-1]
        self.assertEqual(line, "POST /v1/endpoints HTTP/1.0")
        self.assertEqual(json.loads(body)["id"], "abc123")

    @defer.inlineCallbacks
    def test_add_with_malformed_records(self):
        cases: List[Tuple[bytes, Tuple[str, ...]]] = [
            (b'{"ipAddress":5,"prefixLen":[]}', ("Endpoint.ipAddress", "of type string")),
            (b'{"ipAddress":"10.0.0.5","prefixLen":[]}', ("Endpoint.prefixLen",)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":24,"x":NaN}', ("invalid character 'N'",)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":1e400}', ("Endpoint.prefixLen",)),
            (b"Internal hiccup", ("invalid character 'I'",)),
            (b"[" * 5000, ("unexpected EOF",)),
            (b"[1]", ("Go value of type Endpoint",)),
            (b"", ("EOF",)),
            (b'{"ipAddress":"5","prefixLen":24}', ('ipAddress "5" is not an IPv4 address',)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":99}', ("prefixLen 99",)),
            (b'{"ipAddress":"","prefixLen":24}', ("is not an IPv4 address",)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":24,"gateway":"x\\ny"}',
             ('gateway "x\\ny"',)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":24,"macAddress":"zz"}', ("macAddress",)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":24,"ifname":"a b"}', ("ifname",)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":24,"ipv6Address":"x/64"}', ("ipv6Address",)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":24,"dns":{"nameservers":[1]}}',
             ("dns.nameservers",)),
            (b'{"ipAddress":"10.0.0.5","prefixLen":24,"labels":{"a":[]}}', ("labels",)),
        ]
        for reply, words in cases:
            self.peer.answer(reply)
            result = yield self.cni("ADD", self.conf(), ENV)
            self.assertCNIError(result, 999, "netplugin sent a malformed reply", *words)

    @defer.inlineCallbacks
    def test_malformed_http(self):
        for raw, words in ((b"FOO BAR\r\n\r\n{}", ("no HTTP status line",)),
                           (b"HTTP/1.0 2000 OK\r\n\r\n{}", ("no HTTP status line",)),
                           (b"HTTP/1.0 -20 OK\r\n\r\n{}", ("no HTTP status line",)),
                           (b"HTTP/1.0 200 OK", ("no HTTP status line",))):
            self.peer.reply = raw
            result = yield self.cni("ADD", self.conf(), ENV)
            self.assertCNIError(result, 999, "netplugin sent a malformed reply", *words)
        # closing without a byte: netplugin is not (yet) serving: try again later
        self.peer.reply = b""
        self.assertCNIError((yield self.cni("ADD", self.conf(), ENV)), 11, "without answering")

    @defer.inlineCallbacks
    def test_refusals_with_malformed_bodies(self):
        self.peer.answer(b"<html>oops</html>", "500 Internal Server Error")
        self.assertCNIError((yield self.cni("ADD", self.conf(), ENV)), 999, "HTTP 500",
                            "malformed reply")
        self.peer.answer({"error": 5}, "409 Conflict")
        self.assertCNIError((yield self.cni("ADD", self.conf(), ENV)), 11, "HTTP 409",
                            "Error.error")
        self.peer.answer({"error": "network default:x not found"}, "500 Internal Server Error")
        self.assertCNIError((yield self.cni("ADD", self.conf(), ENV)), 7, "not found")
        self.peer.answer({"error": "endpoint gone"}, "404 Not Found")
        self.assertCNIError((yield self.cni("DEL", self.conf(), ENV)), 3, "endpoint gone")

    @defer.inlineCallbacks
    def test_status_gc_check_replies(self):
        v11 = dict(cniVersion="1.1.0")
        for reply, words in ((b'{"ready":"yes"}', "Status.ready"), (b'{"ready":NaN}', "'N'"),
                             (b"[]", "Go value of type Status")):
            self.peer.answer(reply)
            self.assertCNIError((yield self.cni("STATUS", self.conf(**v11), {})), 999,
                                "malformed reply", words)
        self.peer.answer({"ready": False})
        self.assertCNIError((yield self.cni("STATUS", self.conf(**v11), {})), 50, "not ready")
        for reply, words in ((b'{"a":1}', "[]Endpoint"), (b'[{"id":5}]', "Endpoint.id"),
                             (b'[{"id":"x","labels":[1]}]', "Endpoint.labels"),
                             (b"[{}]", "has no id"), (b"[1e400]", "")):
            self.peer.answer(reply)
            self.assertCNIError((yield self.cni("GC", self.conf(**v11), {})), 999,
                                "malformed reply", words)
        prev = {"prevResult": {"ips": [{"address": "10.37.1.5/24"}]}}
        self.peer.answer(b'{"ipAddress":["10.37.1.5"],"prefixLen":24}')
        self.assertCNIError((yield self.cni("CHECK", self.conf(**prev), ENV)), 999,
                            "malformed reply", "Endpoint.ipAddress")
        # nothing was deleted on the strength of a malformed list
        self.assertEqual([line for line, _ in self.peer.requests if "DELETE" in line], [])

    @defer.inlineCallbacks
    def test_exchange_is_bounded(self):
        """netplugin.request ends within its timeout whether the peer is silent or
        trickles bytes (a per-recv timeout would wait forever on the trickle), and a
        reply beyond MAX_REPLY is refused."""
        self.peer.reply = None
        with self.assertRaises(netplugin.Unreachable) as cm:
            yield threads.deferToThread(netplugin.request, self.sock, "GET", "/v1/status",
                                        None, 1.0)
        self.assertIn("did not answer within 1 s", str(cm.exception))
        self.peer.trickle = True
        with self.assertRaises(netplugin.Unreachable) as cm:
            yield threads.deferToThread(netplugin.request, self.sock, "GET", "/v1/status",
                                        None, 1.0)
        self.assertIn("did not answer within 1 s", str(cm.exception))
        self.peer.trickle = False
        self.patch(netplugin, "MAX_REPLY", 1000)
        self.peer.answer({"pad": "x" * 2000})
        with self.assertRaises(netplugin.Malformed) as cm:
            yield threads.deferToThread(netplugin.request, self.sock, "GET", "/v1/status")
        self.assertIn("larger than", str(cm.exception))
        # the plugin's own calls use the module's bound
        self.assertEqual(netplugin.request.__defaults__[-1], netplugin.TIMEOUT)
        self.assertLessEqual(netplugin.TIMEOUT, 300)


class SilentAPIServer(protocol.Protocol):
    """A Kubernetes API server stand-in that accepts and then never finishes answering:
    silent, or (``trickle``) one header byte every 0.2 s."""

    def connectionMade(self) -> None:
        self.loop: Optional[task.LoopingCall] = None
        self.factory.conns.append(self)
        if self.factory.trickle:
            self.transport.write(b"HTTP/1.1 200 OK\r\n")
            self.loop = task.LoopingCall(self.transport.write, b"X")
            self.loop.start(0.2)

    def connectionLost(self, reason: Any = None) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()


class KubernetesDeadlineTests(CNITestCase):
    """``kubernetes.timeout`` bounds the whole pod lookup, not each socket operation."""

    timeout = 120

    @defer.inlineCallbacks
    def _serve(self, trickle: bool) -> Any:
        factory = protocol.Factory.forProtocol(SilentAPIServer)
        factory.trickle = trickle
        factory.conns = []
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [c.transport.abortConnection() for c in factory.conns])
        return port.getHost().port, factory

    @defer.inlineCallbacks
    def test_silent_and_trickling_api_server(self):
        env = dict(ENV, CNI_ARGS=POD_ARGS)
        for trickle in (False, True):
            port, factory = yield self._serve(trickle)
            raw = k8s_conf(apiServer=f"http://127.0.0.1:{port}", timeout=1)
            result = yield self.cni("ADD", raw, env)
            self.assertCNIError(result, 5, "did not answer within 1 s", "kubernetes.timeout")
            self.assertEqual(len(factory.conns), 1)  # it did connect: the bound is the read
