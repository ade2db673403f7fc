"""A stand-in Kubernetes API server, in memory, for the lab and the tests.

**This is not kube-apiserver.**  None can be installed on these machines, so the
lab's "cluster" and the tests talk to this small Twisted HTTP server, which speaks
the real Kubernetes REST API (JSON only, plain HTTP on loopback) for the kinds
contiv-sdn uses, closely enough that the real ``kubectl`` (1.32) drives it:

* kinds: ``v1`` Namespace, Pod (with the ``status`` subresource, so a kubelet can
  write ``status.podIP``), Service, Node, ConfigMap; ``networking.k8s.io/v1``
  NetworkPolicy; ``discovery.k8s.io/v1`` EndpointSlice.  ``default``,
  ``kube-system``, ``kube-public`` and ``kube-node-lease`` exist from the start.
* discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``
  (legacy documents; kubectl falls back to them from aggregated discovery), and a
  minimal ``/openapi/v3`` (paths carrying the ``fieldValidation`` parameter and the
  patch content types, no schemas) so ``kubectl apply``/``create`` validate on the
  server side without ``--validate=false``.  ``/openapi/v2`` is 404 (kubectl asks
  for protobuf there, and does not need it once v3 answers).
* verbs: list (``labelSelector``; ``fieldSelector`` on ``metadata.name``,
  ``metadata.namespace``, ``spec.nodeName``, ``status.phase``; ``limit``/``continue``),
  get, create (``generateName`` too), update (PUT; a stale
  ``metadata.resourceVersion`` is ``409 Conflict``), patch
  (``application/merge-patch+json``, ``application/strategic-merge-patch+json`` with
  the merge keys of these kinds and the ``$patch``/``$setElementOrder``/
  ``$deleteFromPrimitiveList``/``$retainKeys`` directives kubectl emits, and
  ``application/json-patch+json``), delete (the object for Pods, Namespaces and
  Services, a ``Status`` for the rest, as kube-apiserver does; deletion is
  immediate -- no kubelet confirms graceful termination here -- and deleting a
  Namespace deletes what it holds), and a status update that keeps ``spec``
  (and a main-resource update that keeps ``status``).
* watch (``?watch=1``): a chunked stream of ``{"type","object"}`` lines,
  ``ADDED``/``MODIFIED``/``DELETED``; from ``resourceVersion`` N the events after N,
  without it (or ``0``) the current objects as ``ADDED`` first; ``BOOKMARK`` events
  every :attr:`KubeAPIServer.bookmark_interval` seconds with
  ``allowWatchBookmarks=true``; ``sendInitialEvents=true`` ends the initial
  ``ADDED`` events with the ``k8s.io/initial-events-end`` bookmark; the stream
  ends after ``timeoutSeconds``.  A resourceVersion older than the kept history
  (:attr:`KubeAPIServer.history_size` events, or everything before the last
  :meth:`KubeAPIServer.expire_history`) is answered like kube-apiserver with its
  watch cache does: HTTP 200 and one ``ERROR`` event holding a ``Status`` with
  code ``410``, reason ``Expired`` ("too old resource version: N (M)").
* metadata: ``uid``, ``resourceVersion`` from one global counter (a list's is the
  counter's value), ``creationTimestamp``, ``generation`` (bumped when ``spec``
  changes); items in a list carry no ``kind``/``apiVersion``, watch objects do.
* errors: ``Status`` objects with kube-apiserver's reason, code and message texts
  (NotFound 404, AlreadyExists 409, Conflict 409, Invalid 422, BadRequest 400,
  MethodNotAllowed 405, UnsupportedMediaType 415, Unauthorized 401).
* auth: none, or a bearer token given to the constructor.

* tables: ``kubectl get`` (and ``get -w``) asks for ``meta.k8s.io/v1`` Tables; they
  come with kube's columns per kind (a Pod's READY/STATUS/RESTARTS/AGE, IP and NODE
  with ``-o wide``; a NetworkPolicy's POD-SELECTOR...) and ``includeObject``.
* validation: ``fieldValidation=Strict`` (kubectl's default) refuses unknown
  top-level and ``metadata`` fields with kube's ``strict decoding error: unknown
  field "..."``; names, label keys and values, and a Pod's containers are checked
  as kube does (422 Invalid); ``dryRun`` stores nothing.

* Services: ``spec.clusterIP`` is allocated on create from the service CIDR
  (``service_cidr``, ``--service-cidr``, default ``10.96.0.0/12``), as
  kube-apiserver does; a clusterIP given outside it or already taken is 422
  Invalid with kube's text; ``None`` (headless) is kept.
  A ``NodePort``/``LoadBalancer`` Service's ports without a ``nodePort`` get one
  from 30000-32767 (round robin; kube picks at random); one asked for out of the
  range or taken is 422 Invalid with kube's text.
* EndpointSlices for Services with a selector, as kube-controller-manager's
  endpointslice controller writes them (``kubernetes.io/service-name`` and
  ``endpointslice.kubernetes.io/managed-by`` labels): the selected pods of the
  Service's namespace that have a ``status.podIP`` and are not being deleted, each
  ``conditions.ready`` when its phase is ``Running`` (and its ``Ready`` condition,
  when a kubelet wrote one, is not ``False``), ``targetRef`` the pod; ports named
  after the Service's ports, a named ``targetPort`` resolved per pod from its
  containers' ports (pods resolving to other numbers get another slice).  Kept in
  line after every change of a Pod or a Service (one pass per reactor turn).

Not done (not needed by kubectl's commands used here or by the watcher):
server-side apply, protobuf, managedFields, schema validation deeper than the
above, admission, garbage collection through ownerReferences, graceful Pod
deletion (a DELETE removes the Pod at once; the lab's kubelet acts on DELETED).

In-process use (tests, the lab)::

    api = KubeAPIServer(reactor, token=None, state_file=None)
    port = await api.start(port=0)          # -> the port, listening on 127.0.0.1
    api.kubeconfig("/tmp/kubeconfig")      # a kubeconfig for kubectl / the watcher
    api.objects("pods")                      # -> list of stored objects (deep copies)
    api.put_object(obj)                      # create/replace directly (e.g. lab Nodes)
    api.cut_watches()                        # drop every open watch mid-stream
    api.expire_history()                     # forget old versions: older rv -> 410
    await api.stop()                         # stop listening, drop every connection

With ``state_file`` the objects (and the resourceVersion counter) are saved to a
JSON file after each change and loaded at start, so a test can restart the server
and keep its state, or delete the file to lose it.

As a process (until SIGTERM)::

    python -m contiv_sdn.testing.kubeapi --port 6443 --kubeconfig /run/x/kubeconfig
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import ipaddress
import json
import os
import re
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.web import resource, server

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import loads

log = Logger(namespace="contiv.kubeapi")

#: kube-apiserver's default --service-node-port-range
NODE_PORTS = (30000, 32767)

VERSION_INFO = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-contiv-standin",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"}

_VERBS_NS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_VERBS_STATUS = ["get", "patch", "update"]


@dataclass(frozen=True)
class Kind:
    """One served resource: where it lives in the URL space and how it behaves."""
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short: Tuple[str, ...] = ()
    has_status: bool = False
    #: DELETE answers the object (kube-apiserver's ReturnDeletedObject) instead of a Status
    returns_deleted: bool = False
    #: the name must be a DNS-1123 label (not a subdomain)
    label_name: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS: Dict[str, Kind] = {k.plural: k for k in [
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",), True, True, True),
    Kind("", "v1", "Pod", "pods", True, ("po",), True, True),
    Kind("", "v1", "Service", "services", True, ("svc",), True, True, True),
    Kind("", "v1", "Node", "nodes", False, ("no",), True),
    Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
]}

GROUPS = {"networking.k8s.io": "v1", "discovery.k8s.io": "v1"}

#: strategic-merge-patch keys of these kinds: the path (with ``[]`` for list items)
#: of a list -> its merge key ("" for a list of primitives merged as a set).  Lists
#: not named here are replaced whole, as their Go types say.
MERGE_KEYS: Dict[str, str] = {
    "metadata.finalizers": "",
    "metadata.ownerReferences": "uid",
    "spec.containers": "name",
    "spec.initContainers": "name",
    "spec.ephemeralContainers": "name",
    "spec.containers[].ports": "containerPort",
    "spec.initContainers[].ports": "containerPort",
    "spec.containers[].env": "name",
    "spec.initContainers[].env": "name",
    "spec.containers[].volumeMounts": "mountPath",
    "spec.initContainers[].volumeMounts": "mountPath",
    "spec.containers[].volumeDevices": "devicePath",
    "spec.containers[].resizePolicy": "resourceName",
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.hostAliases": "ip",
    "spec.podCIDRs": "",
    "spec.ports": "port",
    "spec.topologySpreadConstraints": "topologyKey",
    "status.conditions": "type",
    "status.addresses": "type",
    "status.podIPs": "ip",
    "status.hostIPs": "ip",
}

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
              "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
              "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_SUB_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_QUALIFIED_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                  "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
                  "or '123-abc', regex used for validation is "
                  "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
              "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
              "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
              "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")

#: the top-level fields of each kind besides apiVersion/kind/metadata (default: spec, status)
_TOP_FIELDS = {
    "configmaps": ("data", "binaryData", "immutable"),
    "endpointslices": ("addressType", "endpoints", "ports"),
    "networkpolicies": ("spec",),
}
_META_FIELDS = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
                "generation", "creationTimestamp", "deletionTimestamp",
                "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
                "finalizers", "managedFields"}

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class APIError(Exception):
    """A refusal, carried to the reply as a kube ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str,
                 details: Optional[dict] = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            out["details"] = self.details
        return out


def _gr(kind: Kind) -> str:
    """The group-qualified resource name as kube's messages print it (``pods``,
    ``networkpolicies.networking.k8s.io``)."""
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def not_found(kind: Kind, name: str) -> APIError:
    return APIError(404, "NotFound", f'{_gr(kind)} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def already_exists(kind: Kind, name: str) -> APIError:
    return APIError(409, "AlreadyExists", f'{_gr(kind)} "{name}" already exists',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def conflict(kind: Kind, name: str) -> APIError:
    return APIError(409, "Conflict",
                    f'Operation cannot be fulfilled on {_gr(kind)} "{name}": the object has '
                    f"been modified; please apply your changes to the latest version and try "
                    f"again", {"name": name, "group": kind.group, "kind": kind.plural})


def invalid(kind: Kind, name: str, causes: List[Tuple[str, str]]) -> APIError:
    """``causes``: (field, message) pairs, message starting with the kind of fault."""
    text = "; ".join(f"{f}: {m}" for f, m in causes)
    if len(causes) > 1:
        text = "[" + ", ".join(f"{f}: {m}" for f, m in causes) + "]"
    return APIError(422, "Invalid", f'{kind.kind} "{name}" is invalid: {text}',
                    {"name": name, "group": kind.group, "kind": kind.kind,
                     "causes": [{"reason": "FieldValueInvalid" if m.startswith("Invalid value")
                                 else "FieldValueRequired", "message": m, "field": f}
                                for f, m in causes]})


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


# ---------------------------------------------------------------------------
# Selectors

@dataclass
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: Tuple[str, ...] = ()

    def matches(self, labels: Dict[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        return not has or labels[self.key] not in self.values  # "!=", "notin"


def parse_label_selector(text: str) -> List[Requirement]:
    """A ``labelSelector`` query value, with the grammar of apimachinery's
    ``labels.Parse`` (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``,
    ``a``, ``!a``, comma-separated).  Raises :class:`APIError` (400) on bad syntax."""
    reqs: List[Requirement] = []
    text = text.strip()
    i, n = 0, len(text)

    def fail(why: str) -> APIError:
        return bad_request(f"unable to parse requirement: {why}")

    while i < n:
        while i < n and text[i] == " ":
            i += 1
        neg = False
        if i < n and text[i] == "!":
            neg, i = True, i + 1
        m = re.compile(r"\s*([A-Za-z0-9./_-]+)\s*").match(text, i)
        if not m:
            raise fail(f"found '{text[i:i + 1]}', expected: identifier")
        key, i = m.group(1), m.end()
        if neg:
            reqs.append(Requirement(key, "!"))
        elif i >= n or text[i] == ",":
            reqs.append(Requirement(key, "exists"))
        else:
            m = re.compile(r"(==|=|!=|in\b|notin\b)\s*").match(text, i)
            if not m:
                raise fail(f"found '{text[i:]}', expected: in, notin, =, ==, !=")
            op, i = m.group(1), m.end()
            if op in ("in", "notin"):
                if i >= n or text[i] != "(":
                    raise fail(f"found '{text[i:i + 1]}', expected: '('")
                close = text.find(")", i)
                if close < 0:
                    raise fail("found '', expected: ')'")
                values = tuple(v.strip() for v in text[i + 1:close].split(",") if v.strip())
                reqs.append(Requirement(key, op, values))
                i = close + 1
            else:
                m = re.compile(r"([A-Za-z0-9._-]*)\s*").match(text, i)
                reqs.append(Requirement(key, "=" if op in ("=", "==") else "!=",
                                        (m.group(1),)))
                i = m.end()
        while i < n and text[i] == " ":
            i += 1
        if i < n:
            if text[i] != ",":
                raise fail(f"found '{text[i]}', expected: ',' or 'end of string'")
            i += 1
    return reqs


FIELD_PATHS = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name", ""),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace", ""),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
}


def parse_field_selector(text: str) -> List[Tuple[str, bool, str]]:
    """``fieldSelector``: ``path=value``/``path==value``/``path!=value``, comma-separated,
    over the fields kube-apiserver indexes for these kinds."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f'invalid selector: \'{text}\'; can\'t understand \'{part}\'')
        path, op, value = m.groups()
        if path not in FIELD_PATHS:
            raise bad_request(f'"{path}" is not a known field selector: only '
                              f'"metadata.name", "metadata.namespace", "spec.nodeName", '
                              f'"status.phase"')
        out.append((path, op != "!=", value))
    return out


# ---------------------------------------------------------------------------
# Patches

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any, path: str = "") -> Any:
    """Kubernetes strategic merge patch over :data:`MERGE_KEYS`, with the directives
    kubectl sends (``$patch: replace|delete|merge``, ``$setElementOrder/<list>``,
    ``$deleteFromPrimitiveList/<list>``, ``$retainKeys``)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            gone = set(json.dumps(x) for x in (v or []))
            if isinstance(out.get(name), list):
                out[name] = [x for x in out[name] if json.dumps(x) not in gone]
            continue
        sub = f"{path}.{k}" if path else k
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and sub in MERGE_KEYS:
            out[k] = _merge_list(out.get(k), v, sub, MERGE_KEYS[sub])
        elif isinstance(v, dict):
            merged = strategic_merge_patch(out.get(k), v, sub)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    for name, order in orders.items():
        if isinstance(out.get(name), list):
            out[name] = _reorder(out[name], order, MERGE_KEYS.get(
                f"{path}.{name}" if path else name, ""))
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _ident(item: Any, key: str) -> str:
    return json.dumps(item.get(key) if key and isinstance(item, dict) else item, sort_keys=True)


def _merge_list(current: Any, patch: list, path: str, key: str) -> list:
    items = list(current) if isinstance(current, list) else []
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch
                if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    for p in patch:
        if not key:  # a set of primitives
            if _ident(p, "") not in {_ident(x, "") for x in items}:
                items.append(copy.deepcopy(p))
            continue
        if not isinstance(p, dict):
            raise bad_request(f"unable to find api field in struct for the list {path}")
        where = next((i for i, x in enumerate(items) if _ident(x, key) == _ident(p, key)), None)
        if p.get("$patch") == "delete":
            if where is not None:
                items.pop(where)
            continue
        if where is None:
            items.append(strategic_merge_patch({}, p, path + "[]"))
        else:
            items[where] = strategic_merge_patch(items[where], p, path + "[]")
    return items


def _reorder(items: list, order: list, key: str) -> list:
    rank = {_ident(o, key): i for i, o in enumerate(order)}
    ordered = sorted((x for x in items if _ident(x, key) in rank),
                     key=lambda x: rank[_ident(x, key)])
    return ordered + [x for x in items if _ident(x, key) not in rank]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise bad_request("json patch must be an array of operations")
    doc = copy.deepcopy(doc)

    def split(ptr: str) -> List[str]:
        if ptr == "":
            return []
        if not ptr.startswith("/"):
            raise bad_request(f"invalid JSON pointer: {ptr!r}")
        return [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]

    def walk(parts: List[str]) -> Tuple[Any, str]:
        cur = doc
        for p in parts[:-1]:
            if isinstance(cur, list):
                cur = cur[int(p)]
            elif isinstance(cur, dict) and p in cur:
                cur = cur[p]
            else:
                raise APIError(422, "Invalid", f"the server rejected our request due to an "
                               f"error in our request: missing path /{'/'.join(parts)}")
        return cur, parts[-1]

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("json patch operation needs 'op' and 'path'")
        kind, parts = op["op"], split(op["path"])
        try:
            if kind == "test":
                cur, last = walk(parts) if parts else (None, None)
                value = doc if not parts else (cur[int(last)] if isinstance(cur, list)
                                               else cur[last])
                if value != op.get("value"):
                    raise APIError(422, "Invalid", f"testing value {op['path']} failed")
                continue
            if kind in ("move", "copy"):
                src = split(op["from"])
                cur, last = walk(src)
                value = cur[int(last)] if isinstance(cur, list) else cur[last]
                if kind == "move":
                    if isinstance(cur, list):
                        cur.pop(int(last))
                    else:
                        del cur[last]
                kind, op = "add", {"value": copy.deepcopy(value)}
            if not parts:
                doc = copy.deepcopy(op.get("value"))
                continue
            cur, last = walk(parts)
            if kind == "add":
                if isinstance(cur, list):
                    cur.insert(len(cur) if last == "-" else int(last),
                               copy.deepcopy(op.get("value")))
                else:
                    cur[last] = copy.deepcopy(op.get("value"))
            elif kind == "remove":
                if isinstance(cur, list):
                    cur.pop(int(last))
                else:
                    del cur[last]
            elif kind == "replace":
                if isinstance(cur, list):
                    cur[int(last)] = copy.deepcopy(op.get("value"))
                else:
                    if last not in cur:
                        raise KeyError(last)
                    cur[last] = copy.deepcopy(op.get("value"))
            else:
                raise bad_request(f"unexpected json patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise APIError(422, "Invalid", f"the server rejected our request due to an error "
                           f"in our request: {kind} operation does not apply: doc is missing "
                           f"path: \"{op.get('path')}\"")
    return doc


# ---------------------------------------------------------------------------
# The store and its watchers

@dataclass
class _Watch:
    kind: Kind
    namespace: Optional[str]
    labels: List[Requirement]
    fields: List[Tuple[str, bool, str]]
    request: server.Request
    bookmarks: bool
    #: the client asked for ``meta.k8s.io/v1`` Tables (kubectl get -w): how to include rows
    table: Optional[str] = None
    calls: List[Any] = field(default_factory=list)
    done: bool = False
    headers_sent: bool = False

    def selects(self, obj: dict) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return _selected(obj, self.labels, self.fields)


def _selected(obj: dict, labels: List[Requirement],
              fields: List[Tuple[str, bool, str]]) -> bool:
    got = obj.get("metadata", {}).get("labels") or {}
    if not all(r.matches(got) for r in labels):
        return False
    return all((FIELD_PATHS[p](obj) == v) == eq for p, eq, v in fields)


class KubeAPIServer:
    """The stand-in API server (see the module docstring for what it serves)."""

    #: seconds between BOOKMARK events on a watch that allows them (kube: ~60 s)
    bookmark_interval: float = 60.0
    #: how many past events a watch can resume from
    history_size: int = 10000
    #: a watch without timeoutSeconds ends after this long (kube: 30-60 min)
    default_watch_timeout: float = 1800.0

    def __init__(self, reactor: Any = None, token: Optional[str] = None,
                 state_file: Optional[str] = None, service_cidr: str = "10.96.0.0/12"):
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.token = token
        self.state_file = state_file
        self.rv = 0
        self._store: Dict[str, Dict[Tuple[str, str], dict]] = {p: {} for p in KINDS}
        self._history: Deque[Tuple[int, str, str, dict]] = deque()
        self._compacted = 0  # events after this rv are all in _history
        self._watches: List[_Watch] = []
        self._port = None
        self._site: Optional[_Site] = None
        self._save_call = None
        self._service_ips = 10
        #: the last nodePort given, as an offset in NODE_PORTS (round robin)
        self._node_port = -1
        #: where Services' clusterIPs come from (kube-apiserver --service-cluster-ip-range)
        self.service_cidr = ipaddress.IPv4Network(service_cidr, strict=False)
        self._slices_call = None
        self.port: Optional[int] = None
        self._load()
        for ns in INITIAL_NAMESPACES:
            if ("", ns) not in self._store["namespaces"]:
                self.create("namespaces", {"metadata": {"name": ns}})

    # -- lifecycle -----------------------------------------------------------

    async def start(self, port: int = 0, interface: str = "127.0.0.1") -> int:
        """Listen on ``interface:port`` (0: any free port); returns the port."""
        self._site = _Site(_Root(self))
        self._site.noisy = False
        self._port = await TCP4ServerEndpoint(self.reactor, port,
                                              interface=interface).listen(self._site)
        self.port = self._port.getHost().port
        self.interface = interface
        log.info("kubernetes API stand-in listening on {interface}:{port}",
                 interface=interface, port=self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection (what a stopping apiserver does);
        the state file, if any, is written first.  Stopping twice is harmless."""
        if self._slices_call is not None and self._slices_call.active():
            self._slices_call.cancel()
        self._slices_call = None
        self._save_now()
        if self._site is None:
            return
        if self._port is not None:
            port, self._port = self._port, None
            await port.stopListening()
        for w in list(self._watches):
            self._end_watch(w, abort=True)
        site, self._site = self._site, None
        for proto in list(site.open):
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.abortConnection()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: str, namespace: str = "default") -> str:
        """Write a kubeconfig naming this server (and the bearer token, if any);
        returns ``path``."""
        user: Dict[str, Any] = {"token": self.token} if self.token else {}
        doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "contiv-lab", "cluster": {"server": self.url}}],
               "users": [{"name": "contiv-lab-admin", "user": user}],
               "contexts": [{"name": "contiv-lab", "context": {
                   "cluster": "contiv-lab", "user": "contiv-lab-admin",
                   "namespace": namespace}}],
               "current-context": "contiv-lab"}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path

    # -- test hooks ------------------------------------------------------------

    def objects(self, plural: str, namespace: Optional[str] = None) -> List[dict]:
        """Stored objects of a kind (plural, e.g. ``pods``), as deep copies."""
        kind = KINDS[plural]
        return [self._full(kind, o) for (ns, _), o in sorted(self._store[plural].items())
                if namespace is None or ns == namespace]

    def put_object(self, obj: dict) -> dict:
        """Create or replace an object directly (e.g. the lab's Nodes), with the same
        checks and events as the API; returns the stored object."""
        kind = self._kind_of(obj)
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", "") if kind.namespaced else "", meta.get("name", ""))
        if key in self._store[kind.plural]:
            body = copy.deepcopy(obj)
            body.setdefault("metadata", {}).pop("resourceVersion", None)
            return self.update(kind.plural, body, key[0], key[1], subresource=None,
                               keep_status=False)
        return self.create(kind.plural, obj, key[0] or None)

    def cut_watches(self) -> int:
        """Drop every open watch connection mid-stream (no final chunk); returns how
        many were cut."""
        cut = list(self._watches)
        for w in cut:
            self._end_watch(w, abort=True)
        log.info("cut {n} watches", n=len(cut))
        return len(cut)

    def expire_history(self) -> None:
        """Forget every past event: a watch from any resourceVersion before now gets
        the ``410 Expired`` ERROR event (as after an etcd compaction)."""
        self._history.clear()
        self._compacted = self.rv

    # -- state file ----------------------------------------------------------

    def _load(self) -> None:
        if not self.state_file or not os.path.exists(self.state_file):
            return
        with open(self.state_file, "rb") as f:
            doc = loads(f.read())
        self.rv = int(doc.get("resourceVersion", 0))
        self._compacted = self.rv
        self._service_ips = int(doc.get("serviceIPs", 10))
        for plural, objs in doc.get("objects", {}).items():
            for obj in objs:
                meta = obj["metadata"]
                self._store[plural][(meta.get("namespace", ""), meta["name"])] = obj

    def _save_soon(self) -> None:
        if self.state_file and self._save_call is None:
            self._save_call = self.reactor.callLater(0.05, self._save_now)

    def _save_now(self) -> None:
        if self._save_call is not None:
            if self._save_call.active():
                self._save_call.cancel()
            self._save_call = None
        if not self.state_file:
            return
        objs = {p: list(self._store[p].values()) for p in KINDS}
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"resourceVersion": self.rv, "serviceIPs": self._service_ips,
                       "objects": objs}, f)
        os.replace(tmp, self.state_file)

    # -- the store -----------------------------------------------------------

    def _kind_of(self, obj: dict) -> Kind:
        for k in KINDS.values():
            if k.kind == obj.get("kind") and k.api_version == obj.get("apiVersion"):
                return k
        raise ValueError(f"not a served kind: {obj.get('apiVersion')}/{obj.get('kind')}")

    def _full(self, kind: Kind, obj: dict) -> dict:
        out = {"kind": kind.kind, "apiVersion": kind.api_version}
        out.update(copy.deepcopy(obj))
        return out

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _event(self, kind: Kind, type_: str, obj: dict) -> None:
        full = self._full(kind, obj)
        self._history.append((self.rv, kind.plural, type_, full))
        while len(self._history) > self.history_size:
            self._compacted = self._history.popleft()[0]
        line = json.dumps({"type": type_, "object": full}).encode() + b"\n"
        if kind.plural in ("pods", "services"):
            self._slices_soon()
        for w in list(self._watches):
            if w.kind is kind and w.selects(full):
                self._send(w, line if w.table is None else self._table_event(w, type_, full))
        self._save_soon()

    def _table_event(self, w: _Watch, type_: str, obj: dict) -> bytes:
        """A watch event as a one-row Table; the column definitions in the first only,
        as kube-apiserver sends them."""
        table = to_table(w.kind, [obj], str(self.rv), w.table or "Metadata",
                         headers=not w.headers_sent)
        w.headers_sent = True
        return json.dumps({"type": type_, "object": table}).encode() + b"\n"

    def get(self, plural: str, namespace: str, name: str) -> dict:
        kind = KINDS[plural]
        obj = self._store[plural].get((namespace if kind.namespaced else "", name))
        if obj is None:
            raise not_found(kind, name)
        return self._full(kind, obj)

    def _check_namespace(self, kind: Kind, namespace: Optional[str]) -> str:
        if not kind.namespaced:
            return ""
        if not namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        if ("", namespace) not in self._store["namespaces"]:
            raise not_found(KINDS["namespaces"], namespace)
        if self._store["namespaces"][("", namespace)].get("status", {}).get("phase") == \
                "Terminating":
            raise APIError(403, "Forbidden", f'{_gr(kind)} is forbidden: unable to create new '
                           f'content in namespace {namespace} because it is being terminated')
        return namespace

    def _validate(self, kind: Kind, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        causes: List[Tuple[str, str]] = []
        if not name:
            causes.append(("metadata.name", "Required value: name or generateName is required"))
        elif len(name) > (63 if kind.label_name else 253) or not (
                _DNS1123_LABEL if kind.label_name else _DNS1123_SUB).match(name):
            causes.append(("metadata.name", f'Invalid value: "{name}": '
                           + (_LABEL_MSG if kind.label_name else _SUB_MSG)))
        for field_name, value in ((meta.get("labels") or {}).items()):
            prefix, _, lname = field_name.rpartition("/")
            if (prefix and not _DNS1123_SUB.match(prefix)) or not _QUALIFIED.match(lname) or \
                    len(lname) > 63:
                causes.append(("metadata.labels", f'Invalid value: "{field_name}": '
                               + _QUALIFIED_MSG))
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                causes.append(("metadata.labels", f'Invalid value: "{value}": ' + _VALUE_MSG))
        spec = obj.get("spec") or {}
        if kind.plural == "pods":
            containers = spec.get("containers") or []
            if not containers:
                causes.append(("spec.containers", "Required value"))
            for i, c in enumerate(containers):
                for req in ("name", "image"):
                    if not (isinstance(c, dict) and c.get(req)):
                        causes.append((f"spec.containers[{i}].{req}", "Required value"))
        if causes:
            raise invalid(kind, name, causes)

    def _strict(self, kind: Kind, obj: dict) -> None:
        """``fieldValidation=Strict`` for the top level and ``metadata`` (the server
        knows no deeper schema): kube's text, ``strict decoding error: unknown field``."""
        top = set(_TOP_FIELDS.get(kind.plural, ("spec", "status")))
        top |= {"apiVersion", "kind", "metadata"}
        unknown = [f'unknown field "{k}"' for k in obj if k not in top]
        unknown += [f'unknown field "metadata.{k}"' for k in obj.get("metadata") or {}
                    if k not in _META_FIELDS]
        if unknown:
            raise bad_request("strict decoding error: " + ", ".join(unknown))

    def _defaults(self, kind: Kind, obj: dict) -> None:
        meta = obj["metadata"]
        if kind.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj.setdefault("status", {})["phase"] = "Active"
        elif kind.plural == "pods":
            spec = obj["spec"]
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
            for c in spec.get("containers", []):
                for p in c.get("ports") or []:
                    p.setdefault("protocol", "TCP")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
            obj["status"].setdefault("qosClass", "BestEffort")
        elif kind.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            spec["clusterIP"] = self._cluster_ip(kind, obj["metadata"]["name"],
                                                 spec.get("clusterIP"))
            if spec["clusterIP"] != "None":
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            if spec["type"] in ("NodePort", "LoadBalancer"):
                self._node_ports(kind, obj["metadata"]["name"], spec.get("ports") or [])
            obj.setdefault("status", {}).setdefault("loadBalancer", {})
        elif kind.plural == "networkpolicies":
            spec = obj.setdefault("spec", {})
            spec.setdefault("podSelector", {})
            if "policyTypes" not in spec:
                types = ["Ingress"]
                if spec.get("egress"):
                    types.append("Egress")
                spec["policyTypes"] = types
            for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
                for p in (rule or {}).get("ports") or []:
                    p.setdefault("protocol", "TCP")

    def _cluster_ip(self, kind: Kind, name: str, want: Any) -> str:
        """A new Service's clusterIP: the one asked for (in the service CIDR and free,
        else 422 as kube-apiserver answers), ``None`` for headless, or the next free
        address of the CIDR (round robin from the last one given, as kube's allocator
        avoids reusing a just-freed address)."""
        used = {o.get("spec", {}).get("clusterIP") for o in self._store["services"].values()}
        net = self.service_cidr
        if want == "None":
            return "None"
        if want not in (None, ""):
            try:
                ip = ipaddress.IPv4Address(str(want))
            except ValueError:
                raise invalid(kind, name, [("spec.clusterIPs[0]", f'Invalid value: "{want}": '
                                            f"must be a valid IP address, (e.g. 10.9.8.7 or "
                                            f"2001:db8::ffff)")]) from None
            if ip not in net or ip in (net.network_address, net.broadcast_address):
                raise invalid(kind, name, [("spec.clusterIPs", f'Invalid value: []string{{"{ip}"}}: '
                                            f"failed to allocate IP {ip}: provided IP is not in "
                                            f"the valid range. The range of valid IPs is {net}")])
            if str(ip) in used:
                raise invalid(kind, name, [("spec.clusterIPs", f'Invalid value: []string{{"{ip}"}}: '
                                            f"failed to allocate IP {ip}: provided IP is already "
                                            f"allocated")])
            return str(ip)
        size = net.num_addresses - 2
        for _ in range(size):
            self._service_ips = self._service_ips % size + 1
            ip = str(net.network_address + self._service_ips)
            if ip not in used:
                return ip
        raise APIError(500, "InternalError", "Internal error occurred: failed to allocate a "
                       f"serviceIP: range is full ({net})")

    def _node_ports(self, kind: Kind, name: str, ports: List[dict]) -> None:
        """Give every port of a new NodePort/LoadBalancer Service without a ``nodePort``
        one from NODE_PORTS (kube-apiserver's default --service-node-port-range), as
        kube-apiserver does: a client (kubectl, a watcher) sees the port the Service
        answers on.  A nodePort asked for must be in the range and free, else 422 with
        kube's text.  Free ports are taken round robin (kube picks at random), so tests
        get predictable ones."""
        used = {p.get("nodePort") for o in self._store["services"].values()
                for p in (o.get("spec", {}).get("ports") or [])}
        lo, hi = NODE_PORTS
        for i, p in enumerate(ports):
            want = p.get("nodePort")
            if want in (None, 0):
                continue
            field = f"spec.ports[{i}].nodePort"
            if not isinstance(want, int) or isinstance(want, bool) or not lo <= want <= hi:
                raise invalid(kind, name, [(field, f"Invalid value: {want}: provided port is not in the "
                                                   f"valid range. The range of valid ports is {lo}-{hi}")])
            if want in used:
                raise invalid(kind, name, [(field, f"Invalid value: {want}: provided port is already "
                                                   f"allocated")])
            used.add(want)
        size = hi - lo + 1
        for p in ports:
            if p.get("nodePort") not in (None, 0):
                continue
            for _ in range(size):
                self._node_port = (self._node_port + 1) % size
                if lo + self._node_port not in used:
                    p["nodePort"] = lo + self._node_port
                    used.add(p["nodePort"])
                    break
            else:
                raise APIError(500, "InternalError", "Internal error occurred: failed to allocate a "
                               f"nodePort: range is full ({lo}-{hi})")

    # -- the endpointslice controller (kube-controller-manager's, in small) ----

    def _slices_soon(self) -> None:
        if self._slices_call is None:
            self._slices_call = self.reactor.callLater(0, self._sync_slices)

    def _sync_slices(self) -> None:
        """Every managed EndpointSlice in line with the Services and Pods (module doc)."""
        self._slices_call = None
        want: Dict[Tuple[str, str], dict] = {}
        for (ns, name), svc in self._store["services"].items():
            spec = svc.get("spec") or {}
            sel = spec.get("selector") or {}
            if not sel or spec.get("type") == "ExternalName":
                continue
            groups: Dict[Tuple, List[dict]] = {}
            for (pns, _), pod in sorted(self._store["pods"].items()):
                meta = pod.get("metadata") or {}
                labels = meta.get("labels") or {}
                ip = (pod.get("status") or {}).get("podIP")
                if pns != ns or not ip or meta.get("deletionTimestamp") or \
                        any(labels.get(k) != v for k, v in sel.items()):
                    continue
                ports = tuple(_slice_port(p, pod) for p in spec.get("ports") or [])
                if any(p is None for p in ports):
                    continue  # a named targetPort this pod does not have: not an endpoint
                groups.setdefault(ports, []).append(pod)
            for ports, pods in sorted(groups.items(), key=lambda kv: repr(kv[0])):
                digest = hashlib.sha1(repr(ports).encode()).hexdigest()[:5]
                sname = f"{name[:50]}-{digest}"
                want[(ns, sname)] = {
                    "metadata": {"name": sname, "namespace": ns, "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by":
                            "endpointslice-controller.k8s.io"},
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                                             "name": name, "uid": svc["metadata"]["uid"],
                                             "controller": True,
                                             "blockOwnerDeletion": True}]},
                    "addressType": "IPv4",
                    "endpoints": [_slice_endpoint(p) for p in pods],
                    "ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in ports]}
        managed = [key for key, o in self._store["endpointslices"].items()
                   if (o["metadata"].get("labels") or {}).get(
                       "endpointslice.kubernetes.io/managed-by") ==
                   "endpointslice-controller.k8s.io"]
        for key in managed:
            if key not in want:
                self.delete("endpointslices", key[0], key[1])
        for key, body in want.items():
            old = self._store["endpointslices"].get(key)
            if old is None:
                self.create("endpointslices", body, key[0])
            elif {k: old.get(k) for k in ("addressType", "endpoints", "ports")} != \
                    {k: body[k] for k in ("addressType", "endpoints", "ports")}:
                self.update("endpointslices", body, key[0], key[1])

    def create(self, plural: str, body: dict, namespace: Optional[str] = None,
               dry_run: bool = False, strict: bool = False) -> dict:
        """Store a new object (the POST path); returns it.  ``dry_run``: check and
        default it, store nothing; ``strict``: unknown top-level or metadata fields
        are refused (kubectl's ``fieldValidation=Strict``)."""
        kind = KINDS[plural]
        obj = copy.deepcopy(body)
        if not isinstance(obj, dict):
            raise bad_request("the body of the request was in an unknown format")
        obj.setdefault("kind", kind.kind)
        obj.setdefault("apiVersion", kind.api_version)
        if obj["kind"] != kind.kind or obj["apiVersion"] != kind.api_version:
            raise bad_request(f"the API version in the data ({obj['apiVersion']}) does not "
                              f"match the expected API version ({kind.api_version})"
                              if obj["apiVersion"] != kind.api_version else
                              f"the kind in the data ({obj['kind']}) does not match the "
                              f"expected kind ({kind.kind})")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if kind.namespaced:
            body_ns = meta.get("namespace") or namespace
            if namespace and body_ns != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = self._check_namespace(kind, body_ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if kind.plural in ("pods", "services"):
            obj.setdefault("spec", {})
        if strict:
            self._strict(kind, obj)
        self._validate(kind, obj)
        key = (meta.get("namespace", ""), meta["name"])
        if key in self._store[plural]:
            raise already_exists(kind, meta["name"])
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "selfLink", "managedFields"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if "spec" in obj and kind.plural not in ("namespaces",):
            meta["generation"] = 1
        self._defaults(kind, obj)
        if dry_run:
            return obj
        meta["resourceVersion"] = self._bump()
        del obj["kind"], obj["apiVersion"]
        self._store[plural][key] = obj
        self._event(kind, "ADDED", obj)
        return self._full(kind, obj)

    def update(self, plural: str, body: dict, namespace: str, name: str,
               subresource: Optional[str] = None, keep_status: bool = True,
               dry_run: bool = False, strict: bool = False) -> dict:
        """Replace an object (the PUT path, and the end of every patch).  A write to
        the ``status`` subresource changes only ``status``; one to the object keeps
        the stored ``status`` (unless ``keep_status`` is false: :meth:`put_object`)."""
        kind = KINDS[plural]
        ns = namespace if kind.namespaced else ""
        old = self._store[plural].get((ns, name))
        if old is None:
            raise not_found(kind, name)
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        obj.setdefault("kind", kind.kind)
        obj.setdefault("apiVersion", kind.api_version)
        if obj["kind"] != kind.kind or obj["apiVersion"] != kind.api_version:
            raise bad_request(f"the kind/apiVersion in the data ({obj['apiVersion']}/"
                              f"{obj['kind']}) does not match {kind.api_version}/{kind.kind}")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if meta.get("name", name) != name:
            raise bad_request(f'the name of the object ({meta.get("name")}) does not match '
                              f'the name on the URL ({name})')
        if kind.namespaced and meta.get("namespace", ns) != ns:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        meta.pop("managedFields", None)
        if strict:
            self._strict(kind, obj)
        if subresource == "status":
            # as kube's status strategies (ResetObjectMetaForStatus): only status changes
            obj = {k: copy.deepcopy(v) for k, v in old.items() if k != "status"}
            obj.update(kind=kind.kind, apiVersion=kind.api_version)
            if "status" in body:
                obj["status"] = copy.deepcopy(body["status"])
            meta = obj["metadata"]
        elif kind.has_status and keep_status:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        if kind.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = copy.deepcopy(old.get("spec", {}))
        self._validate(kind, obj)
        if kind.plural == "services":
            obj.setdefault("spec", {})
            for k in ("clusterIP", "clusterIPs"):
                if k in old.get("spec", {}) and not obj["spec"].get(k):
                    obj["spec"][k] = old["spec"][k]
        del obj["kind"], obj["apiVersion"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if obj == old:
            return self._full(kind, old)  # no change: no new resourceVersion, no event
        if "generation" in meta and obj.get("spec") != old.get("spec"):
            meta["generation"] = int(meta["generation"]) + 1
        if dry_run:
            return self._full(kind, obj)
        meta["resourceVersion"] = self._bump()
        self._store[plural][(ns, name)] = obj
        self._event(kind, "MODIFIED", obj)
        return self._full(kind, obj)

    def patch(self, plural: str, namespace: str, name: str, content_type: str, patch: Any,
              subresource: Optional[str] = None, dry_run: bool = False,
              strict: bool = False) -> dict:
        """Apply a merge, strategic-merge or JSON patch (by ``content_type``), then
        update as :meth:`update` does."""
        kind = KINDS[plural]
        current = self.get(plural, namespace, name)
        if content_type == "application/merge-patch+json":
            new = merge_patch(current, patch)
        elif content_type == "application/strategic-merge-patch+json":
            if kind.group not in ("", "networking.k8s.io", "discovery.k8s.io"):
                raise APIError(415, "UnsupportedMediaType",
                               "strategic merge patch is not supported for this kind")
            if not isinstance(patch, dict):
                raise bad_request("strategic merge patch must be a JSON object")
            new = strategic_merge_patch(current, patch)
        elif content_type == "application/json-patch+json":
            new = json_patch(current, patch)
        else:
            raise APIError(415, "UnsupportedMediaType",
                           'the body of the request was in an unknown format - accepted media '
                           'types include: application/json-patch+json, '
                           'application/merge-patch+json, '
                           'application/strategic-merge-patch+json')
        if not isinstance(new, dict):
            raise bad_request("the patch did not produce an object")
        rv = (patch.get("metadata") or {}).get("resourceVersion") \
            if isinstance(patch, dict) and isinstance(patch.get("metadata"), dict) else None
        new.setdefault("metadata", {})
        if rv is None:
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.update(plural, new, namespace, name, subresource, dry_run=dry_run,
                           strict=strict)

    def delete(self, plural: str, namespace: str, name: str,
               preconditions: Optional[dict] = None, dry_run: bool = False) -> dict:
        """Remove an object; returns what kube-apiserver answers (the object or a
        ``Status``)."""
        kind = KINDS[plural]
        ns = namespace if kind.namespaced else ""
        old = self._store[plural].get((ns, name))
        if old is None:
            raise not_found(kind, name)
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise conflict(kind, name)
        if pre.get("resourceVersion") and pre["resourceVersion"] != \
                old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        if kind.plural == "namespaces":
            if name in ("default", "kube-system", "kube-public"):
                raise APIError(403, "Forbidden", f'namespaces "{name}" is forbidden: this '
                               f'namespace may not be deleted')
        if dry_run:
            return self._deleted_reply(kind, old)
        if kind.plural == "namespaces":
            for p, k in KINDS.items():
                if k.namespaced:
                    for key in [key for key in self._store[p] if key[0] == name]:
                        self.delete(p, name, key[1])
            old = copy.deepcopy(old)
            old["status"] = {"phase": "Terminating"}
            old["metadata"]["deletionTimestamp"] = _now()
        del self._store[plural][(ns, name)]
        self._bump()
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._event(kind, "DELETED", gone)
        return self._deleted_reply(kind, gone)

    def delete_collection(self, plural: str, namespace: Optional[str],
                          labels: List[Requirement], fields: List[Tuple[str, bool, str]],
                          dry_run: bool = False) -> dict:
        """DELETE on a collection: every selected object; kube answers a Success Status."""
        for obj in self.list(plural, namespace, labels, fields)["items"]:
            meta = obj["metadata"]
            self.delete(plural, meta.get("namespace", ""), meta["name"], dry_run=dry_run)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def _deleted_reply(self, kind: Kind, old: dict) -> dict:
        name = old["metadata"]["name"]
        if kind.returns_deleted:
            return self._full(kind, old)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": kind.group, "kind": kind.plural,
                            "uid": old["metadata"]["uid"]}}

    def list(self, plural: str, namespace: Optional[str], labels: List[Requirement],
             fields: List[Tuple[str, bool, str]], limit: int = 0, cont: str = "") -> dict:
        kind = KINDS[plural]
        start = ""
        if cont:
            try:
                start = json.loads(base64.urlsafe_b64decode(cont.encode()))["start"]
            except (ValueError, KeyError, TypeError):
                raise APIError(410, "Expired", "The provided continue parameter is too old "
                               "to display a consistent list result. You can start a new list "
                               "without the continue parameter.")
        items: List[dict] = []
        last_key: Optional[Tuple[str, str]] = None
        more = ""
        for key in sorted(self._store[plural]):
            obj = self._store[plural][key]
            if namespace is not None and kind.namespaced and key[0] != namespace:
                continue
            if start and "/".join(key) <= start:
                continue
            if not _selected(obj, labels, fields):
                continue
            if limit and len(items) >= limit and last_key is not None:
                more = base64.urlsafe_b64encode(json.dumps(
                    {"start": "/".join(last_key)}).encode()).decode()
                break
            items.append(copy.deepcopy(obj))
            last_key = key
        meta: Dict[str, Any] = {"resourceVersion": str(self.rv)}
        if more:
            meta["continue"] = more
        return {"kind": kind.kind + "List", "apiVersion": kind.api_version,
                "metadata": meta, "items": items}

    # -- watches ---------------------------------------------------------------

    def watch(self, request: server.Request, plural: str, namespace: Optional[str],
              labels: List[Requirement], fields: List[Tuple[str, bool, str]],
              rv: str, bookmarks: bool, timeout: Optional[float],
              initial_events: Optional[bool], table: Optional[str] = None) -> None:
        """Serve a watch on ``request`` (see the module docstring for the protocol)."""
        kind = KINDS[plural]
        w = _Watch(kind, namespace, labels, fields, request, bookmarks, table)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache, private")
        self._watches.append(w)
        request.notifyFinish().addBoth(lambda _: self._forget(w))
        send_initial = initial_events if initial_events is not None else rv in ("", "0")
        if rv not in ("", "0"):
            try:
                since = int(rv)
            except ValueError:
                self._watches.remove(w)
                raise bad_request(f'invalid resource version: "{rv}"')
            if since < self._compacted:
                self._send(w, json.dumps({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f"too old resource version: {since} ({self._compacted + 1})",
                    "reason": "Expired", "code": 410}}).encode() + b"\n")
                self._end_watch(w)
                return
            if not send_initial:
                for ev_rv, ev_plural, type_, obj in list(self._history):
                    if ev_rv > since and ev_plural == plural and w.selects(obj):
                        self._send(w, json.dumps({"type": type_, "object": obj}).encode()
                                   + b"\n" if w.table is None else
                                   self._table_event(w, type_, obj))
        if send_initial:
            for key in sorted(self._store[plural]):
                obj = self._full(kind, self._store[plural][key])
                if w.selects(obj):
                    self._send(w, json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n"
                               if w.table is None else self._table_event(w, "ADDED", obj))
            if initial_events:
                self._send(w, self._bookmark(kind, initial_end=True))
        if not w.done:
            request.write(b"")  # headers now: the client's watch has started
            w.calls.append(self.reactor.callLater(
                timeout if timeout is not None else self.default_watch_timeout,
                self._end_watch, w))
            if bookmarks and self.bookmark_interval > 0:
                self._schedule_bookmark(w)

    def _bookmark(self, kind: Kind, initial_end: bool = False) -> bytes:
        meta: Dict[str, Any] = {"resourceVersion": str(self.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return json.dumps({"type": "BOOKMARK", "object": {
            "kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}}).encode() + b"\n"

    def _schedule_bookmark(self, w: _Watch) -> None:
        def tick() -> None:
            if w.done:
                return
            self._send(w, self._bookmark(w.kind))
            w.calls.append(self.reactor.callLater(self.bookmark_interval, tick))
        w.calls.append(self.reactor.callLater(self.bookmark_interval, tick))

    def _send(self, w: _Watch, line: bytes) -> None:
        if not w.done:
            w.request.write(line)

    def _forget(self, w: _Watch) -> None:
        w.done = True
        for c in w.calls:
            if c.active():
                c.cancel()
        if w in self._watches:
            self._watches.remove(w)

    def _end_watch(self, w: _Watch, abort: bool = False) -> None:
        if w.done:
            return
        self._forget(w)
        if abort:
            transport = w.request.channel.transport if w.request.channel else None
            if transport is not None:
                transport.abortConnection()
        else:
            w.request.finish()


# ---------------------------------------------------------------------------
# HTTP

def _slice_port(sport: dict, pod: dict) -> Optional[Tuple[str, int, str]]:
    """An EndpointSlice port of a Service port for one pod: the targetPort, resolved
    by name among the pod's container ports when it is a name (None: the pod has no
    such port)."""
    proto = sport.get("protocol") or "TCP"
    target = sport.get("targetPort", sport.get("port"))
    if isinstance(target, str) and not target.isdigit():
        for c in (pod.get("spec") or {}).get("containers") or []:
            for cp in c.get("ports") or []:
                if cp.get("name") == target and (cp.get("protocol") or "TCP") == proto:
                    target = cp.get("containerPort")
                    break
            if not isinstance(target, str):
                break
        if isinstance(target, str):
            return None
    return (sport.get("name") or "", int(target), proto)


def _slice_endpoint(pod: dict) -> dict:
    meta, status = pod["metadata"], pod.get("status") or {}
    ready = status.get("phase") == "Running" and not any(
        c.get("type") == "Ready" and c.get("status") == "False"
        for c in status.get("conditions") or [])
    ep = {"addresses": [status["podIP"]],
          "conditions": {"ready": ready, "serving": ready, "terminating": False},
          "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                        "uid": meta["uid"]}}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    return ep


def _age(stamp: str) -> str:
    """kube's HumanDuration, near enough: ``45s``, ``3m20s``, ``5h``, ``12d``."""
    try:
        then = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except (ValueError, TypeError):
        return "<unknown>"
    s = max(0, int(time.time() - then))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d" if d < 730 else f"{d // 365}y"


def _selector_text(sel: Any) -> str:
    if not isinstance(sel, dict):
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin"}.get(e.get("operator"))
        if op:
            parts.append(f"{e.get('key')} {op} ({','.join(e.get('values') or [])})")
        else:
            parts.append(("!" if e.get("operator") == "DoesNotExist" else "") + str(e.get("key")))
    return ",".join(parts) or "<none>"


def _pod_cells(o: dict) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    statuses = st.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    phase = "Terminating" if o["metadata"].get("deletionTimestamp") else st.get("phase", "")
    return [f"{ready}/{len(spec.get('containers') or [])}", phase,
            sum(int(c.get("restartCount", 0)) for c in statuses),
            st.get("podIP") or "<none>", spec.get("nodeName") or "<none>", "<none>", "<none>"]


def _node_cells(o: dict) -> list:
    st = o.get("status") or {}
    ready = [c for c in st.get("conditions") or [] if c.get("type") == "Ready"]
    status = "Unknown" if not ready else "Ready" if ready[0].get("status") == "True" \
        else "NotReady"
    ips = [a.get("address") for a in st.get("addresses") or [] if a.get("type") == "InternalIP"]
    return [status, "<none>", (st.get("nodeInfo") or {}).get("kubeletVersion", ""),
            ips[0] if ips else "<none>"]


def _service_cells(o: dict) -> list:
    spec = o.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                     for p in spec.get("ports") or []) or "<none>"
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", "<none>", ports,
            _selector_text({"matchLabels": spec.get("selector")}) if spec.get("selector")
            else "<none>"]


#: the columns kube-apiserver prints for each kind (after Name, with Age placed as kube
#: places it): (name, type, priority, cell function); priority 1 = ``-o wide`` only
_COLUMNS: Dict[str, Tuple[List[Tuple[str, str, int]], int, Callable[[dict], list]]] = {
    "pods": ([("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "integer", 0),
              ("IP", "string", 1), ("Node", "string", 1), ("Nominated Node", "string", 1),
              ("Readiness Gates", "string", 1)], 3, _pod_cells),
    "namespaces": ([("Status", "string", 0)], 1,
                   lambda o: [(o.get("status") or {}).get("phase", "")]),
    "nodes": ([("Status", "string", 0), ("Roles", "string", 0), ("Version", "string", 0),
               ("Internal-IP", "string", 1)], 2, _node_cells),
    "services": ([("Type", "string", 0), ("Cluster-IP", "string", 0),
                  ("External-IP", "string", 0), ("Port(s)", "string", 0),
                  ("Selector", "string", 1)], 4, _service_cells),
    "configmaps": ([("Data", "integer", 0)], 1,
                   lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {})]),
    "networkpolicies": ([("Pod-Selector", "string", 0)], 1,
                        lambda o: [_selector_text((o.get("spec") or {}).get("podSelector"))]),
    "endpointslices": ([("AddressType", "string", 0), ("Ports", "string", 0),
                        ("Endpoints", "string", 0)], 3,
                       lambda o: [o.get("addressType", ""),
                                  ",".join(str(p.get("port")) for p in o.get("ports") or [])
                                  or "<unset>",
                                  ",".join(a for e in o.get("endpoints") or []
                                           for a in e.get("addresses") or []) or "<unset>"]),
}


def to_table(kind: Kind, objs: List[dict], rv: str, include: str = "Metadata",
             headers: bool = True) -> dict:
    """Objects as a ``meta.k8s.io/v1`` Table, the reply ``kubectl get`` asks for, with
    kube's columns for the kind; ``include`` is the ``includeObject`` parameter."""
    extra, age_at, cells = _COLUMNS.get(kind.plural, ([], 0, lambda o: []))
    cols = [("Name", "string", 0)] + extra[:age_at] + [("Age", "string", 0)] + extra[age_at:]
    rows = []
    for o in objs:
        c = cells(o)
        row: Dict[str, Any] = {"cells": [o["metadata"]["name"]] + c[:age_at]
                               + [_age(o["metadata"].get("creationTimestamp", ""))] + c[age_at:]}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o["metadata"]}
        rows.append(row)
    out: Dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                           "metadata": {"resourceVersion": rv}, "rows": rows}
    if headers:
        out["columnDefinitions"] = [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n,
             "priority": p} for n, t, p in cols]
    return out


def _discovery_resources(kinds: Iterable[Kind]) -> List[dict]:
    out = []
    for k in kinds:
        out.append({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                    "kind": k.kind, "verbs": _VERBS_NS, "shortNames": list(k.short)}
                   if k.short else
                   {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                    "kind": k.kind, "verbs": _VERBS_NS})
        if k.has_status:
            out.append({"name": k.plural + "/status", "singularName": "",
                        "namespaced": k.namespaced, "kind": k.kind, "verbs": _VERBS_STATUS})
    return out


def _openapi_v3_gv(group: str, version: str) -> dict:
    """The smallest OpenAPI v3 document kubectl reads: one path per kind whose PATCH
    names its GVK, takes ``fieldValidation`` and lists the patch content types, so
    kubectl validates on the server (``fieldValidation=Strict``) and computes apply
    patches from its built-in types."""
    paths: Dict[str, Any] = {}
    params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
              for n in ("dryRun", "fieldManager", "fieldValidation")]
    for k in KINDS.values():
        if k.group != group or k.version != version:
            continue
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        ns = "/namespaces/{namespace}" if k.namespaced else ""
        gvk = {"group": group, "version": version, "kind": k.kind}
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": params,
              "responses": {"200": {"description": "OK"}}}
        paths[f"{base}{ns}/{k.plural}"] = {
            "post": dict(op, **{"x-kubernetes-action": "post",
                               "requestBody": {"content": {"*/*": {"schema": {}}}}}),
            "get": dict(op, **{"x-kubernetes-action": "list"})}
        paths[f"{base}{ns}/{k.plural}/{{name}}"] = {
            "get": dict(op, **{"x-kubernetes-action": "get"}),
            "put": dict(op, **{"x-kubernetes-action": "put",
                              "requestBody": {"content": {"*/*": {"schema": {}}}}}),
            "delete": dict(op, **{"x-kubernetes-action": "delete"}),
            "patch": dict(op, **{"x-kubernetes-action": "patch", "requestBody": {"content": {
                t: {"schema": {}} for t in ("application/json-patch+json",
                                             "application/merge-patch+json",
                                             "application/strategic-merge-patch+json")}}})}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (contiv-sdn stand-in)",
                                         "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}


def _gv_list() -> List[Tuple[str, str]]:
    return [("", "v1")] + sorted(GROUPS.items())


class _Root(resource.Resource):
    isLeaf = True

    def __init__(self, api: KubeAPIServer):
        super().__init__()
        self.api = api

    def render(self, request: server.Request):
        method = request.method.decode()
        path = urlsplit(request.uri.decode("utf-8", "replace")).path
        query = {k.decode(): v[-1].decode("utf-8", "replace")
                 for k, v in (request.args or {}).items()}
        try:
            if self.api.token:
                auth = (request.getHeader(b"authorization") or b"").decode("latin-1")
                if auth != f"Bearer {self.api.token}":
                    raise APIError(401, "Unauthorized", "Unauthorized")
            out = self._route(request, method, path, query)
        except APIError as e:
            log.info("kubeapi refused {method} {path}: {code} {reason}: {message}",
                     method=method, path=path, code=e.code, reason=e.reason, message=e.message)
            out = e.status()
            request.setResponseCode(e.code)
        if out is server.NOT_DONE_YET:
            return out
        request.setHeader(b"content-type", b"application/json")
        if request.code == 200 and method == "POST" and isinstance(out, dict) and \
                out.get("kind") != "Status":
            request.setResponseCode(201)
        return json.dumps(out).encode()

    def _body(self, request: server.Request) -> Any:
        raw = request.content.read() if request.content else b""
        if not raw.strip():
            return None
        try:
            return loads(raw)
        except DecodeError as e:
            raise bad_request(f"the body of the request was in an unknown format: {e}")

    def _route(self, request: server.Request, method: str, path: str,
               query: Dict[str, str]) -> Any:
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return VERSION_INFO
        if path in ("/healthz", "/readyz", "/livez"):
            request.setHeader(b"content-type", b"text/plain")
            return "ok"
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0",
                 "serverAddress": f"{self.api.interface}:{self.api.port}"}]}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                for g, v in sorted(GROUPS.items())]}
        if path == "/openapi/v3":
            return {"paths": {(f"apis/{g}/{v}" if g else f"api/{v}"): {
                "serverRelativeURL": (f"/openapi/v3/apis/{g}/{v}" if g else f"/openapi/v3/api/{v}")
                + "?hash=0000"} for g, v in _gv_list()}}
        if parts[:2] == ["openapi", "v3"]:
            rest = parts[2:]
            gv = ("", rest[1]) if rest[:1] == ["api"] and len(rest) == 2 else \
                (rest[1], rest[2]) if rest[:1] == ["apis"] and len(rest) == 3 else None
            if gv in _gv_list():
                return _openapi_v3_gv(*gv)
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if parts[:1] == ["api"] and len(parts) >= 2 and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3 and GROUPS.get(parts[1]) == parts[2]:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[:1] == ["apis"] and len(parts) == 2 and parts[1] in GROUPS:
            g, v = parts[1], GROUPS[parts[1]]
            return {"kind": "APIGroup", "apiVersion": "v1", "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
        else:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": _discovery_resources(
                        k for k in KINDS.values() if k.group == group)}
        if rest[0] == "watch":  # the deprecated /watch/ prefix
            rest = rest[1:]
            query["watch"] = "true"
        namespace: Optional[str] = None
        if rest[0] == "namespaces" and len(rest) >= 3 and group == "" and \
                rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        elif rest[0] == "namespaces" and len(rest) >= 3 and group != "":
            namespace, rest = rest[1], rest[2:]
        kind = KINDS.get(rest[0])
        if kind is None or kind.group != group or len(rest) > 3:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not kind.namespaced:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and not (sub == "status" and kind.has_status):
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if kind.namespaced and name is not None and namespace is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        return self._verb(request, method, kind, namespace, name, sub, query)

    def _verb(self, request: server.Request, method: str, kind: Kind, namespace: Optional[str],
              name: Optional[str], sub: Optional[str], query: Dict[str, str]) -> Any:
        api = self.api
        ns = namespace or ""
        dry_run = bool(query.get("dryRun"))
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        # kubectl get asks for server-side Tables first; JSON objects otherwise
        table = (query.get("includeObject") or "Metadata") \
            if re.search(r"(^|,)\s*application/json;(?=[^,]*as=Table)(?=[^,]*g=meta\.k8s\.io)"
                         r"(?=[^,]*v=v1(?:[;,]|$))", accept) else None
        strict = query.get("fieldValidation") == "Strict"
        if name is None:
            if method == "GET":
                labels = parse_label_selector(query.get("labelSelector", ""))
                fields = parse_field_selector(query.get("fieldSelector", ""))
                if query.get("watch") in ("1", "true"):
                    timeout = query.get("timeoutSeconds")
                    initial = query.get("sendInitialEvents")
                    try:
                        seconds = float(timeout) if timeout else None
                    except ValueError:
                        raise bad_request(f'invalid timeoutSeconds: "{timeout}"')
                    api.watch(request, kind.plural, namespace, labels, fields,
                              query.get("resourceVersion", ""),
                              query.get("allowWatchBookmarks") in ("1", "true"),
                              seconds, None if initial is None else initial == "true",
                              table)
                    return server.NOT_DONE_YET
                try:
                    limit = int(query.get("limit", "0") or 0)
                except ValueError:
                    raise bad_request(f'invalid limit: "{query.get("limit")}"')
                out = api.list(kind.plural, namespace, labels, fields, limit,
                               query.get("continue", ""))
                if table:
                    items = [dict(i, kind=kind.kind, apiVersion=kind.api_version)
                             for i in out["items"]]
                    out = dict(to_table(kind, items, out["metadata"]["resourceVersion"], table),
                               metadata=out["metadata"])
                return out
            if method == "POST":
                if kind.namespaced and namespace is None:
                    raise _not_allowed()
                return api.create(kind.plural, self._body(request), namespace, dry_run, strict)
            if method == "DELETE":
                return api.delete_collection(
                    kind.plural, namespace, parse_label_selector(query.get("labelSelector", "")),
                    parse_field_selector(query.get("fieldSelector", "")), dry_run)
            raise _not_allowed()
        if method == "GET":
            obj = api.get(kind.plural, ns, name)
            if table:
                return to_table(kind, [obj], obj["metadata"]["resourceVersion"], table)
            return obj
        if method == "PUT":
            return api.update(kind.plural, self._body(request), ns, name, sub, dry_run=dry_run,
                              strict=strict)
        if method == "PATCH":
            ctype = (request.getHeader(b"content-type") or b"").decode().split(";")[0].strip()
            return api.patch(kind.plural, ns, name, ctype, self._body(request), sub, dry_run,
                             strict)
        if method == "DELETE" and sub is None:
            body = self._body(request)
            pre = body.get("preconditions") if isinstance(body, dict) else None
            return api.delete(kind.plural, ns, name, pre if isinstance(pre, dict) else None,
                              dry_run)
        raise _not_allowed()


def _not_allowed() -> APIError:
    return APIError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


class _Site(server.Site):
    """A Site that remembers its open connections, so ``stop`` can drop them."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.open: set = set()

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        if proto is not None:
            site = self
            lost = proto.connectionLost

            def connection_lost(reason, _lost=lost, _proto=proto):
                site.open.discard(_proto)
                return _lost(reason)
            proto.connectionLost = connection_lost
            self.open.add(proto)
        return proto

    def log(self, request):  # no access log: the tests make thousands of requests
        pass


# ---------------------------------------------------------------------------
# As a process

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contiv_sdn.testing.kubeapi",
        description="A STAND-IN Kubernetes API server (in memory, plain HTTP on loopback) for "
                    "the contiv-sdn lab and tests. It is not kube-apiserver: it serves "
                    "Namespaces, Pods, Services, Nodes, ConfigMaps, NetworkPolicies and "
                    "EndpointSlices well enough for kubectl and the netmaster's watcher. "
                    "Runs until SIGTERM.")
    parser.add_argument("--port", type=int, default=6443, help="TCP port (0: any free one)")
    parser.add_argument("--listen", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this server to this file")
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--state-file", help="keep the objects in this JSON file across restarts")
    parser.add_argument("--service-cidr", default="10.96.0.0/12",
                        help="the range Services' clusterIPs are allocated from "
                             "(kube-apiserver's --service-cluster-ip-range)")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    try:
        cidr = str(ipaddress.IPv4Network(args.service_cidr, strict=False))
    except ValueError as e:
        parser.error(f"--service-cidr {args.service_cidr!r}: {e} (want an IPv4 CIDR, "
                     f"e.g. 10.96.0.0/12)")
    api = KubeAPIServer(reactor, token=args.token, state_file=args.state_file,
                        service_cidr=cidr)

    async def run() -> None:
        port = await api.start(args.port, args.listen)
        if args.kubeconfig:
            api.kubeconfig(args.kubeconfig)
        log.info("serving on port {port}", port=port)

    def failed(f):
        log.failure("kubeapi stand-in could not start", f)
        reactor.stop()

    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: defer.ensureDeferred(api.stop()))
    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()).addErrback(failed))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
