"""Where a CNI attachment lands (tenant, network, group), its name and requested address.

Sources, later ones winning (Contiv's label keys and defaults, spec §3.11):

1. the network configuration: ``tenant`` (default ``default``), ``network``
   (default ``default-net``, Contiv's), ``group`` (default none);
2. labels ``io.contiv.tenant``, ``io.contiv.network``, ``io.contiv.net-group``:
   * Kubernetes: the pod's labels.  ``CNI_ARGS`` names the pod
     (``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``); with ``kubernetes.apiServer``
     in the config the labels are read from ``GET /api/v1/namespaces/NS/pods/NAME``
     (bearer token from ``kubernetes.token`` or ``kubernetes.tokenFile``, CA from
     ``kubernetes.caFile``; the whole lookup bounded by ``kubernetes.timeout``,
     seconds, default 10, at most 120), as Contiv's netplugin did;
   * labels given directly as ``CNI_ARGS`` keys (``io.contiv.network=web``);
   * Mesos: ``args["org.apache.mesos"].network_info.labels.labels`` (list of
     ``{key, value}``), the Mesos CNI isolator's form.

The container's name (DNS serves it) is the pod name, else the ``io.contiv.name``
label / Mesos ``network_info.name``-less container id prefix.  A requested
IPv4 address comes from ``runtimeConfig.ips`` or ``CNI_ARGS`` ``IP=`` (podman
passes ``--ip`` that way).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time in a process run per container
    from typing import Any, Dict, Optional

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import STR_MAP, Struct
from drivers.cni.spec import E_INVALID_CONFIG, E_IO, CNIError, quoted

L_TENANT = "io.contiv.tenant"
L_NETWORK = "io.contiv.network"
L_GROUP = "io.contiv.net-group"
L_NAME = "io.contiv.name"
DEFAULT_TENANT = "default"
DEFAULT_NETWORK = "default-net"
#: Label recording which CNI network configuration made an endpoint (for GC).
L_CNI_NETWORK = "cni.contiv.io/network"
L_CNI_IFNAME = "cni.contiv.io/ifname"
#: The pod of a Kubernetes endpoint (same names as drivers/kubernetes/objects.py; not
#: imported from there: this module runs in a process started per container).
L_K8S_NAMESPACE = "cni.contiv.io/k8s-namespace"
L_K8S_POD = "cni.contiv.io/k8s-pod"
L_K8S_POD_UID = "cni.contiv.io/k8s-pod-uid"


#: ``kubernetes.timeout`` (seconds, the whole pod lookup): default and largest allowed.
K8S_TIMEOUT = 10.0
K8S_TIMEOUT_MAX = 120.0
#: Largest Pod object / token file read (a Pod with managed fields is tens of KiB).
K8S_MAX_BODY = 4 << 20
MAX_TOKEN = 64 << 10


def mesos_labels(config: Dict[str, Any]) -> Dict[str, str]:
    items = config["args"]["org.apache.mesos"]["network_info"]["labels"]["labels"]
    return {item["key"]: item["value"] for item in items if item["key"]}


def _bad_k8s(field: str, why: str) -> CNIError:
    return CNIError(E_INVALID_CONFIG, f"network configuration field kubernetes.{field} {why}",
                    "see plugins/cni/README.md")


def _k8s_timeout(k8s: Dict[str, Any]) -> float:
    timeout = k8s["timeout"] or K8S_TIMEOUT  # zero value: absent
    if not 0 < timeout <= K8S_TIMEOUT_MAX:
        raise _bad_k8s("timeout", f"must be a number of seconds greater than 0 and at most "
                                  f"{K8S_TIMEOUT_MAX:g} (default {K8S_TIMEOUT:g}), not "
                                  f"{timeout:g}")
    return timeout


def _k8s_url(text: str) -> Any:
    """``kubernetes.apiServer`` split, or code 7 saying what is wrong with it."""
    from urllib.parse import urlsplit
    hint = "must be the API server's http(s) URL, e.g. https://10.96.0.1:443"
    if any(c.isspace() or not c.isprintable() for c in text):
        raise _bad_k8s("apiServer", f"{quoted(text)} {hint} (it holds blanks or control "
                                    "characters)")
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 — raises ValueError when the port is not a number 0-65535
    except ValueError as e:
        raise _bad_k8s("apiServer", f"{quoted(text)} {hint} ({e})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise _bad_k8s("apiServer", f"{quoted(text)} {hint}")
    return url


def _bearer(token: str, where: str) -> str:
    """A token fit for an ``Authorization`` header: visible ASCII only, so a CR/LF in
    a token file cannot end the header (http.client would refuse it with a traceback)."""
    if not all("!" <= c <= "~" for c in token):
        raise CNIError(E_INVALID_CONFIG, f"the Kubernetes token in {where} is not a bearer "
                                         "token: it holds blanks, line breaks, control or "
                                         "non-ASCII characters",
                       "write the service account token alone in it")
    return token


def _read_token(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN + 1)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise CNIError(E_IO, f"cannot read the Kubernetes token file {quoted(path)} "
                             "(kubernetes.tokenFile)",
                       getattr(e, "strerror", None) or str(e)) from None
    if len(data) > MAX_TOKEN:
        raise CNIError(E_INVALID_CONFIG, f"the Kubernetes token file {quoted(path)} is larger "
                                         f"than {MAX_TOKEN >> 10} KiB: not a token")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = "\x00"  # refused below as non-ASCII
    return _bearer(text.strip(), f"kubernetes.tokenFile {quoted(path)}")


class _Deadline(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Deadline()


def k8s_pod_labels(config: Dict[str, Any], namespace: str, pod: str) -> Dict[str, str]:
    """The pod's labels from the Kubernetes API (empty without ``kubernetes.apiServer``).

    The whole lookup (token file, connect, TLS, request, reply) is bounded by
    ``kubernetes.timeout`` with an interval timer: http.client's own timeout is per
    socket operation, which a slow or hostile server can stretch without end."""
    k8s = config["kubernetes"]
    if not k8s["apiServer"] or not namespace or not pod:
        return {}
    url = _k8s_url(k8s["apiServer"])
    timeout = _k8s_timeout(k8s)
    token = _bearer(k8s["token"], "kubernetes.token") if k8s["token"] else ""
    import signal
    try:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
    except ValueError:  # not the main thread (the plugin called in-process): per-op bound only
        previous = None
    else:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            return _k8s_get(k8s, url, timeout, token, namespace, pod)
        finally:
            if previous is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
    except _Deadline:  # also when it fires while the timer is being disarmed
        raise CNIError(E_IO, f"the Kubernetes API at {k8s['apiServer']} did not answer within "
                             f"{timeout:g} s (kubernetes.timeout)") from None


def _k8s_get(k8s: Dict[str, Any], url: Any, timeout: float, token: str, namespace: str,
             pod: str) -> Dict[str, str]:
    import http.client
    import ssl
    from urllib.parse import quote

    if not token and k8s["tokenFile"]:
        token = _read_token(k8s["tokenFile"])
    if url.scheme == "https":
        try:
            ctx = ssl.create_default_context(cafile=k8s["caFile"] or None)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise CNIError(E_IO, f"cannot use the Kubernetes CA file {quoted(k8s['caFile'])} "
                                 "(kubernetes.caFile)",
                           getattr(e, "strerror", None) or str(e)) from None
        conn: Any = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=timeout,
                                                context=ctx)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    path = (f"{url.path.rstrip('/')}/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(K8S_MAX_BODY + 1)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise CNIError(E_IO, f"cannot reach the Kubernetes API at {k8s['apiServer']}",
                       str(e) or e.__class__.__name__) from None
    finally:
        conn.close()
    if resp.status != 200:
        raise CNIError(E_IO, f"Kubernetes API: pod {namespace}/{pod}: HTTP {resp.status}",
                       body.decode("utf-8", "replace")[:300])
    if len(body) > K8S_MAX_BODY:
        raise CNIError(E_IO, f"Kubernetes API: pod {namespace}/{pod}: the answer is larger "
                             f"than {K8S_MAX_BODY >> 20} MiB")
    try:
        return POD.load(body)["metadata"]["labels"]
    except DecodeError as e:
        raise CNIError(E_IO, f"Kubernetes API: pod {namespace}/{pod}: answer is not a pod",
                       str(e)) from None


#: What the plugin reads of a Pod object.
POD = Struct("Pod", [("metadata", Struct("ObjectMeta", [("labels", STR_MAP)]))])


def _text(config: Dict[str, Any], key: str, default: str) -> str:
    return config[key] or default


def resolve(config: Dict[str, Any], cni_args: Dict[str, str],
            container_id: str, ifname: str) -> Dict[str, Any]:
    """The agent's endpoint request body (without id/netns) for this attachment."""
    labels: Dict[str, str] = {}
    labels.update(k8s_pod_labels(config, cni_args.get("K8S_POD_NAMESPACE", ""),
                                 cni_args.get("K8S_POD_NAME", "")))
    labels.update({k: v for k, v in cni_args.items() if k.startswith("io.contiv.")})
    labels.update(mesos_labels(config))
    tenant = labels.get(L_TENANT) or _text(config, "tenant", DEFAULT_TENANT)
    network = labels.get(L_NETWORK) or _text(config, "network", DEFAULT_NETWORK)
    group = labels.get(L_GROUP) or _text(config, "group", "")
    name = (cni_args.get("K8S_POD_NAME") or labels.get(L_NAME) or container_id[:12])
    ip = requested_ip(config, cni_args)
    record_labels = {k: v for k, v in labels.items() if not k.startswith("cni.contiv.io/")}
    record_labels[L_CNI_NETWORK] = config["name"]
    record_labels[L_CNI_IFNAME] = ifname
    # the pod this endpoint is for: the netmaster stamps it into the record as
    # k8sNamespace/k8sPod (its watcher keeps the pod's labels there, NetworkPolicy
    # selects by them)
    if cni_args.get("K8S_POD_NAMESPACE") and cni_args.get("K8S_POD_NAME"):
        record_labels[L_K8S_NAMESPACE] = cni_args["K8S_POD_NAMESPACE"]
        record_labels[L_K8S_POD] = cni_args["K8S_POD_NAME"]
        # which incarnation of the pod (the netmaster stamps it as k8sPodUID): a pod
        # deleted and created again under its name is another pod, with its own labels
        if cni_args.get("K8S_POD_UID"):
            record_labels[L_K8S_POD_UID] = cni_args["K8S_POD_UID"]
    body: Dict[str, Any] = {"tenant": tenant, "network": network, "group": group,
                            "name": name, "containerID": container_id, "ifname": ifname,
                            "labels": record_labels}
    if ip:
        body["ip"] = ip
    return body


def requested_ip(config: Dict[str, Any], cni_args: Dict[str, str]) -> Optional[str]:
    for ip in config["runtimeConfig"]["ips"]:
        if ":" not in ip:
            return ip.split("/")[0]
    ip = cni_args.get("IP", "")
    return ip.split("/")[0] if ip and ":" not in ip else None
