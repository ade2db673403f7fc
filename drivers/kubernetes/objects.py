"""What the netmaster reads of Kubernetes objects, and what it writes to Redis.

Every object from the API server is parsed by :func:`contiv_sdn.model.shapes.loads`
(strict JSON: no NaN/Infinity, bounded depth, integers exact) and its typed parts are
decoded through the :class:`~contiv_sdn.model.shapes.Struct` shapes below, so a wrong
type is refused with Go's text before anything reaches Redis.

The Redis data model (shared with the NetworkPolicy compiler, ``drivers.kubernetes.netpol``):

* store kind ``k8sNamespace``: key = the namespace's name; record
  ``{"name": str, "labels": {str: str}}``;
* store kind ``k8sNetworkPolicy``: key = ``<namespace>/<name>``; record
  ``{"namespace", "name", "uid", "spec"}`` where ``spec`` is the policy's spec object
  exactly as the API gives it;
* endpoint records (kind ``endpoint``) of pods carry ``k8sNamespace``, ``k8sPod``
  (stamped by the CNI path at create, with ``k8sPodUID`` when the runtime gave
  ``K8S_POD_UID``), ``labels`` (the pod's labels, plus the CNI
  plugin's own ``cni.contiv.io/*`` bookkeeping keys) and ``namedPorts`` (port name →
  ``{"port": int, "protocol": "TCP"|"UDP"|"SCTP"}``, from the pod's containers);
* store kind ``k8sService``: key = ``<namespace>/<name>``; record ``{"namespace",
  "name", "uid", "clusterIP"`` ("" when headless or not allocated), ``"headless"``
  (clusterIP ``None``), ``"type"`` (ClusterIP, NodePort, LoadBalancer,
  ExternalName), ``"ports": [{"name", "port", "targetPort"`` (a number, or a
  container port's name), ``"protocol", "nodePort"}]``, ``"selector"``,
  ``"sessionAffinity"`` (None | ClientIP) and ``"affinityTimeout"`` (seconds;
  kube's default 10800 when ClientIP gives none)``}``;
* store kind ``k8sEndpointSlice``: key = ``<namespace>/<name>``; record
  ``{"namespace", "name", "service"`` (the ``kubernetes.io/service-name`` label),
  ``"addressType", "endpoints": [{"addresses": [str], "pod": "ns/name"|""}]``
  (**ready endpoints only**: ``conditions.ready`` true or absent, as kube-proxy
  reads it), ``"ports": [{"name", "port", "protocol"}]}``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import ANY, BOOL, INT, STR, STR_LIST, STR_MAP, ListOf, Struct

NS_KIND = "k8sNamespace"
NETPOL_KIND = "k8sNetworkPolicy"
SVC_KIND = "k8sService"
SLICE_KIND = "k8sEndpointSlice"
#: the label naming an EndpointSlice's Service (discovery.k8s.io/v1)
L_SERVICE_NAME = "kubernetes.io/service-name"
#: kube's default ``sessionAffinityConfig.clientIP.timeoutSeconds`` (3 hours)
DEFAULT_AFFINITY_TIMEOUT = 10800
#: Labels of an endpoint record that are the CNI plugin's, not the pod's: kept when the
#: pod's labels are written (``cni.contiv.io/network`` names the configuration for GC).
CNI_LABEL_PREFIX = "cni.contiv.io/"
#: Labels the CNI plugin sets so that the netmaster can stamp ``k8sNamespace``/``k8sPod``
#: into the endpoint record it creates (CNI_ARGS ``K8S_POD_NAMESPACE``/``K8S_POD_NAME``).
L_K8S_NAMESPACE = "cni.contiv.io/k8s-namespace"
L_K8S_POD = "cni.contiv.io/k8s-pod"
#: ... and ``K8S_POD_UID``, stamped as ``k8sPodUID``: which incarnation of the pod.
L_K8S_POD_UID = "cni.contiv.io/k8s-pod-uid"

OBJECT_META = Struct("ObjectMeta", [
    ("name", STR), ("namespace", STR), ("uid", STR), ("resourceVersion", STR),
    ("labels", STR_MAP), ("deletionTimestamp", STR),
])
CONTAINER_PORT = Struct("ContainerPort", [
    ("name", STR), ("containerPort", INT), ("protocol", STR),
])
CONTAINER = Struct("Container", [
    ("name", STR), ("image", STR), ("command", STR_LIST), ("args", STR_LIST),
    ("ports", ListOf(CONTAINER_PORT)),
])
POD = Struct("Pod", [
    ("metadata", OBJECT_META),
    ("spec", Struct("PodSpec", [("nodeName", STR), ("hostNetwork", BOOL),
                                ("restartPolicy", STR),
                                ("containers", ListOf(CONTAINER))])),
    ("status", Struct("PodStatus", [("phase", STR), ("podIP", STR)])),
])
NAMESPACE = Struct("Namespace", [("metadata", OBJECT_META)])
#: The spec is kept as the API gives it (free-form JSON, integers exact), see :func:`decode`.
NETWORK_POLICY = Struct("NetworkPolicy", [("metadata", OBJECT_META)])
LIST_META = Struct("ListMeta", [("resourceVersion", STR), ("continue", STR)])
WATCH_EVENT = Struct("WatchEvent", [("type", STR)])
#: ``metav1.Status``, as an error answer or the object of a watch ``ERROR`` event.
STATUS = Struct("Status", [("code", INT), ("reason", STR), ("message", STR)])

SERVICE_PORT = Struct("ServicePort", [
    ("name", STR), ("port", INT), ("targetPort", ANY), ("protocol", STR), ("nodePort", INT),
])
SERVICE = Struct("Service", [
    ("metadata", OBJECT_META),
    ("spec", Struct("ServiceSpec", [
        ("clusterIP", STR), ("type", STR), ("ports", ListOf(SERVICE_PORT)),
        ("selector", STR_MAP), ("sessionAffinity", STR),
        ("sessionAffinityConfig", Struct("SessionAffinityConfig", [
            ("clientIP", Struct("ClientIPConfig", [("timeoutSeconds", INT)]))])),
    ])),
])
#: ``conditions.ready`` is a pointer in Go (absent = unknown = ready): read from the raw
#: object after the shape checked its type, see :func:`slice_record`.
ENDPOINT = Struct("Endpoint", [
    ("addresses", STR_LIST),
    ("conditions", Struct("EndpointConditions", [("ready", BOOL), ("serving", BOOL),
                                                 ("terminating", BOOL)])),
    ("targetRef", Struct("ObjectReference", [("kind", STR), ("namespace", STR),
                                             ("name", STR), ("uid", STR)])),
    ("nodeName", STR),
])
ENDPOINT_SLICE = Struct("EndpointSlice", [
    ("metadata", OBJECT_META), ("addressType", STR), ("endpoints", ListOf(ENDPOINT)),
    ("ports", ListOf(Struct("EndpointPort", [("name", STR), ("port", INT), ("protocol", STR)]))),
])

SHAPES = {"Pod": POD, "Namespace": NAMESPACE, "NetworkPolicy": NETWORK_POLICY,
          "Service": SERVICE, "EndpointSlice": ENDPOINT_SLICE}


def decode(kind: str, value: Any) -> Dict[str, Any]:
    """One object of ``kind`` (plain JSON from :func:`~contiv_sdn.model.shapes.loads`)
    decoded through its shape; a NetworkPolicy keeps its ``spec`` as given.

    Raises :class:`DecodeError` (Go's text) for a wrong type."""
    if not isinstance(value, dict):
        raise DecodeError(f"json: cannot unmarshal {type(value).__name__} into Go value of "
                          f"type {kind}")
    obj = SHAPES[kind].coerce(value)
    if kind == "NetworkPolicy":
        spec = value.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise DecodeError("json: cannot unmarshal non-object into Go struct field "
                              "NetworkPolicy.spec of type v1.NetworkPolicySpec")
        obj["spec"] = spec
    elif kind == "Service":
        # IntOrString: read from the plain value (ints exact), the shape only checked it is JSON
        raw_ports = (value.get("spec") or {}).get("ports") or []
        for i, (p, raw) in enumerate(zip(obj["spec"]["ports"], raw_ports)):
            tp = raw.get("targetPort") if isinstance(raw, dict) else None
            p["targetPort"] = tp
            if tp is None:
                p["targetPort"] = p["port"]
            elif isinstance(tp, bool) or not isinstance(tp, (int, str)) or tp == "":
                raise DecodeError(f"json: cannot unmarshal {type(tp).__name__} into Go struct "
                                  f"field ServicePort.spec.ports.targetPort of type "
                                  f"intstr.IntOrString (ports[{i}])")
    elif kind == "EndpointSlice":
        # ready: true, or absent (null): Go's *bool nil is "unknown", read as ready
        raw_eps = value.get("endpoints") or []
        for ep, raw in zip(obj["endpoints"], raw_eps):
            cond = raw.get("conditions") if isinstance(raw, dict) else None
            ready = cond.get("ready") if isinstance(cond, dict) else None
            ep["ready"] = ready is None or ready is True
    return obj


def object_key(kind: str, obj: Dict[str, Any]) -> str:
    """The cache key of an object: ``name`` (Namespace) or ``namespace/name``."""
    meta = obj["metadata"]
    if kind == "Namespace":
        return meta["name"]
    return f"{meta['namespace']}/{meta['name']}"


def namespace_record(obj: Dict[str, Any]) -> Dict[str, Any]:
    meta = obj["metadata"]
    return {"name": meta["name"], "labels": dict(meta["labels"])}


def netpol_record(obj: Dict[str, Any]) -> Dict[str, Any]:
    meta = obj["metadata"]
    return {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
            "spec": obj["spec"]}


def service_record(obj: Dict[str, Any]) -> Dict[str, Any]:
    """A Service as the snapshot reads it (see the module docstring)."""
    meta, spec = obj["metadata"], obj["spec"]
    cip = spec["clusterIP"]
    affinity = spec["sessionAffinity"] or "None"
    timeout = 0
    if affinity == "ClientIP":
        timeout = spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] or \
            DEFAULT_AFFINITY_TIMEOUT
    return {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
            "clusterIP": "" if cip == "None" else cip, "headless": cip == "None",
            "type": spec["type"] or "ClusterIP",
            "ports": [{"name": p["name"], "port": p["port"], "targetPort": p["targetPort"],
                       "protocol": (p["protocol"] or "TCP").upper(), "nodePort": p["nodePort"]}
                      for p in spec["ports"]],
            "selector": dict(spec["selector"]), "sessionAffinity": affinity,
            "affinityTimeout": timeout}


def slice_record(obj: Dict[str, Any]) -> Dict[str, Any]:
    """An EndpointSlice with its ready endpoints only (see the module docstring)."""
    meta = obj["metadata"]
    eps = []
    for ep in obj["endpoints"]:
        if not ep.get("ready", True) or not ep["addresses"]:
            continue
        ref = ep["targetRef"]
        pod = f"{ref['namespace'] or meta['namespace']}/{ref['name']}" \
            if ref["kind"] in ("Pod", "") and ref["name"] else ""
        eps.append({"addresses": list(ep["addresses"]), "pod": pod})
    return {"namespace": meta["namespace"], "name": meta["name"],
            "service": meta["labels"].get(L_SERVICE_NAME, ""),
            "addressType": obj["addressType"] or "IPv4", "endpoints": eps,
            "ports": [{"name": p["name"], "port": p["port"],
                       "protocol": (p["protocol"] or "TCP").upper()} for p in obj["ports"]]}


def named_ports(pod: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Port name → {port, protocol} over the pod's containers (the first wins, as the
    API server refuses duplicate names within a pod anyway)."""
    out: Dict[str, Dict[str, Any]] = {}
    for c in pod["spec"]["containers"]:
        for p in c["ports"]:
            if p["name"] and p["name"] not in out and p["containerPort"]:
                out[p["name"]] = {"port": p["containerPort"],
                                  "protocol": (p["protocol"] or "TCP").upper()}
    return out


def endpoint_update(ep: Dict[str, Any], pod: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The endpoint record with the pod's labels and named ports, or None if it already
    has them (nothing to write)."""
    labels = {k: v for k, v in (ep.get("labels") or {}).items()
              if k.startswith(CNI_LABEL_PREFIX)}
    labels.update({k: v for k, v in pod["metadata"]["labels"].items()
                   if not k.startswith(CNI_LABEL_PREFIX)})
    ports = named_ports(pod)
    meta = pod["metadata"]
    if (ep.get("labels") or {}) == labels and ep.get("namedPorts") == ports and \
            ep.get("k8sNamespace") == meta["namespace"] and ep.get("k8sPod") == meta["name"]:
        return None
    updated = dict(ep)
    updated["labels"] = labels
    updated["namedPorts"] = ports
    # a record made before the CNI path stamped these (found by the plugin's labels)
    updated["k8sNamespace"], updated["k8sPod"] = meta["namespace"], meta["name"]
    return updated


def pod_of_endpoint(ep: Dict[str, Any]) -> Optional[str]:
    """``namespace/name`` of the pod an endpoint record belongs to, or None.

    ``k8sNamespace``/``k8sPod`` are stamped at create; the CNI plugin's labels are the
    fallback for a record created by a netmaster that did not stamp them yet."""
    ns = ep.get("k8sNamespace") or (ep.get("labels") or {}).get(L_K8S_NAMESPACE)
    name = ep.get("k8sPod") or (ep.get("labels") or {}).get(L_K8S_POD)
    if not ns or not name:
        return None
    return f"{ns}/{name}"


def pod_uid_of_endpoint(ep: Dict[str, Any]) -> str:
    """The uid of the pod incarnation an endpoint record was made for ("" = unknown: a
    runtime that gave no ``K8S_POD_UID``, or a record older than the stamp)."""
    uid = ep.get("k8sPodUID") or (ep.get("labels") or {}).get(L_K8S_POD_UID) or ""
    return uid if isinstance(uid, str) else ""


def endpoint_is_of(ep: Dict[str, Any], pod: Dict[str, Any]) -> bool:
    """Is this endpoint record the sandbox of *this* pod object?  Same namespace/name,
    and, when the record knows its pod's uid, the same uid: a pod deleted and created
    again under its name is matched by name only to the new sandbox, so the old
    sandbox's record (until its CNI DEL) never takes the new pod's labels, and
    NetworkPolicy never selects it by them."""
    meta = pod["metadata"]
    if pod_of_endpoint(ep) != f"{meta['namespace']}/{meta['name']}":
        return False
    uid = pod_uid_of_endpoint(ep)
    return not uid or not meta["uid"] or uid == meta["uid"]
