"""The lab in Kubernetes mode (``python -m contiv_sdn.lab up --kubernetes``).

* the API server **stand-in** (``contiv_sdn/testing/kubeapi.py``, not kube-apiserver:
  none can be installed here) on ``127.0.0.1:<kubeapi_port>``, objects kept in
  ``<root>/kubeapi/state.json``, kubeconfig written to ``<root>/kubeconfig`` (what
  ``kubectl --kubeconfig`` and the netmaster use);
* netmaster with ``--mode kubernetes --kubeconfig <root>/kubeconfig`` (its watcher
  creates ``default-net``, 10.244.0.0/16, for pods without placement labels);
* a Node object per lab host, and a kubelet stand-in per host
  (:mod:`contiv_sdn.lab.kubelet`) that runs the pods scheduled there (``spec.nodeName``)
  through ``contiv-cni`` with ``<root>/<host>/cni/10-contiv.conflist`` — the repository's
  ``plugins/kubernetes/10-contiv.conflist`` with the host's netplugin socket and the
  stand-in's URL filled in.

Down: kubelets stop first, then every pod's sandbox goes (processes killed, CNI DEL
while the netplugins still answer, namespace deleted), then the stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from contiv_sdn.lab import http
from contiv_sdn.lab.procs import Service
from contiv_sdn.lab.sh import LabError

if TYPE_CHECKING:
    from contiv_sdn.lab.core import Host, Lab

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFLIST_TEMPLATE = os.path.join(_REPO, "plugins", "kubernetes", "10-contiv.conflist")


def kubeconfig_path(lab: "Lab") -> str:
    return os.path.join(lab.root, "kubeconfig")


def kubeapi_url(lab: "Lab") -> str:
    return f"http://127.0.0.1:{lab.config.kubeapi_port}"


def kubelet_key(h: "Host") -> str:
    return f"kubelet:{h.name}"


def netmaster_options(lab: "Lab") -> List[tuple]:
    return [("mode", "kubernetes"), ("kubeconfig", kubeconfig_path(lab))]


def start_apiserver(lab: "Lab") -> None:
    d = os.path.join(lab.root, "kubeapi")
    os.makedirs(d, exist_ok=True)
    argv = [lab.config.python, "-m", "contiv_sdn.testing.kubeapi",
            "--port", str(lab.config.kubeapi_port), "--kubeconfig", kubeconfig_path(lab),
            "--state-file", os.path.join(d, "state.json")]
    svc = Service("kubeapi", argv, d, env={"PYTHONPATH": _REPO})
    svc.start()
    lab._register("kubeapi", svc)

    def ready() -> bool:
        if not os.path.exists(kubeconfig_path(lab)):
            return False
        try:
            status, _ = http.request("GET", "/version", base_url=kubeapi_url(lab), timeout=2)
        except OSError:
            return False
        return status == 200

    lab._wait("Kubernetes API stand-in", svc, ready, timeout=30)
    lab.progress(f"Kubernetes API stand-in (not kube-apiserver): {kubeapi_url(lab)} "
                 f"(pid {svc.pid}, log {svc.outfile})")


def write_conflist(lab: "Lab", h: "Host") -> str:
    """The host's CNI configuration: the repository's, with this host's socket and the
    stand-in's URL (plain HTTP on loopback: no token, no CA)."""
    with open(CONFLIST_TEMPLATE) as f:
        conflist = json.load(f)
    plugin = conflist["plugins"][0]
    plugin["socket"] = h.socket
    plugin["kubernetes"] = {"apiServer": kubeapi_url(lab)}
    d = os.path.join(h.dir, "cni")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "10-contiv.conflist")
    with open(path, "w") as f:
        json.dump(conflist, f, indent=1)
    return path


def _put_node(lab: "Lab", h: "Host") -> None:
    """A Node object, so that ``kubectl get nodes`` shows the lab's hosts."""
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": h.name, "labels": {"kubernetes.io/hostname": h.name}},
            "status": {"addresses": [{"type": "InternalIP", "address": h.vtep_ip},
                                     {"type": "Hostname", "address": h.name}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}
    status, body = http.request("POST", "/api/v1/nodes", node, base_url=kubeapi_url(lab),
                                timeout=10)
    if status not in (200, 201, 409):
        raise LabError(f"cannot create Node {h.name} in the API stand-in: HTTP {status} {body}")


def start_kubelets(lab: "Lab") -> None:
    from contiv_sdn.lab.docker import default_cni_binary
    cni_dir = os.path.dirname(default_cni_binary())
    for h in lab.hosts:
        _put_node(lab, h)
        conflist = write_conflist(lab, h)
        d = os.path.join(h.dir, "kubelet")
        os.makedirs(d, exist_ok=True)
        argv = [lab.config.python, "-m", "contiv_sdn.lab.kubelet", "--node", h.name,
                "--kubeconfig", kubeconfig_path(lab), "--conflist", conflist,
                "--cni-path", cni_dir, "--state-dir", d, "--host-ip", h.vtep_ip,
                "--pidfile", os.path.join(d, "kubelet.pid")]
        svc = Service("kubelet", argv, d, env={"PYTHONPATH": _REPO},
                      logfile=os.path.join(d, "kubelet.out"))
        svc.start()
        lab._register(kubelet_key(h), svc)
        lab.progress(f"{h.name}: kubelet stand-in (pid {svc.pid}, log {svc.outfile})")


def pods(lab: "Lab") -> Dict[str, Dict[str, Any]]:
    """``namespace/name`` → what a kubelet runs for it (netns, ip, host)."""
    out: Dict[str, Dict[str, Any]] = {}
    for h in lab.hosts:
        path = os.path.join(h.dir, "kubelet", "kubelet.json")
        try:
            with open(path) as f:
                running = json.load(f)
        except (OSError, ValueError):
            continue
        for key, entry in running.items():
            out[key] = dict(entry, host=h.name)
    return out


def pod_netns(lab: "Lab", target: str) -> Optional[str]:
    """The namespace of pod ``namespace/name`` (None: not a pod target)."""
    if "/" not in target:
        return None
    entry = pods(lab).get(target)
    if entry is None:
        known = ", ".join(sorted(pods(lab))) or "none"
        raise LabError(f"no pod {target} runs on this lab's hosts (pods: {known}); "
                       f"kubectl --kubeconfig {kubeconfig_path(lab)} get pods -A -o wide")
    return entry["netns"]


def teardown(lab: "Lab", say: Any) -> None:
    """Kubelets, then the pods' sandboxes (CNI DEL while netplugins answer), then the
    stand-in."""
    for key, svc in list(lab.services.items()):
        if key.startswith("kubelet:"):
            svc.stop(lab.root)
    running = pods(lab)
    from contiv_sdn.lab.docker import default_cni_binary
    for key, entry in sorted(running.items()):
        h = lab.host(entry["host"])
        out = subprocess.run(["ip", "netns", "pids", entry["netns"]], capture_output=True,
                             text=True).stdout
        for pid in (int(p) for p in out.split() if p.isdigit()):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        conflist = os.path.join(h.dir, "cni", "10-contiv.conflist")
        try:
            from contiv_sdn.lab.kubelet import cni_config
            with open(conflist, "rb") as f:
                conf = cni_config(json.load(f))
            env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": entry["sandbox"],
                   "CNI_NETNS": f"/var/run/netns/{entry['netns']}", "CNI_IFNAME": "eth0",
                   "CNI_PATH": os.path.dirname(default_cni_binary()),
                   "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={entry['namespace']};"
                               f"K8S_POD_NAME={entry['name']}"}
            subprocess.run([default_cni_binary()], input=conf, env=env, capture_output=True,
                           timeout=60)
        except (OSError, ValueError, subprocess.SubprocessError, LabError) as e:
            say(f"pod {key}: CNI DEL not done ({e})")
        subprocess.run(["ip", "netns", "delete", entry["netns"]], capture_output=True)
    if running:
        say(f"pods removed: {' '.join(sorted(running))}")
    for h in lab.hosts:
        try:
            os.unlink(os.path.join(h.dir, "kubelet", "kubelet.json"))
        except OSError:
            pass
    svc = lab.services.get("kubeapi")
    if svc is not None:
        svc.stop(lab.root)


def wait_pod(lab: "Lab", target: str, timeout: float = 60) -> Dict[str, Any]:
    """Block until a kubelet runs pod ``namespace/name`` with an address."""
    deadline = time.monotonic() + timeout
    while True:
        entry = pods(lab).get(target)
        if entry is not None and entry.get("ip") and entry.get("pid"):
            return entry
        if time.monotonic() > deadline:
            raise LabError(f"pod {target} not running after {timeout:g} s")
        time.sleep(0.2)
