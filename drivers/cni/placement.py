"""Where a CNI attachment lands (tenant, network, group), its name and requested address.

Sources, later ones winning (Contiv's label keys and defaults, spec §3.11):

1. the network configuration: ``tenant`` (default ``default``), ``network``
   (default ``default-net``, Contiv's), ``group`` (default none);
2. labels ``io.contiv.tenant``, ``io.contiv.network``, ``io.contiv.net-group``:
   * Kubernetes: the pod's labels.  ``CNI_ARGS`` names the pod
     (``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``); with ``kubernetes.apiServer``
     in the config the labels are read from ``GET /api/v1/namespaces/NS/pods/NAME``
     (bearer token from ``kubernetes.token`` or ``kubernetes.tokenFile``, CA from
     ``kubernetes.caFile``), as Contiv's netplugin did;
   * labels given directly as ``CNI_ARGS`` keys (``io.contiv.network=web``);
   * Mesos: ``args["org.apache.mesos"].network_info.labels.labels`` (list of
     ``{key, value}``), the Mesos CNI isolator's form.

The container's name (DNS serves it) is the pod name, else the ``io.contiv.name``
label / Mesos ``network_info.name``-less container id prefix.  A requested
IPv4 address comes from ``runtimeConfig.ips`` or ``CNI_ARGS`` ``IP=`` (podman
passes ``--ip`` that way).
"""

from __future__ import annotations

import json
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time in a process run per container
    from typing import Any, Dict, Optional

from drivers.cni.spec import E_INVALID_CONFIG, E_IO, CNIError

L_TENANT = "io.contiv.tenant"
L_NETWORK = "io.contiv.network"
L_GROUP = "io.contiv.net-group"
L_NAME = "io.contiv.name"
DEFAULT_TENANT = "default"
DEFAULT_NETWORK = "default-net"
#: Label recording which CNI network configuration made an endpoint (for GC).
L_CNI_NETWORK = "cni.contiv.io/network"
L_CNI_IFNAME = "cni.contiv.io/ifname"


def mesos_labels(config: Dict[str, Any]) -> Dict[str, str]:
    args = config.get("args")
    if not isinstance(args, dict):
        return {}
    mesos = args.get("org.apache.mesos")
    info = mesos.get("network_info") if isinstance(mesos, dict) else None
    labels = (info or {}).get("labels") if isinstance(info, dict) else None
    items = labels.get("labels") if isinstance(labels, dict) else None
    out: Dict[str, str] = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                out[item["key"]] = str(item.get("value", ""))
    return out


def k8s_pod_labels(config: Dict[str, Any], namespace: str, pod: str) -> Dict[str, str]:
    """The pod's labels from the Kubernetes API (empty without ``kubernetes.apiServer``)."""
    k8s = config.get("kubernetes")
    if not isinstance(k8s, dict) or not k8s.get("apiServer") or not namespace or not pod:
        return {}
    import http.client
    import ssl
    from urllib.parse import quote, urlsplit

    url = urlsplit(str(k8s["apiServer"]))
    token = k8s.get("token") or ""
    if not token and k8s.get("tokenFile"):
        try:
            with open(k8s["tokenFile"]) as f:
                token = f.read().strip()
        except OSError as e:
            raise CNIError(E_IO, f"cannot read the Kubernetes token {k8s['tokenFile']}",
                           str(e)) from None
    timeout = float(k8s.get("timeout") or 10)
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=k8s.get("caFile") or None)
        conn: Any = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=timeout,
                                                context=ctx)
    elif url.scheme == "http":
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    else:
        raise CNIError(E_INVALID_CONFIG, f"kubernetes.apiServer {k8s['apiServer']!r} must be "
                                         "an http(s) URL")
    path = f"{url.path.rstrip('/')}/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except OSError as e:
        raise CNIError(E_IO, f"cannot reach the Kubernetes API at {k8s['apiServer']}",
                       str(e)) from None
    finally:
        conn.close()
    if resp.status != 200:
        raise CNIError(E_IO, f"Kubernetes API: pod {namespace}/{pod}: HTTP {resp.status}",
                       body.decode("utf-8", "replace")[:300])
    try:
        labels = json.loads(body).get("metadata", {}).get("labels") or {}
    except (ValueError, AttributeError):
        raise CNIError(E_IO, f"Kubernetes API: pod {namespace}/{pod}: answer is not a pod") \
            from None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _text(config: Dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise CNIError(E_INVALID_CONFIG, f"network configuration field {key!r} must be a string")
    return value or default


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
    record_labels[L_CNI_NETWORK] = str(config.get("name", ""))
    record_labels[L_CNI_IFNAME] = ifname
    body: Dict[str, Any] = {"tenant": tenant, "network": network, "group": group,
                            "name": name, "containerID": container_id, "ifname": ifname,
                            "labels": record_labels}
    if ip:
        body["ip"] = ip
    return body


def requested_ip(config: Dict[str, Any], cni_args: Dict[str, str]) -> Optional[str]:
    runtime = config.get("runtimeConfig")
    ips = runtime.get("ips") if isinstance(runtime, dict) else None
    if isinstance(ips, list):
        for ip in ips:
            if isinstance(ip, str) and ":" not in ip:
                return ip.split("/")[0]
    ip = cni_args.get("IP", "")
    return ip.split("/")[0] if ip and ":" not in ip else None
