"""The parts of the CNI specification the plugin implements (1.0.0, 0.4.0/0.3.x, 1.1.0 additions).

Kept free of heavy imports: a runtime executes the plugin for every VERSION,
ADD, DEL, CHECK, STATUS and GC, so start-up time is the plugin's latency.

* Versions: results are written in the ``cniVersion`` of the network config
  (``0.3.0``–``1.1.0``); ``0.4.0`` and older put ``"version": "4"`` in each IP.
* Errors (spec "Error"): written to stdout as ``{"cniVersion", "code", "msg",
  "details"}`` with a non-zero exit status; codes 1–7 and 11 are the spec's,
  50 is 1.1.0's "plugin not available" (STATUS), 999 (the Go library's
  ``ErrInternal``) is ours: netplugin failed, or answered what we cannot use.
* Input: stdin is parsed strictly (:func:`contiv_sdn.model.shapes.loads`: no
  NaN/Infinity, nesting bounded without recursion) and every field the plugin
  reads is declared in :data:`NETCONF` and type-checked before anything acts on
  it, so a wrong type is refused with code 7 naming the field, never a
  traceback; the environment must be text (UTF-8), or code 4.
"""

from __future__ import annotations

import json
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time in a process run per container
    from typing import Any, Dict, List, Optional, Tuple

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import FLOAT, STR, STR_LIST, ListOf, Struct, loads

from drivers.cni.versions import LATEST, SUPPORTED  # noqa: F401 (imported from here too)

# spec error codes
E_INCOMPATIBLE_VERSION = 1
E_UNSUPPORTED_FIELD = 2
E_UNKNOWN_CONTAINER = 3
E_INVALID_ENV = 4
E_IO = 5
E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN = 11
E_NOT_AVAILABLE = 50
E_INTERNAL = 999  # "other": the Go library's ErrInternal
# ours: netplugin refused for a reason that is none of the above, or its reply is unusable
E_NETPLUGIN = E_INTERNAL

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


#: The CNI ``dns`` object (a result's, or the configuration's to return as it is).
DNS = Struct("DNS", [("nameservers", STR_LIST), ("domain", STR), ("search", STR_LIST),
                     ("options", STR_LIST)])

#: The network configuration as far as the plugin reads it (unknown keys are the
#: runtime's or other plugins' and are ignored, as Go ignores them).  Absent or
#: ``null`` fields hold their zero value.
NETCONF = Struct("NetConf", [
    ("cniVersion", STR), ("name", STR), ("type", STR),
    ("socket", STR), ("tenant", STR), ("network", STR), ("group", STR),
    ("dns", DNS),
    ("kubernetes", Struct("Kubernetes", [("apiServer", STR), ("token", STR),
                                         ("tokenFile", STR), ("caFile", STR),
                                         ("timeout", FLOAT)])),
    # Mesos' CNI isolator: args["org.apache.mesos"].network_info.labels.labels
    ("args", Struct("Args", [("org.apache.mesos", Struct("MesosArgs", [
        ("network_info", Struct("NetworkInfo", [
            ("labels", Struct("Labels", [
                ("labels", ListOf(Struct("Label", [("key", STR), ("value", STR)])))]))]))]))])),
    ("runtimeConfig", Struct("RuntimeConfig", [("ips", STR_LIST)])),
    ("prevResult", Struct("Result", [("ips", ListOf(Struct("IPConfig",
                                                           [("address", STR)])))])),
    ("cni.dev/valid-attachments", ListOf(Struct("Attachment", [("containerID", STR),
                                                               ("ifname", STR)]))),
])


def quoted(text: str) -> str:
    """A value shown in a message: JSON-quoted (escapes control characters), cut short."""
    return json.dumps(text if len(text) <= 200 else text[:200] + "...")


def read_stdin(raw: bytes) -> Any:
    """Stdin as plain JSON (strict: Go's parser), or :class:`CNIError` code 6."""
    try:
        return loads(raw)
    except DecodeError as e:
        raise CNIError(E_DECODE, "cannot decode the network configuration on stdin",
                       str(e)) from None


def asked_version(doc: Any) -> Optional[str]:
    """The ``cniVersion`` a parsed stdin asks for, if it is one we speak."""
    v = doc.get("cniVersion") if isinstance(doc, dict) else None
    return v if isinstance(v, str) and v in SUPPORTED else None


def version_tuple(v: str) -> Tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


def check_version(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise CNIError(E_INVALID_CONFIG, "the network configuration has no cniVersion")
    if v not in SUPPORTED:
        raise CNIError(E_INCOMPATIBLE_VERSION, f"incompatible CNI version {v}",
                       f"contiv-cni supports {', '.join(SUPPORTED)}")
    return v


def version_answer(doc: Any) -> Dict[str, Any]:
    """The VERSION result, in the version the runtime asked about when we support it
    (whatever else stdin holds: VERSION only reads ``cniVersion``, as Go's skel does)."""
    return {"cniVersion": asked_version(doc) or LATEST, "supportedVersions": list(SUPPORTED)}


def parse_config(raw: bytes, command: str, doc: Any = None) -> Dict[str, Any]:
    """The network configuration on stdin, type-checked against :data:`NETCONF`
    (code 6 when it is not a JSON object, 1 for a version we do not speak, 7 for a
    missing or wrongly typed field).  ``doc``: stdin already parsed by :func:`read_stdin`."""
    if doc is None:
        doc = read_stdin(raw)
    if not isinstance(doc, dict):
        raise CNIError(E_DECODE, "the network configuration must be a JSON object")
    if isinstance(doc.get("cniVersion"), str):  # a version we do not speak is told first
        check_version(doc["cniVersion"])
    try:
        config = NETCONF.load(raw)
    except DecodeError as e:
        raise CNIError(E_INVALID_CONFIG, f"invalid network configuration: {e}",
                       "correct the field named above in the network configuration "
                       "(see plugins/cni/README.md)") from None
    check_version(config["cniVersion"] or None)
    for key in ("name", "type"):
        if not config[key]:
            raise CNIError(E_INVALID_CONFIG, f"the network configuration has no \"{key}\"")
    return config


def _valid_container_id(cid: str) -> bool:
    if not cid or not cid[0].isascii() or not cid[0].isalnum():
        return False
    return all(c.isascii() and (c.isalnum() or c in "_.-") for c in cid)


def _valid_ifname(name: str) -> bool:
    return (0 < len(name) <= 15 and name not in (".", "..") and "/" not in name
            and ":" not in name and not any(c.isspace() for c in name))


def is_text(value: str) -> bool:
    """Whether an environment value is UTF-8 text (os.environ keeps other bytes as
    lone surrogates, which cannot be sent on as JSON or in a URL)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_env(env: Dict[str, str], command: str) -> Dict[str, str]:
    """The CNI_* variables a command needs, checked (code 4 names the bad ones)."""
    need = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
            "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
            "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
            "GC": (), "STATUS": (), "VERSION": ()}[command]
    missing = [k for k in need if not env.get(k)]
    if missing:
        raise CNIError(E_INVALID_ENV, f"missing environment variable(s): {', '.join(missing)}")
    bad: List[str] = [k for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH",
                                  "CNI_ARGS") if not is_text(env.get(k, ""))]
    cid = env.get("CNI_CONTAINERID", "")
    if command in ("ADD", "CHECK", "DEL") and not _valid_container_id(cid):
        bad.append("CNI_CONTAINERID")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "CHECK", "DEL") and not _valid_ifname(ifname):
        bad.append("CNI_IFNAME")
    netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and (not netns.startswith("/") or "\0" in netns):
        bad.append("CNI_NETNS")
    if bad:
        bad = sorted(set(bad), key=bad.index)
        raise CNIError(E_INVALID_ENV, f"invalid environment variable(s): {', '.join(bad)}",
                       "; ".join(f"{k}={quoted(env.get(k, ''))}" for k in bad))
    return {k: env.get(k, "") for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
                                         "CNI_PATH", "CNI_ARGS")}


def parse_cni_args(text: str) -> Dict[str, str]:
    """``K=V;K2=V2`` (CNI_ARGS) → dict; a malformed pair is an invalid environment."""
    out: Dict[str, str] = {}
    for pair in (text or "").split(";"):
        if not pair:
            continue
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CNIError(E_INVALID_ENV, "invalid environment variable(s): CNI_ARGS",
                           f"{quoted(pair)} is not KEY=VALUE")
        out[key] = value
    return out


def endpoint_id(container_id: str, ifname: str) -> str:
    """Contiv's endpoint id for a CNI attachment: the (infra) container id for eth0."""
    return container_id if ifname == "eth0" else f"{container_id}-{ifname}"


def add_result(version: str, record: Dict[str, Any], netns: str,
               dns: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The ADD result of spec §"Success" from the agent's endpoint record (as decoded and
    checked by :func:`drivers.cni.netplugin.decode_endpoint`: every field present)."""
    ip, plen, gateway = record["ipAddress"], record["prefixLen"], record["gateway"]
    host_if: Dict[str, Any] = {"name": record["intfName"]}
    if record["hostMac"]:
        host_if["mac"] = record["hostMac"]
    interfaces = [host_if, {"name": record["ifname"] or "eth0", "mac": record["macAddress"],
                            "sandbox": netns}]
    ipc: Dict[str, Any] = {"address": f"{ip}/{plen}", "interface": 1}
    if gateway:
        ipc["gateway"] = gateway
    if version_tuple(version) < (1, 0, 0):
        ipc["version"] = "4"
    result: Dict[str, Any] = {"cniVersion": version, "interfaces": interfaces, "ips": [ipc]}
    if gateway:
        result["routes"] = [{"dst": "0.0.0.0/0", "gw": gateway}]
    if "/" in record["ipv6Address"]:
        ip6 = {"address": record["ipv6Address"], "interface": 1}
        if version_tuple(version) < (1, 0, 0):
            ip6["version"] = "6"
        result["ips"].append(ip6)
    if dns:
        result["dns"] = dns
    return result
