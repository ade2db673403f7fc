"""The lab's "kubelet": runs the Pods scheduled to one lab host, networked by contiv-cni.

Not a kubelet — no images, no probes, no volumes — but the network path is the real
one: for each Pod with ``spec.nodeName`` = this host it does what containerd's CRI
plugin does for a sandbox:

1. a network namespace (``/var/run/netns/<host>-p<uid>``, loopback up);
2. ``contiv-cni`` with ``CNI_COMMAND=ADD``, ``CNI_CONTAINERID`` (a new sandbox id),
   ``CNI_NETNS``, ``CNI_IFNAME=eth0``, ``CNI_PATH`` and
   ``CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;
   K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..``, the network configuration on stdin
   built from the conflist as libcni builds it (the plugin's object plus the list's
   ``cniVersion`` and ``name``);
3. the first container's ``command`` + ``args`` run inside the namespace (a busybox
   applet name runs as that applet: the pods are "busybox" pods), output in
   ``<state>/pods/<namespace>_<name>.log``;
4. ``PATCH .../pods/<name>/status`` with ``phase: Running``, ``podIP``, ``podIPs``,
   ``hostIP``.

A command that ends is started again unless ``restartPolicy`` is ``Never`` (busybox
``nc -l`` servers end after each connection).  A Pod gone from the API server (or replaced by one with a new uid): its processes are
killed, ``CNI_COMMAND=DEL``, the namespace deleted.  What runs is kept in
``<state>/kubelet.json``, so a restarted kubelet neither adds a sandbox twice nor
forgets one to delete.  It is level-triggered like the netmaster's watcher (the same
reflector, :mod:`drivers.kubernetes.watch`, with ``fieldSelector=spec.nodeName=HOST``).

One process per lab host (``python -m contiv_sdn.lab.kubelet --node node1 ...``), as
real kubelets are: a crash or a restart concerns one node, each node has its own log,
and a test can restart one node's kubelet alone.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from typing import Any, Dict, List, Optional, Set

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import loads

log = Logger()

#: A container without a command: busybox's image runs ``sh``, which would exit at once
#: with no terminal; a pod here stays up until deleted.
IDLE = ["sleep", "2147483647"]


def _busybox_applets() -> Set[str]:
    bb = shutil.which("busybox")
    if not bb:
        return set()
    try:
        out = subprocess.run([bb, "--list"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(out.split())


def pod_argv(pod: Dict[str, Any], applets: Set[str]) -> List[str]:
    """What the pod runs: its first container's command + args, busybox applets as such."""
    containers = pod["spec"]["containers"]
    c = containers[0] if containers else {"command": [], "args": []}
    argv = list(c["command"]) + list(c["args"])
    if not argv:
        argv = list(IDLE)
    if argv[0] in applets:
        argv = ["busybox"] + argv
    return argv


def cni_config(conflist: Dict[str, Any]) -> bytes:
    """The network configuration libcni hands the first plugin of a conflist."""
    plugin = dict(conflist["plugins"][0])
    plugin["cniVersion"] = conflist.get("cniVersion", "1.0.0")
    plugin["name"] = conflist.get("name", "contiv")
    return json.dumps(plugin).encode()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


class Kubelet:
    """Pods of one node: desired (the reflector's cache) against running (the state)."""

    def __init__(self, node: str, kubeconfig: str, conflist: str, cni_path: str,
                 state_dir: str, host_ip: str = ""):
        from drivers.kubernetes.client import KubeClient
        from drivers.kubernetes.config import load_kubeconfig
        from drivers.kubernetes.watch import Reflector

        self.node = node
        self.host_ip = host_ip
        self.conflist_path = conflist
        self.cni_path = cni_path
        self.state_dir = state_dir
        self.state_file = os.path.join(state_dir, "kubelet.json")
        self.client = KubeClient(load_kubeconfig(kubeconfig), user_agent=f"contiv-lab-kubelet/"
                                                                          f"{node}")
        self.pods = Reflector(self.client, "Pod", self,
                              params={"fieldSelector": f"spec.nodeName={node}"})
        self.running: Dict[str, Dict[str, Any]] = self._load()
        self.applets = _busybox_applets()
        self._dirty: Set[str] = set()
        self._full = False
        self._worker: Optional[defer.Deferred] = None
        self._failed: Dict[str, str] = {}
        self._retry: Optional[Any] = None
        self._poll = task.LoopingCall(self._check_processes)
        self._restarting: Set[str] = set()

    # -- state ----------------------------------------------------------------
    def _load(self) -> Dict[str, Dict[str, Any]]:
        try:
            with open(self.state_file, "rb") as f:
                doc = loads(f.read())
        except FileNotFoundError:
            return {}
        except (OSError, DecodeError) as e:
            log.warn("ignoring unreadable {path}: {err}", path=self.state_file, err=str(e))
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save(self) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.running, f, indent=1, sort_keys=True)
        os.replace(tmp, self.state_file)

    # -- Listener -------------------------------------------------------------
    def replaced(self, kind: str) -> None:
        self._full = True
        self._kick()

    def changed(self, kind: str, key: str) -> None:
        self._dirty.add(key)
        self._kick()

    def _kick(self) -> None:
        if self._worker is None:
            d = defer.ensureDeferred(self._drain())
            d.addErrback(lambda f: log.failure("kubelet {node}: sync failed", f,
                                               node=self.node))
            self._worker = None if d.called else d

    async def _drain(self) -> None:
        try:
            while self._full or self._dirty:
                keys = set(self._dirty)
                if self._full:
                    keys |= set(self.pods.cache) | set(self.running)
                self._full, self._dirty = False, set()
                for key in sorted(keys):
                    await self._sync(key)
        finally:
            self._worker = None

    def _retry_later(self, key: str) -> None:
        self._dirty.add(key)
        if self._retry is None or not self._retry.active():
            from twisted.internet import reactor

            def again() -> None:
                self._retry = None
                self._kick()
            self._retry = reactor.callLater(2.0, again)

    # -- one pod --------------------------------------------------------------
    async def _sync(self, key: str) -> None:
        pod = self.pods.cache.get(key) if self.pods.synced else None
        have = self.running.get(key)
        if not self.pods.synced and have is not None:
            return  # nothing known yet: never tear down on an empty cache
        want = pod is not None and not pod["metadata"]["deletionTimestamp"] \
            and not pod["spec"]["hostNetwork"]
        if have is not None and (not want or have["uid"] != pod["metadata"]["uid"]):
            await self._teardown(key, have)
            have = None
        if want and have is None:
            try:
                await self._setup(key, pod)
                self._failed.pop(key, None)
            except Exception as e:  # CNI refused, netplugin down: retried, said once
                why = str(e)
                if self._failed.get(key) != why:
                    log.warn("pod {key} on {node}: {err} (retrying)", key=key, node=self.node,
                             err=why)
                self._failed[key] = why
                self._retry_later(key)

    def _cni(self, command: str, entry: Dict[str, Any]) -> Dict[str, Any]:
        """Run contiv-cni as containerd does (blocking: called in a thread)."""
        with open(self.conflist_path, "rb") as f:
            conflist = loads(f.read())
        plugin = conflist["plugins"][0]["type"]
        ns, name = entry["namespace"], entry["name"]
        env = {
            "CNI_COMMAND": command, "CNI_CONTAINERID": entry["sandbox"],
            "CNI_NETNS": f"/var/run/netns/{entry['netns']}", "CNI_IFNAME": "eth0",
            "CNI_PATH": self.cni_path, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};"
                         f"K8S_POD_INFRA_CONTAINER_ID={entry['sandbox']};"
                         f"K8S_POD_UID={entry['uid']}"),
        }
        exe = None
        for d in self.cni_path.split(":"):
            if os.access(os.path.join(d, plugin), os.X_OK):
                exe = os.path.join(d, plugin)
                break
        if exe is None:
            raise RuntimeError(f"CNI plugin {plugin} not found in CNI_PATH {self.cni_path}")
        proc = subprocess.run([exe], input=cni_config(conflist), env=env, capture_output=True,
                              timeout=120)
        try:
            out = loads(proc.stdout) if proc.stdout.strip() else {}
        except DecodeError:
            out = {"msg": proc.stdout.decode("utf-8", "replace")[:300]}
        if proc.returncode != 0:
            raise RuntimeError(f"CNI {command} failed: {out.get('msg', '')} "
                               f"{out.get('details', '')}".strip())
        return out if isinstance(out, dict) else {}

    async def _setup(self, key: str, pod: Dict[str, Any]) -> None:
        meta = pod["metadata"]
        entry = {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
                 "netns": f"{self.node}-p{meta['uid'].replace('-', '')[:12]}",
                 "sandbox": secrets.token_hex(32), "ip": ""}
        await threads.deferToThread(self._make_netns, entry["netns"])
        # recorded before the ADD: a crash from here on is cleaned up by a DEL
        self.running[key] = entry
        self._save()
        result = await threads.deferToThread(self._cni, "ADD", entry)
        ips = [i.get("address", "") for i in result.get("ips", []) if isinstance(i, dict)]
        entry["ip"] = next((a.split("/")[0] for a in ips if ":" not in a), "")
        argv = pod_argv(pod, self.applets)
        logdir = os.path.join(self.state_dir, "pods")
        os.makedirs(logdir, exist_ok=True)
        entry["log"] = os.path.join(logdir, f"{meta['namespace']}_{meta['name']}.log")
        entry["pid"] = await threads.deferToThread(self._run, entry, argv)
        self._save()
        log.info("pod {key} on {node}: {ip} in netns {netns}, running {argv}", key=key,
                 node=self.node, ip=entry["ip"], netns=entry["netns"], argv=" ".join(argv))
        await self._report(pod, entry)

    def _check_processes(self) -> None:
        """A pod's command that ended is started again (``restartPolicy`` Always, the
        default, or OnFailure; not Never): busybox ``nc -l`` servers end after one
        connection, and a policy test makes many."""
        from contiv_sdn.lab.procs import alive
        for key, entry in list(self.running.items()):
            pid = entry.get("pid")
            if not pid or key in self._restarting:
                continue
            try:
                os.waitpid(pid, os.WNOHANG)  # our child: reap it (a zombie counts as ended)
            except ChildProcessError:
                pass  # started by a previous kubelet: its parent is init
            if alive(pid):
                continue
            pod = self.pods.cache.get(key)
            if pod is None or pod["metadata"]["uid"] != entry["uid"] or \
                    pod["spec"]["restartPolicy"] == "Never":
                continue
            self._restarting.add(key)
            d = threads.deferToThread(self._run, entry, pod_argv(pod, self.applets))

            def started(new_pid: int, key: str = key, entry: Dict[str, Any] = entry) -> None:
                entry["pid"] = new_pid
                entry["restarts"] = entry.get("restarts", 0) + 1
                if self.running.get(key) is entry:
                    self._save()

            d.addCallback(started)
            d.addErrback(lambda f, key=key: log.warn("pod {key}: cannot restart its command: "
                                                     "{err}", key=key,
                                                     err=f.getErrorMessage()))
            d.addBoth(lambda _, key=key: self._restarting.discard(key))

    def _make_netns(self, name: str) -> None:
        _ip("netns", "delete", name, check=False)  # a leftover of a crash: start clean
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _run(self, entry: Dict[str, Any], argv: List[str]) -> int:
        with open(entry["log"], "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", entry["netns"]] + argv,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc.returncode = 0  # not waited for here: it runs until the pod goes
        return proc.pid

    async def _report(self, pod: Dict[str, Any], entry: Dict[str, Any]) -> None:
        from urllib.parse import quote
        meta = pod["metadata"]
        status: Dict[str, Any] = {"phase": "Running", "podIP": entry["ip"],
                                  "podIPs": [{"ip": entry["ip"]}] if entry["ip"] else []}
        if self.host_ip:
            status["hostIP"] = self.host_ip
        path = (f"/api/v1/namespaces/{quote(meta['namespace'], safe='')}/pods/"
                f"{quote(meta['name'], safe='')}/status")
        try:
            await self.client.request("PATCH", path,
                                      body=json.dumps({"status": status}).encode(),
                                      content_type="application/merge-patch+json")
        except Exception as e:  # the pod may have been deleted meanwhile
            log.warn("pod {ns}/{name}: cannot write its status: {err}", ns=meta["namespace"],
                     name=meta["name"], err=str(e))

    async def _teardown(self, key: str, entry: Dict[str, Any]) -> None:
        await threads.deferToThread(self._kill, entry["netns"])
        try:
            await threads.deferToThread(self._cni, "DEL", entry)
        except Exception as e:
            log.warn("pod {key} on {node}: {err}; the namespace goes anyway (netplugin's "
                     "reconciler reaps the endpoint)", key=key, node=self.node, err=str(e))
        await threads.deferToThread(_ip, "netns", "delete", entry["netns"], check=False)
        self.running.pop(key, None)
        self._save()
        log.info("pod {key} on {node}: removed (CNI DEL done, netns {netns} deleted)", key=key,
                 node=self.node, netns=entry["netns"])

    @staticmethod
    def _kill(netns: str) -> None:
        out = _ip("netns", "pids", netns, check=False).stdout
        for pid in (int(p) for p in out.split() if p.isdigit()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        log.info("kubelet for {node}: {n} pod(s) from the last run", node=self.node,
                 n=len(self.running))
        self.pods.start()
        self._poll.start(0.5, now=False)

    async def stop(self) -> None:
        if self._poll.running:
            self._poll.stop()
        await self.pods.stop()
        if self._worker is not None:
            await self._worker
        await self.client.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m contiv_sdn.lab.kubelet",
                                description="The lab's kubelet stand-in for one host: pods "
                                            "scheduled there get a netns, contiv-cni, their "
                                            "command, and their status written back.")
    p.add_argument("--node", required=True, help="the lab host (spec.nodeName to serve)")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--conflist", required=True, help="the CNI network configuration list")
    p.add_argument("--cni-path", required=True, help="directories holding the CNI plugin")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--host-ip", default="", help="status.hostIP of the pods")
    p.add_argument("--pidfile", default=None)
    args = p.parse_args(argv)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    kubelet = Kubelet(args.node, args.kubeconfig, args.conflist, args.cni_path, args.state_dir,
                      args.host_ip)
    reactor.callWhenRunning(kubelet.start)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: defer.ensureDeferred(kubelet.stop()))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
