"""The lean ``contiv-cni`` launcher (drivers/cni/launcher.py): same answers, found package or CNI error.

The launcher is what the lab's podman (and an operator following plugins/cni) runs
as ``contiv-cni``: ``python -IS`` with the package's folder written in, leaving by
``os._exit`` once the answer is flushed.  These tests run a written launcher as a
runtime does (a subprocess, ``CNI_*`` variables, stdin) next to the console script
pip installs and require byte-identical stdout and the same exit status, for
answers and refusals; a launcher whose package folder is gone still answers with
CNI error JSON (code 999) and nothing on stderr.  The ADD/DEL path through the
launcher is exercised by ``tests.test_drv_cni.PodmanTests`` (the lab's podman).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, Optional, Tuple

from twisted.trial import unittest

from drivers.cni import launcher, spec, versions
from tests.test_drv_cni import CNI, require_cni

ENV = {"CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}
CONF = {"cniVersion": "0.4.0", "name": "launch", "type": "contiv-cni",
        "socket": "/nonexistent/netplugin.sock"}


def invoke(exe: str, command: Optional[str], stdin: bytes,
           env: Optional[Dict[str, str]] = None,
           close_stdout: bool = False) -> Tuple[int, bytes, bytes]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if command is not None:
        full["CNI_COMMAND"] = command
    full.update(env or {})
    if close_stdout:  # a runtime that gave the plugin no stdout
        proc = subprocess.run([exe], input=stdin, env=full, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=60,
                              preexec_fn=lambda: os.close(1))
        return proc.returncode, b"", proc.stderr
    proc = subprocess.run([exe], input=stdin, env=full, capture_output=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


class LauncherTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="cni-launch-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.dir])
        self.exe = launcher.write_launcher(os.path.join(self.dir, "contiv-cni"))

    def test_written_executable_runs_this_python_isolated_without_site(self):
        with open(self.exe) as f:
            first = f.readline().rstrip("\n")
        self.assertEqual(first, f"#!{os.path.abspath(sys.executable)} -IS")
        self.assertTrue(os.access(self.exe, os.X_OK))
        # the folder(s) written in hold both packages of this install
        paths = launcher.package_paths()
        self.assertTrue(any(os.path.isdir(os.path.join(p, "drivers", "cni")) for p in paths))
        self.assertTrue(any(os.path.isdir(os.path.join(p, "contiv_sdn")) for p in paths))

    def test_answers_and_refusals_match_the_console_script(self):
        require_cni()
        conf = json.dumps(CONF).encode()
        cases = [
            ("VERSION", b'{"cniVersion": "0.4.0"}', {}),
            ("VERSION", b"not json", {}),
            ("BOGUS", conf, ENV),
            ("ADD", conf, {}),                      # missing CNI_* variables: code 4
            ("ADD", b'{"cniVersion": 1}', ENV),     # wrong type: code 7
            ("ADD", b"[1, 2", ENV),                 # undecodable: code 6
            ("ADD", conf, ENV),                     # no netplugin: code 11
            ("DEL", conf, ENV),
        ]
        for command, stdin, env in cases:
            want = invoke(CNI, command, stdin, env)
            got = invoke(self.exe, command, stdin, env)
            self.assertEqual(got, want, f"{command} {stdin[:40]!r}")
            self.assertEqual(got[2], b"")
        # and the cases did reach different answers (the comparison is not vacuous)
        self.assertEqual(invoke(self.exe, "VERSION", b'{"cniVersion": "0.4.0"}')[:2],
                         (0, b'{"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", '
                             b'"0.3.1", "0.4.0", "1.0.0", "1.1.0"]}\n'))
        status, out, _ = invoke(self.exe, "ADD", conf, ENV)
        self.assertEqual((status, json.loads(out)["code"]), (1, 11))

    def test_canned_version_answers_are_the_full_paths_answers(self):
        """Each table entry is answered exactly as parsing it strictly would answer it."""
        self.assertEqual(len(versions.CANNED), 2 * len(spec.SUPPORTED))
        for query, answer in versions.CANNED.items():
            full = json.dumps(spec.version_answer(spec.read_stdin(query))) + "\n"
            self.assertEqual(answer, full.encode(), query)
            self.assertIn(json.loads(query)["cniVersion"], spec.SUPPORTED)

    def test_version_queries_in_and_out_of_the_table_match_the_console_script(self):
        require_cni()
        queries = [b'{"cniVersion":"1.0.0"}', b'{"cniVersion": "0.3.1"}',
                   b' \t{"cniVersion":"1.1.0"}\r\n',
                   # not in the table: parsed the full way
                   b'\x0b{"cniVersion":"1.0.0"}', b'{"cniVersion":"1.0.0"} trailing',
                   b'{"cniVersion":"1.0.0","name":"x"}', b'{"cniVersion":"9.9.9"}',
                   b'{"cniVersion":"1.0.0"', b""]
        seen = set()
        for query in queries:
            want = invoke(CNI, "VERSION", query)
            got = invoke(self.exe, "VERSION", query)
            self.assertEqual(got, want, query)
            seen.add(json.loads(got[1])["cniVersion"])
        self.assertEqual(seen, {"1.0.0", "0.3.1", "1.1.0"})
        # the table's answer does not need the JSON library, nor the parser
        probe = ("import sys, io; sys.path[:0] = %r; "
                 "sys.stdin = io.TextIOWrapper(io.BytesIO(b'{\"cniVersion\":\"1.0.0\"}')); "
                 "from drivers.cni.entry import run; status = run(); "
                 "print(file=sys.stderr); print(status, 'json' in sys.modules, "
                 "'contiv_sdn.model.shapes' in sys.modules, file=sys.stderr)"
                 % (launcher.package_paths(),))
        proc = subprocess.run([sys.executable, "-IS", "-c", probe], capture_output=True,
                              env={"CNI_COMMAND": "VERSION"}, timeout=60)
        self.assertEqual(proc.stderr.decode().split(), ["0", "False", "False"])

    def test_no_stdout_is_a_failure_without_a_traceback(self):
        status, _, err = invoke(self.exe, "VERSION", b'{"cniVersion": "1.0.0"}',
                                close_stdout=True)
        self.assertEqual((status, err), (1, b""))

    def test_missing_package_is_a_cni_error_naming_the_fix(self):
        gone = os.path.join(self.dir, "moved-checkout")
        exe = launcher.write_launcher(os.path.join(self.dir, "broken"), paths=[gone])
        status, out, err = invoke(exe, "ADD", json.dumps(CONF).encode(), ENV)
        self.assertEqual((status, err), (1, b""))
        answer = json.loads(out)
        self.assertEqual(set(answer), {"cniVersion", "code", "msg", "details"})
        self.assertEqual(answer["code"], 999)
        self.assertIn(gone, answer["msg"])
        self.assertIn("No module named 'drivers'", answer["msg"])
        self.assertIn(f"python -m drivers.cni.launcher {exe}", answer["details"])

    def test_refuses_an_interpreter_path_a_shebang_cannot_carry(self):
        with self.assertRaises(ValueError):
            launcher.launcher_text(python="/opt/my python/bin/python3")
        with self.assertRaises(ValueError):
            launcher.launcher_text(python="/" + "p" * 300)

    def test_command_line_writes_it_and_rejects_bad_usage(self):
        dest = os.path.join(self.dir, "cli-contiv-cni")
        proc = subprocess.run([sys.executable, "-m", "drivers.cni.launcher", dest],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(dest) as f, open(self.exe) as g:
            self.assertEqual(f.read(), g.read())
        proc = subprocess.run([sys.executable, "-m", "drivers.cni.launcher"],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("usage", proc.stderr)
        proc = subprocess.run([sys.executable, "-m", "drivers.cni.launcher",
                               os.path.join(self.dir, "no", "such", "dir", "contiv-cni")],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("cannot write", proc.stderr)
