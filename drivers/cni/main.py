"""``contiv-cni``: the CNI plugin (spec 1.0.0 and 0.4.0; STATUS and GC of 1.1.0).

A runtime (kubelet, Mesos, podman) executes it with ``CNI_*`` variables and the
network configuration on stdin; it asks the local netplugin over its UNIX
socket (``socket`` in the config, default ``/run/contiv/netplugin.sock``) and
prints the result — or the spec's error JSON with a non-zero exit.

* ADD: ``POST /v1/endpoints`` (placement: :mod:`drivers.cni.placement`); the
  result names the host veth and the container interface, the address with its
  gateway, the default route, and the DNS server to use.
* DEL: ``DELETE /v1/endpoints/<id>``; idempotent (an unknown endpoint or a
  second DEL succeeds).
* CHECK: the endpoint exists, its address is the one of ``prevResult``, and the
  interface in the namespace carries that address and MAC.
* STATUS: netplugin answers and says it is ready (else code 50).
* GC: endpoints this configuration made whose (container id, ifname) is not in
  ``cni.dev/valid-attachments`` are deleted.

The DNS server in the result: ``dns`` of the configuration if given, else what
netplugin reports for the endpoint (``dns``), else the network's gateway —
every UDP/53 packet a container sends is answered by contiv's DNS in the
datapath, whatever server address it was sent to.
"""

from __future__ import annotations

import json
import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time in a process run per container
    from typing import Any, Dict, List, Optional

from drivers.cni.spec import (COMMANDS, E_INCOMPATIBLE_VERSION, E_INVALID_CONFIG,
                              E_INVALID_ENV, E_NETPLUGIN, E_NOT_AVAILABLE, E_TRY_AGAIN,
                              E_UNKNOWN_CONTAINER, LATEST, CNIError, add_result, endpoint_id,
                              parse_cni_args, parse_config, parse_env, version_answer,
                              version_tuple)


DEFAULT_SOCKET = "/run/contiv/netplugin.sock"


def _socket(config: Dict[str, Any]) -> str:
    sock = config.get("socket") or DEFAULT_SOCKET
    if not isinstance(sock, str) or not sock.startswith("/"):
        raise CNIError(E_INVALID_CONFIG, "network configuration field 'socket' must be the "
                                         "absolute path of netplugin's socket")
    return sock


def _call(config: Dict[str, Any], method: str, path: str, body: Any = None,
          not_available: int = E_TRY_AGAIN) -> Any:
    from drivers.cni import netplugin  # not needed by VERSION: imported when used
    try:
        status, answer = netplugin.request(_socket(config), method, path, body)
    except netplugin.Unreachable as e:
        raise CNIError(not_available, str(e),
                       "start netplugin on this host (twistd netplugin)") from None
    if status < 400:
        return status, answer
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error or f"HTTP {status}"
    if status == 404:
        raise CNIError(E_UNKNOWN_CONTAINER, error)
    if status in (409, 503):
        raise CNIError(E_TRY_AGAIN, error)
    if status == 400 or "not found" in error:
        # the netmaster answers every refusal with 500 and its text: an unknown
        # tenant, network or group is an invalid configuration (code 7)
        raise CNIError(E_INVALID_CONFIG, error)
    raise CNIError(E_NETPLUGIN, f"netplugin: {error}")


def _path_safe(text: str) -> str:
    """Percent-encode what is not unreserved (ids are validated; records may not be)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-._~") else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def _dns(config: Dict[str, Any], record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    dns = config.get("dns")
    if isinstance(dns, dict) and dns:
        return {k: v for k, v in dns.items() if k in ("nameservers", "domain", "search",
                                                      "options")}
    if isinstance(record.get("dns"), dict) and record["dns"]:
        return record["dns"]
    if record.get("gateway"):
        return {"nameservers": [record["gateway"]]}
    return None


def cmd_add(config: Dict[str, Any], env: Dict[str, str]) -> Dict[str, Any]:
    from drivers.cni.placement import resolve
    args = parse_cni_args(env["CNI_ARGS"])
    cid, ifname = env["CNI_CONTAINERID"], env["CNI_IFNAME"]
    body = resolve(config, args, cid, ifname)
    body.update({"id": endpoint_id(cid, ifname), "netns": env["CNI_NETNS"]})
    _, record = _call(config, "POST", "/v1/endpoints", body)
    if not isinstance(record, dict) or not record.get("ipAddress"):
        raise CNIError(E_NETPLUGIN, "netplugin answered without an address", repr(record))
    return add_result(config["cniVersion"], record, env["CNI_NETNS"], _dns(config, record))


def cmd_del(config: Dict[str, Any], env: Dict[str, str]) -> None:
    ep = endpoint_id(env["CNI_CONTAINERID"], env["CNI_IFNAME"])
    _call(config, "DELETE", "/v1/endpoints/" + ep)


def cmd_check(config: Dict[str, Any], env: Dict[str, str]) -> None:
    if version_tuple(config["cniVersion"]) < (0, 4, 0):
        raise CNIError(E_INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later")
    prev = config.get("prevResult")
    if not isinstance(prev, dict):
        raise CNIError(E_INVALID_CONFIG, "CHECK needs prevResult in the network configuration")
    ep = endpoint_id(env["CNI_CONTAINERID"], env["CNI_IFNAME"])
    _, record = _call(config, "GET", "/v1/endpoints/" + ep)
    want = {str(ip.get("address", "")).split("/")[0] for ip in prev.get("ips") or []
            if isinstance(ip, dict)}
    if record.get("ipAddress") not in want:
        raise CNIError(E_UNKNOWN_CONTAINER, f"endpoint {ep[:12]} has {record.get('ipAddress')}, "
                                            f"prevResult says {', '.join(sorted(want))}")
    seen = _interface(env["CNI_NETNS"], env["CNI_IFNAME"])
    if seen is None:
        raise CNIError(E_UNKNOWN_CONTAINER, f"no interface {env['CNI_IFNAME']} in "
                                            f"{env['CNI_NETNS']}")
    if f"{record['ipAddress']}/{record.get('prefixLen')}" not in seen["addrs"]:
        raise CNIError(E_UNKNOWN_CONTAINER, f"{env['CNI_IFNAME']} in {env['CNI_NETNS']} lacks "
                                            f"{record['ipAddress']}/{record.get('prefixLen')}")
    if seen["mac"].lower() != str(record.get("macAddress", "")).lower():
        raise CNIError(E_UNKNOWN_CONTAINER, f"{env['CNI_IFNAME']} has MAC {seen['mac']}, "
                                            f"expected {record.get('macAddress')}")


def _interface(netns: str, ifname: str) -> Optional[Dict[str, Any]]:
    import subprocess
    try:
        proc = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "dev",
                               ifname], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        link = json.loads(proc.stdout)[0]
    except (ValueError, IndexError):
        return None
    return {"mac": link.get("address", ""),
            "addrs": {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                      if a.get("family") == "inet"}}


def cmd_status(config: Dict[str, Any]) -> None:
    if version_tuple(config["cniVersion"]) < (1, 1, 0):
        raise CNIError(E_INCOMPATIBLE_VERSION, "STATUS needs cniVersion 1.1.0")
    _, status = _call(config, "GET", "/v1/status", not_available=E_NOT_AVAILABLE)
    if not isinstance(status, dict) or not status.get("ready"):
        raise CNIError(E_NOT_AVAILABLE, "netplugin is not ready yet (bridge or host "
                                        "registration pending)", json.dumps(status))


def cmd_gc(config: Dict[str, Any]) -> None:
    if version_tuple(config["cniVersion"]) < (1, 1, 0):
        raise CNIError(E_INCOMPATIBLE_VERSION, "GC needs cniVersion 1.1.0")
    from drivers.cni.placement import L_CNI_IFNAME, L_CNI_NETWORK
    valid = config.get("cni.dev/valid-attachments") or []
    if not isinstance(valid, list):
        raise CNIError(E_INVALID_CONFIG, "cni.dev/valid-attachments must be a list")
    keep = {endpoint_id(str(a.get("containerID", "")), str(a.get("ifname", "")))
            for a in valid if isinstance(a, dict)}
    _, records = _call(config, "GET", "/v1/endpoints")
    failed: List[str] = []
    for record in records or []:
        labels = record.get("labels") or {}
        if labels.get(L_CNI_NETWORK) != config["name"]:
            continue
        ifname = labels.get(L_CNI_IFNAME) or record.get("ifname") or "eth0"
        if record.get("id") in keep or endpoint_id(str(record.get("containerID", "")),
                                                   ifname) in keep:
            continue
        try:
            _call(config, "DELETE", "/v1/endpoints/" + _path_safe(str(record["id"])))
        except CNIError as e:
            failed.append(f"{record['id'][:12]}: {e.msg}")
    if failed:
        raise CNIError(E_TRY_AGAIN, f"GC could not remove {len(failed)} endpoint(s)",
                       "; ".join(failed))


def run(command: str, env: Dict[str, str], stdin: bytes) -> Optional[Dict[str, Any]]:
    if command not in COMMANDS:
        raise CNIError(E_INVALID_ENV, f"invalid environment variable(s): CNI_COMMAND "
                                      f"({command or 'unset'}; expected {', '.join(COMMANDS)})")
    if command == "VERSION":
        try:
            config = json.loads(stdin) if stdin.strip() else {}
        except ValueError:
            config = {}
        return version_answer(config if isinstance(config, dict) else {})
    config = parse_config(stdin, command)
    checked = parse_env(env, command)
    if command == "ADD":
        return cmd_add(config, checked)
    if command == "DEL":
        cmd_del(config, checked)
    elif command == "CHECK":
        cmd_check(config, checked)
    elif command == "STATUS":
        cmd_status(config)
    elif command == "GC":
        cmd_gc(config)
    return None


def _version_of(stdin: bytes) -> str:
    try:
        v = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        return LATEST
    from drivers.cni.spec import SUPPORTED
    return v if v in SUPPORTED else LATEST


def main() -> int:
    env = dict(os.environ)
    try:
        stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    except (OSError, ValueError):
        stdin = b""
    command = env.get("CNI_COMMAND", "")
    try:
        result = run(command, env, stdin)
    except CNIError as e:
        sys.stdout.write(json.dumps(e.to_json(_version_of(stdin))) + "\n")
        return 1
    if result is not None:
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
