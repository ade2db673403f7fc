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

Every input is checked before it is used (:mod:`drivers.cni.spec` declares the
configuration, :mod:`drivers.cni.netplugin` netplugin's replies), and every failure
— including a bug — is printed as CNI error JSON, never as a traceback: the runtime
shows ``msg`` to an operator and can do nothing with a Python stack.

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
    from typing import Any, Dict, List, Optional, Tuple

from drivers.cni.spec import (COMMANDS, E_INCOMPATIBLE_VERSION, E_INTERNAL, E_INVALID_CONFIG,
                              E_INVALID_ENV, E_NETPLUGIN, E_NOT_AVAILABLE, E_TRY_AGAIN,
                              E_UNKNOWN_CONTAINER, LATEST, CNIError, add_result, asked_version,
                              endpoint_id, parse_cni_args, parse_config, parse_env, quoted,
                              read_stdin, version_answer, version_tuple)


DEFAULT_SOCKET = "/run/contiv/netplugin.sock"


def _socket(config: Dict[str, Any]) -> str:
    sock = config["socket"] or DEFAULT_SOCKET
    if not sock.startswith("/") or "\0" in sock:
        raise CNIError(E_INVALID_CONFIG, "network configuration field 'socket' must be the "
                                         "absolute path of netplugin's socket")
    return sock


def malformed(e: Exception) -> CNIError:
    return CNIError(E_INTERNAL, f"netplugin sent a malformed reply: {e}",
                    "netplugin and contiv-cni must come from the same release; see "
                    "netplugin's log")


def _call(config: Dict[str, Any], method: str, path: str, body: Any = None,
          not_available: int = E_TRY_AGAIN, decode: Any = None) -> Any:
    """netplugin's answer to one request, decoded by ``decode`` (one of
    :mod:`drivers.cni.netplugin`'s ``decode_*``); a refusal as :class:`CNIError`."""
    from drivers.cni import netplugin  # not needed by VERSION: imported when used
    try:
        status, payload = netplugin.request(_socket(config), method, path, body)
        if status < 400:
            return decode(payload) if decode is not None else None
    except netplugin.Unreachable as e:
        raise CNIError(not_available, str(e),
                       "start netplugin on this host (twistd netplugin)") from None
    except netplugin.Malformed as e:
        raise malformed(e) from None
    error = netplugin.error_text(status, payload)
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
    for dns in (config["dns"], record["dns"]):
        given = {k: v for k, v in dns.items() if v}  # a decoded DNS has every key
        if given:
            return given
    if record["gateway"]:
        return {"nameservers": [record["gateway"]]}
    return None


#: The cluster domain of Kubernetes Service names when the configuration's ``dns`` names none
K8S_DOMAIN = "cluster.local"


def k8s_dns(dns: Optional[Dict[str, Any]], namespace: str) -> Optional[Dict[str, Any]]:
    """A pod's DNS in Kubernetes mode (``kubernetes.apiServer`` configured, CNI_ARGS
    ``K8S_POD_NAMESPACE`` given): kubelet's search path in front
    of any configured one (``<ns>.svc.<domain>``, ``svc.<domain>``, ``<domain>``) so
    that ``web`` and ``web.<ns>`` find Services; the domain is the configuration's
    ``dns.domain`` or ``cluster.local``."""
    if not namespace or not dns:
        return dns
    out = dict(dns)
    domain = out.get("domain") or K8S_DOMAIN
    search = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
    out["search"] = search + [s for s in out.get("search") or [] if s not in search]
    return out


def cmd_add(config: Dict[str, Any], env: Dict[str, str]) -> Dict[str, Any]:
    from drivers.cni.placement import resolve
    args = parse_cni_args(env["CNI_ARGS"])
    cid, ifname = env["CNI_CONTAINERID"], env["CNI_IFNAME"]
    body = resolve(config, args, cid, ifname)
    body.update({"id": endpoint_id(cid, ifname), "netns": env["CNI_NETNS"]})
    from drivers.cni.netplugin import decode_endpoint
    record = _call(config, "POST", "/v1/endpoints", body, decode=decode_endpoint)
    return add_result(config["cniVersion"], record, env["CNI_NETNS"],
                      k8s_dns(_dns(config, record), args.get("K8S_POD_NAMESPACE", "")
                              if config["kubernetes"]["apiServer"] else ""))


def cmd_del(config: Dict[str, Any], env: Dict[str, str]) -> None:
    ep = endpoint_id(env["CNI_CONTAINERID"], env["CNI_IFNAME"])
    _call(config, "DELETE", "/v1/endpoints/" + ep)


def cmd_check(config: Dict[str, Any], env: Dict[str, str]) -> None:
    if version_tuple(config["cniVersion"]) < (0, 4, 0):
        raise CNIError(E_INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later")
    want = {ip["address"].split("/")[0] for ip in config["prevResult"]["ips"]} - {""}
    if not want:
        raise CNIError(E_INVALID_CONFIG, "CHECK needs prevResult (the ADD result, with its "
                                         "ips) in the network configuration")
    from drivers.cni.netplugin import decode_endpoint
    ep = endpoint_id(env["CNI_CONTAINERID"], env["CNI_IFNAME"])
    record = _call(config, "GET", "/v1/endpoints/" + ep, decode=decode_endpoint)
    if record["ipAddress"] not in want:
        raise CNIError(E_UNKNOWN_CONTAINER, f"endpoint {ep[:12]} has {record['ipAddress']}, "
                                            f"prevResult says {', '.join(sorted(want))}")
    seen = _interface(env["CNI_NETNS"], env["CNI_IFNAME"])
    if seen is None:
        raise CNIError(E_UNKNOWN_CONTAINER, f"no interface {env['CNI_IFNAME']} in "
                                            f"{env['CNI_NETNS']}")
    if f"{record['ipAddress']}/{record['prefixLen']}" not in seen["addrs"]:
        raise CNIError(E_UNKNOWN_CONTAINER, f"{env['CNI_IFNAME']} in {env['CNI_NETNS']} lacks "
                                            f"{record['ipAddress']}/{record['prefixLen']}")
    if seen["mac"].lower() != record["macAddress"].lower():
        raise CNIError(E_UNKNOWN_CONTAINER, f"{env['CNI_IFNAME']} has MAC {seen['mac']}, "
                                            f"expected {record['macAddress']}")


def _interface(netns: str, ifname: str) -> Optional[Dict[str, Any]]:
    import subprocess
    try:
        proc = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "dev",
                               ifname], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:  # iproute2's own output, on this host
        link = json.loads(proc.stdout)[0]
        return {"mac": str(link.get("address", "")),
                "addrs": {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                          if a.get("family") == "inet"}}
    except (ValueError, LookupError, TypeError, AttributeError):
        return None


def cmd_status(config: Dict[str, Any]) -> None:
    if version_tuple(config["cniVersion"]) < (1, 1, 0):
        raise CNIError(E_INCOMPATIBLE_VERSION, "STATUS needs cniVersion 1.1.0")
    from drivers.cni.netplugin import decode_status
    status = _call(config, "GET", "/v1/status", not_available=E_NOT_AVAILABLE,
                   decode=decode_status)
    if not status["ready"]:
        raise CNIError(E_NOT_AVAILABLE, "netplugin is not ready yet (bridge or host "
                                        "registration pending)")


def cmd_gc(config: Dict[str, Any]) -> None:
    if version_tuple(config["cniVersion"]) < (1, 1, 0):
        raise CNIError(E_INCOMPATIBLE_VERSION, "GC needs cniVersion 1.1.0")
    from drivers.cni.placement import L_CNI_IFNAME, L_CNI_NETWORK
    from drivers.cni.netplugin import decode_endpoints
    keep = {endpoint_id(a["containerID"], a["ifname"])
            for a in config["cni.dev/valid-attachments"]}
    records = _call(config, "GET", "/v1/endpoints", decode=decode_endpoints)
    failed: List[str] = []
    for record in records:
        labels = record["labels"]
        if labels.get(L_CNI_NETWORK) != config["name"]:
            continue
        ifname = labels.get(L_CNI_IFNAME) or record["ifname"] or "eth0"
        if record["id"] in keep or endpoint_id(record["containerID"], ifname) in keep:
            continue
        try:
            _call(config, "DELETE", "/v1/endpoints/" + _path_safe(record["id"]))
        except CNIError as e:
            failed.append(f"{record['id'][:12]}: {e.msg}")
    if failed:
        raise CNIError(E_TRY_AGAIN, f"GC could not remove {len(failed)} endpoint(s)",
                       "; ".join(failed))


def run(command: str, env: Dict[str, str], stdin: bytes,
        doc: Any = None) -> Optional[Dict[str, Any]]:
    """One invocation; ``doc``: stdin as parsed by :func:`read_stdin` (None: unparsable)."""
    if command not in COMMANDS:
        raise CNIError(E_INVALID_ENV, f"invalid environment variable(s): CNI_COMMAND "
                                      f"({quoted(command) if command else 'unset'}; "
                                      f"expected {', '.join(COMMANDS)})")
    if command == "VERSION":
        return version_answer(doc)
    config = parse_config(stdin, command, doc)
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


def _bug(e: BaseException) -> CNIError:
    """A failure none of the checks foresaw: said in one line, with where it happened
    (the runtime shows ``msg``; a traceback on stderr would reach no one useful)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = (f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
             if tb is not None else "?")
    return CNIError(E_INTERNAL, f"internal error in contiv-cni (a bug): "
                                f"{e.__class__.__name__}: {str(e)[:300]}",
                    f"at {where}; please report it with the network configuration used")


def answer(env: Dict[str, str], stdin: bytes) -> Tuple[bytes, int]:
    """One plugin run from its inputs to its outputs: ``(stdout bytes, exit status)``
    for the environment ``env`` and the bytes of stdin — whatever they hold (a result,
    CNI error JSON, or nothing).  The one function both ways in use: :func:`main` (the
    Python plugin, ``env`` = its environment) and netplugin's ``POST /v1/cni``
    (contiv_sdn/agent/cni_route.py, for the C shim drivers/cni/shim.c), so the two
    answer byte for byte alike.  It reads nothing global (no ``os.environ``, no stdio)
    and changes no process state: netplugin runs it in a worker thread."""
    doc: Any = None
    try:
        command = env.get("CNI_COMMAND", "")
        try:
            doc = read_stdin(stdin)
        except CNIError:
            if command == "VERSION" or command not in COMMANDS:
                doc = None  # VERSION reads only cniVersion; a bad command is told first
            else:
                raise
        result = run(command, env, stdin, doc)
    except CNIError as e:
        return _encode(e.to_json(asked_version(doc) or LATEST)), 1
    except Exception as e:  # noqa: BLE001 — see _bug
        return _encode(_bug(e).to_json(asked_version(doc) or LATEST)), 1
    return (_encode(result), 0) if result is not None else (b"", 0)


def _encode(answer: Dict[str, Any]) -> bytes:
    return (json.dumps(answer) + "\n").encode()


def main(stdin: Optional[bytes] = None) -> int:
    """The console script: exit 0 with the result (if any) on stdout, or 1 with CNI
    error JSON on stdout — whatever stdin and the environment hold.  ``stdin``: what
    the launcher (:mod:`drivers.cni.entry`) already read from it, else read here."""
    if stdin is None:
        try:
            stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
        except (OSError, ValueError, AttributeError):
            stdin = b""
    out, status = answer(dict(os.environ), stdin)
    if not out:
        return status
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):  # the runtime closed our stdout (or
        return status or 1                          # started us without one): nothing to tell
    return status


if __name__ == "__main__":
    sys.exit(main())
