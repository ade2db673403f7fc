"""The C shim ``contiv-cni`` (drivers/cni/shim.c) and netplugin's ``POST /v1/cni``.

The shim is run as a runtime runs the plugin (a subprocess, ``CNI_*`` variables,
stdin) and must answer byte for byte as the Python plugin (the lean launcher written
next to it, itself checked against the console script by test_drv_cni_launcher) with
the same exit status — through a real netplugin agent (netmaster, Redis, OVS, network
namespaces: tests.test_drv_fixtures.DockerHost) and with no netplugin at all (its
fallback).  Two shims are compiled per test class: the real one, and a *probe* whose
fallback only prints ``FALLBACK`` — the probe tells whether an answer came from
netplugin's route or from the fallback, so a comparison cannot pass vacuously by both
sides running the Python plugin.  The framing is checked against a stand-in server
recording the request (any env value, NUL in stdin, any reply bytes, any status).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer, endpoints, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from contiv_sdn.agent.cni_route import BadCall, decode_call
from contiv_sdn.testing import require
from drivers.cni import launcher, versions
from tests.test_drv_cni import Netns
from tests.test_drv_fixtures import GATEWAY, NET, SUBNET, DockerHost, netctl_group, netctl_net
from tests.test_fnd_helpers import async_test

ENV = {"CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}
FALLBACK_MARK = b"FALLBACK\n"


def require_cc() -> None:
    require(shutil.which("cc") is not None or shutil.which("gcc") is not None,
            "needs a C compiler (cc) to build the contiv-cni shim (apt-get install gcc)")


class Shims:
    """A compiled shim with the Python launcher as its fallback, and a probe shim."""

    def __init__(self, test: unittest.TestCase, default_socket: str):
        require_cc()
        self.dir = tempfile.mkdtemp(prefix="cni-shim-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.python = launcher.write_launcher(os.path.join(self.dir, "contiv-cni.py"))
        self.shim = launcher.compile_shim(os.path.join(self.dir, "contiv-cni"), self.python,
                                          default_socket=default_socket)
        mark = os.path.join(self.dir, "mark")
        with open(mark, "w") as f:
            f.write("#!/bin/sh\ncat >/dev/null\necho FALLBACK\nexit 99\n")
        os.chmod(mark, 0o755)
        self.probe = launcher.compile_shim(os.path.join(self.dir, "probe"), mark,
                                           default_socket=default_socket)


def invoke(exe: str, command: Optional[str], stdin: bytes,
           env: Optional[Dict[str, Any]] = None) -> Tuple[int, bytes, bytes]:
    full: Dict[Any, Any] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if command is not None:
        full["CNI_COMMAND"] = command
    full.update(env or {})
    proc = subprocess.run([exe], input=stdin, env=full, capture_output=True, timeout=200)
    return proc.returncode, proc.stdout, proc.stderr


def conf(socket: str, **more: Any) -> bytes:
    doc = {"cniVersion": "1.0.0", "name": "shim", "type": "contiv-cni", "socket": socket}
    doc.update(more)
    return json.dumps(doc).encode()


class FramingTests(unittest.TestCase):
    """The request the shim sends and the answer it passes on, against a stand-in."""

    def setUp(self) -> Any:
        self.tmp = tempfile.mkdtemp(prefix="cni-frame-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.sock = os.path.join(self.tmp, "np.sock")
        self.shims = Shims(self, default_socket=os.path.join(self.tmp, "absent.sock"))
        self.requests: List[bytes] = []
        self.reply = b""
        test = self

        class Recorder(Protocol):
            def connectionMade(self) -> None:
                self.buf = b""

            def dataReceived(self, data: bytes) -> None:
                self.buf += data
                head, sep, body = self.buf.partition(b"\r\n\r\n")
                if not sep:
                    return
                length = int([line.split(b":", 1)[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")][0])
                if len(body) >= length:
                    test.requests.append(self.buf)
                    self.transport.write(test.reply)
                    self.transport.loseConnection()

        d = endpoints.UNIXServerEndpoint(reactor, self.sock).listen(Factory.forProtocol(Recorder))

        def listening(port: Any) -> None:
            self.addCleanup(port.stopListening)
        return d.addCallback(listening)

    def answer(self, body: bytes, status: int = 0, extra: bytes = b"") -> None:
        self.reply = (b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"X-CNI-Exit: " + str(status).encode() + b"\r\n" + extra +
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    @async_test
    async def test_env_and_stdin_round_trip_and_the_answer_is_passed_on(self):
        rng = random.Random(8)
        for i in range(6):
            # any bytes (NUL, "=", not UTF-8) where the shim's scanner skips a value: the
            # Python side refuses such JSON, but the framing must carry it exactly
            junk = bytes(b for b in (rng.randrange(256) for _ in range(rng.randrange(200)))
                         if b not in b'"{}[],')
            stdin = conf(self.sock, junk="x\u00e9")[:-1] + b', "raw": 1' + junk
            stdin += b"\0=\0\0" * i + b"}"
            env: Dict[Any, Any] = {
                "CNI_ARGS": "A=1;B==2=", "CNI_EMPTY": "", "CNI_SPACES": " \t x ",
                b"CNI_BYTES": bytes(rng.randrange(1, 256) for _ in range(20)),
                "NOT_CNI": "dropped", "CNI_NETNS": "/var/run/netns/a=b"}
            reply = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000))) + b"\0"
            self.answer(reply, status=i * 50)
            got = await threads.deferToThread(invoke, self.shims.probe, "ADD", stdin, env)
            self.assertEqual(got, (i * 50, reply, b""))
            raw = self.requests[-1]
            head, _, body = raw.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"POST /v1/cni HTTP/1.0\r\n"), head)
            self.assertIn(b"Content-Type: application/octet-stream", head)
            sent_env, sent_stdin = decode_call(body)
            self.assertEqual(sent_stdin, stdin)
            want = {(k if isinstance(k, str) else k.decode()):
                    (v if isinstance(v, str) else v.decode("utf-8", "surrogateescape"))
                    for k, v in env.items()}
            want["CNI_COMMAND"] = "ADD"
            del want["NOT_CNI"]
            self.assertEqual(sent_env, want)
        self.assertEqual(len(self.requests), 6)

    @async_test
    async def test_an_answer_not_of_the_route_is_the_python_plugins(self):
        """404 (an older netplugin), no X-CNI-Exit, a short body, a status over 255,
        garbage: the shim runs the Python plugin (the probe says so), whose answer the
        real shim gives."""
        stdin = b'{"cniVersion": "0.4.0", "socket": "%s"}' % self.sock.encode()
        body = b'{"error": "no such route"}\n'
        replies = [
            b"HTTP/1.0 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.0 200 OK\r\nX-CNI-Exit: 0\r\nContent-Length: 9\r\n\r\nabc",
            b"HTTP/1.0 200 OK\r\nX-CNI-Exit: 256\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.0 200 OK\r\nX-CNI-Exit: -1\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.0 200 OK\r\nX-CNI-Exit: 0\r\n\r\nabc",
            b"SSH-2.0-OpenSSH\r\n", b"",
        ]
        python = invoke(self.shims.python, "VERSION", stdin)
        self.assertEqual(python[0], 0)
        for reply in replies:
            self.reply = reply
            before = len(self.requests)
            probe = await threads.deferToThread(invoke, self.shims.probe, "VERSION", stdin)
            self.assertEqual(probe[:2], (99, FALLBACK_MARK), reply)
            self.assertEqual(len(self.requests), before + 1)  # it did ask first
            got = await threads.deferToThread(invoke, self.shims.shim, "VERSION", stdin)
            self.assertEqual(got, python, reply)
        # and a well-formed one is passed on as it is (the cases above were not vacuous)
        self.answer(b"routed\n", 3, extra=b"x-cni-exit-note: ignored\r\n")
        self.assertEqual(await threads.deferToThread(invoke, self.shims.probe, "VERSION", stdin),
                         (3, b"routed\n", b""))

    @async_test
    async def test_the_socket_is_the_top_level_one_and_doubt_is_the_fallback(self):
        s = json.dumps(self.sock)
        self.answer(b"routed\n")
        routed = [
            '{"socket": %s}' % s,
            ' \r\n{"cniVersion": "1.0.0", "x": {"socket": "/elsewhere"}, "socket": %s}\t' % s,
            '{"l": [{"socket": "/no"}, "socket", "\\"socket\\": \\"/no\\""], "socket": %s}' % s,
            '{"ab": "\\"}", "socket": %s, "sockets": "/no", "s": "}"}' % s,
            '{"nested": {"deep": [[[{"socket": null}]]]}, "socket": %s, "n": -1.5e3}' % s,
        ]
        for text in routed:
            before = len(self.requests)
            got = await threads.deferToThread(invoke, self.shims.probe, "VERSION", text.encode())
            self.assertEqual(got, (0, b"routed\n", b""), text)
            self.assertEqual(len(self.requests), before + 1, text)
        escaped = '{"socket": %s}' % json.dumps(self.sock).replace("/", "\\/")
        doubts = [
            '{"socket": %s, "socket": %s}' % (s, s),                # twice
            '{"Socket": %s}' % s, '{"SOCKET": %s}' % s,             # Go's json folds case
            '{"\\u0073ocket": %s}' % s,                             # an escaped key
            '{"a\\"b": 1, "socket": %s}' % s,                      # any escaped key
            '{"\u017focket": %s}' % s,                              # U+017F folds to s
            escaped,
            '{"socket": "relative.sock"}', '{"socket": ""}', '{"socket": null}',
            '{"socket": 5}', '{"socket": %s' % s, '{"socket": %s} trailing' % s,
            '[{"socket": %s}]' % s, '"socket"', "", "{", '{"x": [1, 2}, "socket": %s}' % s,
            '{"x": ' + "[" * 600 + "]" * 600 + ', "socket": %s}' % s,  # deeper than scanned
            '{"socket": "/' + "x" * 120 + '"}',                     # longer than sun_path
            '{"socket": "/a\x01b"}',                                # a control character
        ]
        self.assertIn("\\/", escaped)
        self.assertEqual(json.loads(escaped)["socket"], self.sock)
        for text in doubts:
            before = len(self.requests)
            got = await threads.deferToThread(invoke, self.shims.probe, "VERSION", text.encode())
            self.assertEqual(got[:2], (99, FALLBACK_MARK), text)
            self.assertEqual(len(self.requests), before, text)
            want = invoke(self.shims.python, "VERSION", text.encode())
            got = await threads.deferToThread(invoke, self.shims.shim, "VERSION", text.encode())
            self.assertEqual(got, want, text)
        # no "socket" at all: the compiled-in default (absent here: the fallback)
        got = await threads.deferToThread(invoke, self.shims.probe, "VERSION",
                                          b'{"cniVersion": "1.0.0", "x": {"socket": %s}}'
                                          % s.encode())
        self.assertEqual(got[:2], (99, FALLBACK_MARK))

    def test_a_runtimes_usual_version_query_is_answered_by_the_shim_itself(self):
        """libcni's VERSION stdin names no socket: the shim answers it from the table of
        drivers/cni/versions.py (compiled in), byte for byte as the Python plugin, with
        no netplugin and without its fallback; anything else is not from the table."""
        for query, answer in versions.CANNED.items():
            for stdin in (query, b" \r\n" + query + b"\t\n"):
                self.assertEqual(invoke(self.shims.probe, "VERSION", stdin), (0, answer, b""))
                self.assertEqual(invoke(self.shims.python, "VERSION", stdin), (0, answer, b""))
        for stdin in (b'{"cniVersion":"9.9.9"}', b'{"cniVersion":"1.0.0" }',
                      b'{"cniVersion":  "1.0.0"}', b'\x0b{"cniVersion":"1.0.0"}',
                      b'{"cniVersion":"1.0.0"}x', b'{"cniVersion":"1.0."}', b'{"cniVersion":""}'):
            self.assertEqual(invoke(self.shims.probe, "VERSION", stdin)[:2], (99, FALLBACK_MARK))
            self.assertEqual(invoke(self.shims.shim, "VERSION", stdin),
                             invoke(self.shims.python, "VERSION", stdin))
        # the table is for VERSION only
        self.assertEqual(invoke(self.shims.probe, "ADD", b'{"cniVersion":"1.0.0"}', ENV)[:2],
                         (99, FALLBACK_MARK))
        self.assertEqual(self.requests, [])

    def test_oversized_stdin_goes_whole_to_the_python_plugin(self):
        big = conf(self.sock, pad="x" * (5 << 20))
        self.assertEqual(invoke(self.shims.probe, "VERSION", big)[:2], (99, FALLBACK_MARK))
        self.assertEqual(self.requests, [])
        # the launcher got all of it: its answer names the version the (whole) JSON asks
        want = invoke(self.shims.python, "VERSION", big.replace(b"1.0.0", b"0.4.0"))
        self.assertEqual(invoke(self.shims.shim, "VERSION", big.replace(b"1.0.0", b"0.4.0")),
                         want)
        self.assertEqual(json.loads(want[1])["cniVersion"], "0.4.0")

    def test_decode_call_is_strict(self):
        self.assertEqual(decode_call(b"\0"), ({}, b""))
        self.assertEqual(decode_call(b"A=1\0B=\0A=2\0\0\0x\0"),
                         ({"A": "1", "B": ""}, b"\0x\0"))
        self.assertEqual(decode_call(b"C=\xff\0\0")[0], {"C": "\udcff"})
        for bad in (b"", b"A=1\0", b"A\0\0", b"=1\0\0", b"A=1"):
            with self.assertRaises(BadCall):
                decode_call(bad)


class BuildTests(unittest.TestCase):
    """``python -m drivers.cni.launcher --native DEST``: the shim, or the launcher alone."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="cni-build-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def native(self, dest: str, path: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m",
                               "drivers.cni.launcher", "--native", dest],
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": path}, cwd=os.path.dirname(os.path.dirname(
                                  os.path.abspath(__file__))))

    def test_native_writes_the_shim_and_its_fallback(self):
        require_cc()
        dest = os.path.join(self.dir, "contiv-cni")
        proc = self.native(dest, os.environ.get("PATH", "/usr/bin:/bin"))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("C shim", proc.stdout)
        with open(dest, "rb") as f:
            self.assertEqual(f.read(4), b"\x7fELF")
        with open(dest + ".py") as f, open(launcher.write_launcher(
                os.path.join(self.dir, "ref"))) as g:
            self.assertEqual(f.read(), g.read())
        self.assertTrue(os.access(dest, os.X_OK))
        # a VERSION query with no netplugin: the shim's fallback answers it
        self.assertEqual(invoke(dest, "VERSION", b'{"cniVersion": "0.4.0"}')[:2],
                         invoke(dest + ".py", "VERSION", b'{"cniVersion": "0.4.0"}')[:2])

    def test_without_a_compiler_dest_is_the_python_launcher_and_it_says_so(self):
        dest = os.path.join(self.dir, "contiv-cni")
        proc = self.native(dest, self.dir)  # no cc on this PATH
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("could not be built", proc.stdout)
        self.assertIn("install gcc", proc.stdout)
        with open(dest) as f:
            self.assertTrue(f.readline().startswith("#!"))
        status, out, err = invoke(dest, "VERSION", b'{"cniVersion": "1.0.0"}')
        self.assertEqual((status, json.loads(out)["cniVersion"], err), (0, "1.0.0", b""))

    def test_paths_a_c_string_cannot_carry_are_refused(self):
        for bad in ('/tmp/a"b', "/tmp/a\\b", "/tmp/a\nb", "/tmp/\u00e9"):
            with self.assertRaises(ValueError):
                launcher.compile_shim(os.path.join(self.dir, "x"), bad)
        self.assertEqual(os.listdir(self.dir), [])


class AgentTests(unittest.TestCase):
    """Through a real netplugin: the shim answers as the Python plugin, from the route."""

    timeout = 300

    async def _setup(self) -> None:
        self.h = DockerHost(self, docker=False)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        await self.h.start_agent()
        self.shims = Shims(self, default_socket=os.path.join(self.h.dir, "absent.sock"))
        self.sock = self.h.agent_socket

    def setUp(self) -> Any:
        return defer.ensureDeferred(self._setup())

    def both(self, command: Optional[str], stdin: bytes,
             env: Optional[Dict[str, str]] = None) -> defer.Deferred:
        """(probe's answer, shim's answer, Python plugin's answer), off the reactor."""
        def run() -> Tuple[Any, Any, Any]:
            return (invoke(self.shims.probe, command, stdin, env),
                    invoke(self.shims.shim, command, stdin, env),
                    invoke(self.shims.python, command, stdin, env))
        return threads.deferToThread(run)

    def assertSame(self, answers: Tuple[Any, Any, Any], routed: bool = True) -> Any:
        probe, shim, python = answers
        self.assertEqual(shim, python)
        self.assertEqual(shim[2], b"")
        if routed:
            self.assertEqual(probe, python)
        else:
            self.assertEqual(probe[:2], (99, FALLBACK_MARK))
        return json.loads(shim[1]) if shim[1] else None

    @async_test
    async def test_add_check_del_through_the_route(self):
        ctr = Netns(self, "shim")
        env = {"CNI_CONTAINERID": secrets.token_hex(32), "CNI_NETNS": ctr.path,
               "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
               "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web-0"}
        stdin = conf(self.sock, network=NET, group="web")
        calls = self.h.agent.api.cni
        # ADD by the shim, then DEL and ADD again by the Python plugin: the same answer
        before = _count(calls)
        shim_add = await threads.deferToThread(invoke, self.shims.probe, "ADD", stdin, env)
        self.assertEqual(_count(calls), before + 1)
        self.assertEqual(shim_add[0], 0, shim_add)
        result = json.loads(shim_add[1])
        self.assertEqual(result["ips"][0]["address"], "10.37.1.1/24")
        self.assertIn(env["CNI_CONTAINERID"], self.h.endpoints_in_redis())
        deleted = await threads.deferToThread(invoke, self.shims.python, "DEL", stdin, env)
        self.assertEqual(deleted, (0, b"", b""))
        self.assertEqual(self.h.endpoints_in_redis(), {})
        python_add = await threads.deferToThread(invoke, self.shims.python, "ADD", stdin, env)
        self.assertEqual(shim_add, python_add)
        # CHECK: passes, and fails alike with another address
        checked = conf(self.sock, network=NET, group="web", prevResult=result)
        self.assertIsNone(self.assertSame(await self.both("CHECK", checked, env)))
        wrong = dict(result, ips=[{"address": "10.37.1.9/24", "interface": 1}])
        out = self.assertSame(await self.both("CHECK", conf(self.sock, network=NET,
                                                             prevResult=wrong), env))
        self.assertEqual(out["code"], 3)
        # DEL by the shim releases it; again (idempotent) alike
        self.assertEqual(await threads.deferToThread(invoke, self.shims.probe, "DEL", stdin,
                                                     env), (0, b"", b""))
        self.assertEqual(self.h.endpoints_in_redis(), {})
        self.assertIsNone(self.assertSame(await self.both("DEL", stdin, env)))
        # the same ADD refused alike: an unknown network (7), a taken address
        other = Netns(self, "shim")
        env2 = dict(env, CNI_CONTAINERID=secrets.token_hex(32), CNI_NETNS=other.path)
        out = self.assertSame(await self.both("ADD", conf(self.sock, network="nosuch"), env2))
        self.assertEqual(out["code"], 7)

    @async_test
    async def test_version_status_gc_and_refusals_alike(self):
        s = self.sock
        cases: List[Tuple[Optional[str], bytes, Dict[str, str]]] = [
            ("VERSION", b'{"cniVersion":"1.0.0","socket":"%s"}' % s.encode(), {}),
            ("VERSION", conf(s, cniVersion="9.9.9"), {}),
            ("STATUS", conf(s, cniVersion="1.1.0"), {}),
            ("STATUS", conf(s), {}),                                   # 1: needs 1.1.0
            ("GC", conf(s, cniVersion="1.1.0",
                        **{"cni.dev/valid-attachments": [{"containerID": "a",
                                                          "ifname": "eth0"}]}), {}),
            ("BOGUS", conf(s), ENV),                                   # 4: bad command
            (None, conf(s), ENV),                                      # 4: no command
            ("ADD", conf(s), {"CNI_IFNAME": "eth0"}),                  # 4: missing
            ("ADD", conf(s), dict(ENV, CNI_CONTAINERID="-bad")),       # 4: invalid
            ("ADD", conf(s, tenant=5), ENV),                           # 7: wrong type
            ("ADD", conf(s, cniVersion="0.2.0"), ENV),                 # 1: version
            ("ADD", b'{"socket": "%s", "name": NaN}' % s.encode(), ENV),  # 6: not JSON
            ("DEL", conf(s), ENV),                                     # unknown: fine
            ("CHECK", conf(s, cniVersion="0.4.0"), ENV),               # 7: no prevResult
        ]
        seen = set()
        for command, stdin, env in cases:
            answers = await self.both(command, stdin, env)
            out = self.assertSame(answers)
            seen.add((answers[1][0], out.get("code") if out else None))
        self.assertTrue({(0, None), (1, 1), (1, 4), (1, 6), (1, 7)} <= seen, seen)

    @async_test
    async def test_netplugin_down_is_the_python_plugins_answer(self):
        cases = [("ADD", conf(self.sock), ENV), ("DEL", conf(self.sock), ENV),
                 ("STATUS", conf(self.sock, cniVersion="1.1.0"), {}),
                 ("VERSION", conf(self.sock), {})]
        await self.h.agent.stopService()
        codes = set()
        for command, stdin, env in cases:
            out = self.assertSame(await self.both(command, stdin, env), routed=False)
            codes.add(out.get("code"))
        self.assertEqual(codes, {11, 50, None})

    @async_test
    async def test_byte_soup_never_crashes_the_shim(self):
        rng = random.Random(25)
        pieces = [b"{", b"}", b"[", b"]", b'"', b"\\", b":", b",", b" ", b"\0", b"\xff",
                  b'"socket"', json.dumps(self.sock).encode(), b'"cniVersion"', b'"1.0.0"',
                  b"null", b"1e999", b"\xc5\xbf"]
        commands = ["VERSION", "ADD", "DEL", "STATUS", "GC", "CHECK", "X"]
        routed = 0
        for i in range(60):
            if i % 3 == 0:
                stdin = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
            else:
                stdin = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 24)))
            if i % 4 == 0:
                stdin = b'{"socket": %s, "x": %s}' % (json.dumps(self.sock).encode(), stdin)
            command = rng.choice(commands)
            probe, shim, python = await self.both(command, stdin, ENV)
            self.assertEqual(shim, python, (command, stdin))
            self.assertIn(shim[0], (0, 1), (command, stdin))
            if shim[1]:
                json.loads(shim[1])
            if probe[:2] != (99, FALLBACK_MARK):
                self.assertEqual(probe, python, (command, stdin))
                routed += 1
        self.assertGreater(routed, 0)


def _count(route: Any) -> int:
    """Calls the route has answered (its metrics are process-wide; this is per agent)."""
    return route.answered
