"""Fuzzing ``contiv-cni``: mutated stdin JSON and ``CNI_*`` environments against a real netplugin.

The installed plugin runs as a runtime runs it (a subprocess, configuration on
stdin, ``CNI_*`` variables), in front of a real agent (in this process), netmaster,
Redis and OVS (:class:`tests.test_drv_fixtures.DockerHost`), with real network
namespaces for the containers.  The fuzz is stateful enough to reach the agent:
valid configurations and environments over a few container ids and namespaces, so
ADD, CHECK, DEL, STATUS and GC meet each other; most cases then get a mutated
configuration (:mod:`tests.fuzz_helpers`), a hostile variable, or both.

Every answer is what the CNI spec allows: exit 0 with JSON (or nothing, for DEL,
CHECK, STATUS and GC) on stdout, or exit 1 with exactly one error object ``{cniVersion,
code, msg[, details]}`` whose code is one of the spec's or ours (>= 100) — never
the plugin's catch-all for bugs, never Python text, nothing on stderr.
Afterwards: no failure or error record in this process (agent), none in the
netmaster's log; a DEL of every container leaves no endpoint, OVS port, veth or
interface in the namespaces, and the store's consistency check passes; a valid
ADD/CHECK/DEL still works.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import threads
from twisted.logger import Logger
from twisted.trial import unittest

from contiv_sdn.store import Store
from contiv_sdn.store.consistency import check
from tests.fuzz_helpers import EventWatch, case_count, log_problems, mutate_value, python_in, \
    render, seeded
from tests.test_drv_cni import CNI, Netns, require_cni
from tests.test_drv_fixtures import GATEWAY, NET, SUBNET, DockerHost, netctl_group, netctl_net

CASES = case_count(500)
CONTAINERS = ["fz" + "%02d" % i + "c" * 60 for i in range(4)]
VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
#: The spec's error codes (1-7, 11, 50, 51) and plugin-specific ones (>= 100).
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}
log = Logger()


def run(command: Optional[str], stdin: bytes, env: Dict[str, str]) -> Tuple[int, bytes, bytes]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if command is not None:
        full["CNI_COMMAND"] = command
    full.update(env)
    proc = subprocess.run([CNI], input=stdin, env=full, capture_output=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


class CniFuzzTests(unittest.TestCase):
    timeout = 600

    async def _setup(self) -> None:
        require_cni()
        self.events = EventWatch(self)
        self.h = DockerHost(self, docker=False)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        await self.h.start_agent()
        self.store = await Store.connect(self.h.redis.url)
        self.addCleanup(self.store.close)
        self.netns = [Netns(self, prefix="fzc") for _ in CONTAINERS]
        self.results: Dict[str, Any] = {}  # container -> last ADD result (for CHECK/DEL)

    def conf(self, rnd: random.Random, command: str, cid: str) -> Dict[str, Any]:
        conf: Dict[str, Any] = {"cniVersion": rnd.choice(VERSIONS), "name": "fzcni",
                                "type": "contiv-cni", "socket": self.h.agent_socket,
                                "network": NET}
        if rnd.random() < 0.4:
            conf["group"] = "web"
        if rnd.random() < 0.3:
            conf["tenant"] = "default"
        if command in ("CHECK", "DEL") and cid in self.results and rnd.random() < 0.7:
            conf["prevResult"] = self.results[cid]
        if command == "GC":
            conf["cniVersion"] = "1.1.0"
            conf["cni.dev/valid-attachments"] = [
                {"containerID": c, "ifname": "eth0"} for c in CONTAINERS if rnd.random() < 0.5]
        if command == "STATUS":
            conf["cniVersion"] = "1.1.0"
        return conf

    def env(self, rnd: random.Random, i: int) -> Dict[str, str]:
        return {"CNI_CONTAINERID": CONTAINERS[i], "CNI_NETNS": self.netns[i].path,
                "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
                "CNI_ARGS": rnd.choice(("", "IgnoreUnknown=1",
                                        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"))}

    def make_case(self, rnd: random.Random) -> Tuple[Optional[str], bytes, Dict[str, str]]:
        command: Optional[str] = rnd.choices(
            ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC", "odd"), (35, 25, 12, 6, 6, 6, 10))[0]
        if command == "odd":
            command = rnd.choice((None, "", "add", "FROB", "ADD ", "A" * 5000, "DEL\n", "\u00e9"))
        i = rnd.randrange(len(CONTAINERS))
        conf = self.conf(rnd, command if command in ("CHECK", "DEL", "GC", "STATUS") else "ADD",
                         CONTAINERS[i])
        env = self.env(rnd, i)
        kind = rnd.choices(("valid", "conf", "env", "both"), (35, 35, 15, 15))[0]
        if kind in ("conf", "both"):
            value: Any = conf
            for _ in range(rnd.randint(1, 3)):
                value = mutate_value(rnd, value, list(conf))
            stdin = render(rnd, value)
        else:
            stdin = json.dumps(conf).encode()
        if kind in ("env", "both"):
            for _ in range(rnd.randint(1, 2)):
                name = rnd.choice(("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH",
                                   "CNI_ARGS"))
                value_s = rnd.choice(self.ODD_ENV[name] + ["", "x" * 5000, "\u00e9", " ", "-"])
                if value_s is None:
                    env.pop(name, None)
                else:
                    env[name] = value_s
        return command, stdin, env

    ODD_ENV: Dict[str, List[Any]] = {
        "CNI_CONTAINERID": [None, "-bad", "a/b", "../x", "x y", "a" * 1000, "A:B", CONTAINERS[0]],
        "CNI_NETNS": [None, "relative", "/nonexistent/ns", "/etc/hostname", "/tmp", "/",
                      "/var/run/netns/", "/var/run/netns/nosuch"],
        "CNI_IFNAME": [None, "x" * 16, "eth0/1", "lo", "eth 0", "..", "eth1", "%d"],
        "CNI_PATH": [None, "relative", "/a:/b", "::"],
        "CNI_ARGS": [None, "K8S_POD_NAME", "=;=", ";;;", "IgnoreUnknown=0;X=1", "A=" + "b" * 3000,
                     "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=" + "p" * 300, "IgnoreUnknown=true"],
    }

    def judge(self, case: Tuple[Optional[str], bytes, Dict[str, str]],
              answer: Tuple[int, bytes, bytes], bad: List[str]) -> Optional[Dict[str, Any]]:
        command, stdin, env = case
        status, out, err = answer
        what = (f"CNI_COMMAND={command!r} env={ {k: v[:60] for k, v in env.items()} } "
                f"stdin={stdin[:300]!r} -> exit {status} stdout={out[:300]!r} "
                f"stderr={err[-600:]!r}")
        if err:
            bad.append(f"stderr not empty: {what}")
        if status == 0:
            if not out.strip():
                if command not in ("DEL", "CHECK", "STATUS", "GC"):
                    bad.append(f"success without a result: {what}")
                return None
            try:
                result = json.loads(out)
            except ValueError:
                bad.append(f"success with non-JSON: {what}")
                return None
            if not isinstance(result, dict) or "cniVersion" not in result:
                bad.append(f"success without cniVersion: {what}")
                return None
            return result
        if status != 1:
            bad.append(f"exit status {status}: {what}")
        try:
            answer_obj = json.loads(out)
        except ValueError:
            bad.append(f"an error that is not JSON: {what}")
            return None
        if not isinstance(answer_obj, dict) or not {"cniVersion", "code", "msg"} <= set(answer_obj) \
                or not set(answer_obj) <= {"cniVersion", "code", "msg", "details"}:
            bad.append(f"not a CNI error object: {what}")
            return None
        code = answer_obj["code"]
        if not isinstance(code, int) or isinstance(code, bool) or \
                (code not in SPEC_CODES and code < 100):
            bad.append(f"error code {code!r} is not the spec's: {what}")
        text = f"{answer_obj.get('msg', '')} {answer_obj.get('details', '')}"
        if python_in(text) or "internal error in contiv-cni" in text:
            bad.append(f"Python or the catch-all in the error: {what}")
        if out.count(b"\n") != 1:
            bad.append(f"the error is not one line: {what}")
        return None

    def assert_nothing_left(self) -> None:
        h = self.h
        self.assertEqual(h.endpoints_in_redis(), {})
        self.assertEqual({p for p in h.ports() if p.startswith("cv")}, set())
        self.assertEqual({l for l in h.host_links() if l.startswith(("cv", "ct"))}, set())
        for ns in self.netns:
            out = subprocess.run(["ip", "-n", ns.name, "-j", "link", "show"], check=True,
                                 capture_output=True, text=True).stdout
            self.assertEqual([l["ifname"] for l in json.loads(out)], ["lo"], ns.name)

    @seeded
    async def test_mutated_stdin_and_environment(self, rnd):
        await self._setup()
        bad: List[str] = []
        outcomes: Dict[str, int] = {}
        started = time.monotonic()
        for _ in range(CASES):
            case = self.make_case(rnd)
            answer = await threads.deferToThread(run, *case)
            result = self.judge(case, answer, bad)
            key = f"{case[0] if isinstance(case[0], str) and len(case[0]) < 8 else 'odd'}:" \
                  f"{'ok' if answer[0] == 0 else 'error'}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if case[0] == "ADD" and result is not None:
                cid = case[2].get("CNI_CONTAINERID")
                if cid in CONTAINERS:
                    self.results[cid] = result
        log.info("CNI fuzz: {n} cases in {t:.1f}s: {o}", n=CASES,
                 t=time.monotonic() - started, o=dict(sorted(outcomes.items())))
        self.assertEqual(bad[:10], [], f"{len(bad)} bad answers")
        # it reached the agent: ADDs and DELs that worked, and refusals
        for key in ("ADD:ok", "DEL:ok", "ADD:error"):
            self.assertGreater(outcomes.get(key, 0), CASES // 50, (key, outcomes))
        # a DEL of every container (as a runtime does when it cleans up)
        for i, cid in enumerate(CONTAINERS):
            status, out, err = await threads.deferToThread(
                run, "DEL", json.dumps(self.conf(random.Random(i), "DEL", cid)).encode(),
                self.env(random.Random(i), i))
            self.assertEqual((status, err), (0, b""), out)
        self.assert_nothing_left()
        self.assertEqual(await check(self.store), [])
        # still serving: a valid ADD, CHECK and DEL
        conf = {"cniVersion": "1.0.0", "name": "fzcni", "type": "contiv-cni",
                "socket": self.h.agent_socket, "network": NET}
        env = self.env(random.Random(0), 0)
        status, out, err = await threads.deferToThread(run, "ADD", json.dumps(conf).encode(), env)
        self.assertEqual((status, err), (0, b""), out)
        result = json.loads(out)
        self.assertEqual(result["ips"][0]["gateway"], GATEWAY)
        status, out, _ = await threads.deferToThread(
            run, "CHECK", json.dumps(dict(conf, prevResult=result)).encode(), env)
        self.assertEqual(status, 0, out)
        status, out, _ = await threads.deferToThread(run, "DEL", json.dumps(conf).encode(), env)
        self.assertEqual(status, 0, out)
        self.assert_nothing_left()
        self.assertEqual(await check(self.store), [])
        self.assertEqual(self.events.bad[:5], [], "failures logged by the agent")
        self.assertEqual(log_problems(self.h.nm.log_text())[:10], [])
