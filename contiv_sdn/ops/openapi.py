"""The OpenAPI 3.1 document of the netmaster's REST API, generated from the model tables.

Why generated: the tables that decode and validate requests — the object specs of
:mod:`contiv_sdn.model.schema` for ``/api/v1`` and the ``/plugin`` request/reply
shapes of :mod:`contiv_sdn.model.plugin_api` — are the single source of truth for
what the server accepts.  A hand-written document would drift from them; this one
cannot, because it is built from them (field order, Go types, length limits,
regexes, bounds and defaults).  The few routes outside those tables (``/version``,
``/info``, ``/services``, the two debug routes) are declared in :data:`_OTHER`.

Paths are concrete per collection (``/api/v1/networks/{key}/``, not
``/api/v1/{collection}/{key}/``) so each has its own schema.  The router
(:class:`contiv_sdn.api.app.NetmasterAPI`) is *not* read here: the tests compare
the two independently, in both directions.

Notes on fidelity: ``maxLength`` is Contiv's limit in UTF-8 bytes (the schema counts
characters, so it is exact for ASCII); patterns are Contiv's RE2 text, applied by
the server as a full match.  The server, like Go, also matches field names
case-insensitively and takes ``null`` as a zero value; the document describes the
canonical form.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Optional, Tuple

from contiv_sdn import __version__
from contiv_sdn.model import plugin_api as P
from contiv_sdn.model import shapes as S
from contiv_sdn.model.schema import (
    INT,
    LINK_TARGETS,
    OPER_STRUCTS,
    STR_LIST,
    STRUCT_LIST,
    TYPES,
    Field,
    TypeSpec,
)

#: Where the netmaster serves this document.
DOCUMENT_PATH = "/openapi.json"

_TEXT_ERROR = {"text/plain": {"schema": {"type": "string"}}}

#: Reply shape of each ``/plugin/<call>`` (the request shapes are ``plugin_api.REQUESTS``).
PLUGIN_REPLIES: Dict[str, S.Type] = {
    "allocAddress": P.ALLOC_ADDRESS_REPLY,
    "releaseAddress": S.Struct("AddressReleaseResponse", [("Status", S.STR)]),
    "createEndpoint": P.ENDPOINT_REPLY,
    "deleteEndpoint": P.ENDPOINT_REPLY,
    "updateEndpoint": P.UPDATE_ENDPOINT_REPLY,
    "registerHost": P.HOST_STATE,
    "createDocknet": P.DOCKNET_STATE,
    "deleteDocknet": S.Struct("DeleteDocknetResponse", [("Deleted", S.STR_LIST)]),
}

_PLUGIN_DOC = {
    "allocAddress": "Allocate an address in a network (or a named pool).",
    "releaseAddress": "Release an address allocated by allocAddress.",
    "createEndpoint": "Create an endpoint record (address, MAC, group) for a container.",
    "deleteEndpoint": "Delete an endpoint record and release its address.",
    "updateEndpoint": "Update an endpoint's labels/container (e.g. after start).",
    "registerHost": "Ours, not Contiv's: a host agent registers (and refreshes) its host "
                    "record; hosts write Redis only through the netmaster.",
    "createDocknet": "Ours (swarm mode): a swarm manager's plugin records that a docker "
                     "network maps to a Contiv network (ServiceName empty) or group; "
                     "deleting a mapped object is then refused.",
    "deleteDocknet": "Ours (swarm mode): forget every mapping of a docker network "
                     "(swarm's FreeNetwork); an unknown one is not an error.",
}

_SERVICE_PROVIDER = {
    "type": "object",
    "properties": {"IPAddress": {"type": "string"}, "ContainerID": {"type": "string"},
                   "Tenant": {"type": "string"}, "Network": {"type": "string"},
                   "Labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "EpIDKey": {"type": "string"}},
}
_SERVICE = {
    "type": "object",
    "properties": {
        "servicename": {"type": "string"}, "tenantname": {"type": "string"},
        "network": {"type": "string"}, "ports": {"type": "array", "items": {"type": "string"}},
        "selectors": {"type": "object", "additionalProperties": {"type": "string"}},
        "ipaddress": {"type": "string"},
        "providers": {"type": "object", "additionalProperties": {
            "$ref": "#/components/schemas/ServiceProvider"}},
    },
}


def _path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _ok(schema: dict, description: str = "the answer") -> dict:
    return {"description": description, "content": _json(schema)}


def _refusals(*codes: int) -> dict:
    texts = {400: "the request was refused (its text says why)",
             404: "no such object (or no such route: `404 page not found`)",
             500: "the request was refused or failed (its text says why; Contiv answers "
                  "most refusals with 500)",
             503: "the state store (Redis) did not answer; retry shortly"}
    return {str(c): {"description": texts[c], "content": _TEXT_ERROR} for c in codes}


# -- /api/v1 object schemas ------------------------------------------------------

def _field_schema(f: Field) -> dict:
    if f.type is INT:
        s: dict = {"type": "integer"}
        if f.min is not None:
            s["minimum"] = f.min
        if f.max is not None:
            s["maximum"] = f.max
    elif f.type == STR_LIST:
        s = {"type": "array", "items": {"type": "string"}}
    elif f.type == STRUCT_LIST:
        s = {"type": "array", "items": {"$ref": f"#/components/schemas/{f.elem}"}}
    else:
        s = {"type": "string"}
        if f.maxlen is not None:
            s["maxLength"] = f.maxlen
        if f.regex is not None:
            s["pattern"] = f.regex
    if f.default is not None:
        s["default"] = f.default
    s["x-go-type"] = f.go_type
    return s


def _struct_schema(fields, description: str = "") -> dict:
    s: dict = {"type": "object",
               "properties": {f.name: _field_schema(f) for f in fields}}
    if description:
        s["description"] = description
    return s


_LINK = {"type": "object", "properties": {"type": {"type": "string"}, "key": {"type": "string"}},
         "description": "a reference to another object: its modeldb type and key"}


def _config_schema(spec: TypeSpec) -> dict:
    """The config object as GET answers it (Go's omitempty: zero fields left out)."""
    s = _struct_schema(spec.fields, f"Contiv's {spec.go_name} (key: "
                                    f"{':'.join(spec.key_fields) or 'key'})")
    props = {"key": {"type": "string"}}
    props.update(s["properties"])
    if spec.link_sets:
        props["link-sets"] = {"type": "object", "properties": {
            name: {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Link"},
                   "description": f"members ({LINK_TARGETS[name]}), by key"}
            for name in spec.link_sets}}
    if spec.links:
        props["links"] = {"type": "object", "properties": {
            name: {"$ref": "#/components/schemas/Link"} for name in spec.links}}
    s["properties"] = props
    return s


def _request_schema(spec: TypeSpec) -> dict:
    """What POST/PUT accept: the same fields; the key fields must make the URL's key."""
    s = _struct_schema(spec.fields, f"{spec.go_name} to create or update; "
                                    f"{':'.join(spec.key_fields)} must equal the URL key")
    s["properties"] = dict({"key": {"type": "string"}}, **s["properties"])
    s["required"] = list(spec.key_fields)
    return s


def _inspect_schema(spec: TypeSpec) -> dict:
    props = {}
    if spec.has_config:
        props["Config"] = {"$ref": f"#/components/schemas/{spec.go_name}"}
    if spec.has_oper:
        props["Oper"] = {"$ref": f"#/components/schemas/{spec.go_name}Oper"}
    return {"type": "object", "properties": props, "required": list(props)}


# -- /plugin shapes --------------------------------------------------------------

def _shape_schema(t: S.Type, defs: Dict[str, dict]) -> dict:
    """JSON Schema of a shapes.Type; structs go to ``defs`` by Go name and are referenced."""
    if isinstance(t, S.Struct):
        if t.go_name not in defs:
            defs[t.go_name] = {}  # placeholder against cycles
            defs[t.go_name] = {
                "type": "object", "x-go-type": t.go_name,
                "properties": {name: _shape_schema(ft, defs) for name, ft in t.fields.items()},
            }
        return {"$ref": f"#/components/schemas/{t.go_name}"}
    if isinstance(t, S.ListOf):
        return {"type": "array", "items": _shape_schema(t.elem, defs)}
    if isinstance(t, S.MapOf):
        return {"type": "object", "additionalProperties": _shape_schema(t.elem, defs)}
    if t is S.STR:
        return {"type": "string"}
    if t is S.INT:
        return {"type": "integer"}
    if t is S.UINT64:
        return {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}
    if t is S.FLOAT:
        return {"type": "number"}
    if t is S.BOOL:
        return {"type": "boolean"}
    return {}  # ANY


# -- the document ----------------------------------------------------------------

#: (path, method, summary, response schema, path parameters) of the routes outside the
#: model tables.
_OTHER: List[Tuple[str, str, str, dict, List[Tuple[str, str]]]] = [
    ("/version", "get", "The netmaster's version.",
     {"type": "object", "properties": {"GitCommit": {"type": "string"},
                                       "Version": {"type": "string"},
                                       "BuildTime": {"type": "string"}}}, []),
    ("/info", "get", "Cluster state: this netmaster and the live netplugin/netmaster nodes.",
     {"type": "object", "properties": {
         "local-ip": {"type": "string"}, "leader-ip": {"type": "string"},
         "current-state": {"type": "string"},
         "netplugin-nodes": {"type": "array", "items": {"type": "string"}},
         "netmaster-nodes": {"type": "array", "items": {"type": "string"}}}}, []),
    ("/services", "get", "Every service load balancer with its providers.",
     {"type": "array", "items": {"$ref": "#/components/schemas/Service"}}, []),
    ("/service/{id}", "get", "One service load balancer (`name` or `name:tenant`).",
     {"$ref": "#/components/schemas/Service"}, [("id", "service name or name:tenant")]),
    ("/debug/ofnet", "get", "Contiv's ofnet debug dump (empty here).",
     {"type": "object"}, []),
    ("/debug/epcleanup/tenant/{tenant}/{category}/{id}", "delete",
     "Force-remove stale endpoint records of a tenant (category: net, group or ep), "
     "releasing their addresses; answers the removed endpoints.",
     {"type": "array", "items": {"$ref": "#/components/schemas/EndpointOper"}},
     [("tenant", "tenant name"), ("category", "net | group | ep"),
      ("id", "network, group, endpoint or container id")]),
    (DOCUMENT_PATH, "get", "This document (OpenAPI 3.1).", {"type": "object"}, []),
]

#: The read-only web view (:mod:`contiv_sdn.ops.webview`): (path, summary, media type).
_WEB: List[Tuple[str, str, str]] = [
    ("/web/", "The web view of the fabric (HTML; its data comes from /web/events).",
     "text/html"),
    ("/web/app.js", "The web view's script.", "text/javascript"),
    ("/web/style.css", "The web view's style sheet.", "text/css"),
    ("/web/events", "The web view's live feed: server-sent events, one `state` event (the "
     "document of /web/state) at once and one per change. A client that does not accept "
     "`text/event-stream` gets the current document as one event, then the end.",
     "text/event-stream"),
]

_WEB_STATE = {
    "type": "object",
    "description": "tenants → networks → groups → endpoints, each tenant's policies and rules, "
                   "and the hosts with their switch connection state and flow count",
    "properties": {
        "tenants": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"},
            "networks": {"type": "array", "items": {"type": "object"}},
            "policies": {"type": "array", "items": {"type": "object"}}}}},
        "hosts": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "vtepIP": {"type": "string"},
            "dpid": {"type": "string"}, "live": {"type": "boolean"},
            "switch": {"enum": ["connected", "disconnected", "unknown"]},
            "flows": {"type": ["integer", "null"]}, "endpoints": {"type": "integer"}}}},
        "controller": {"type": "boolean"},
    },
    "required": ["tenants", "hosts", "controller"],
}


def _build() -> dict:
    schemas: Dict[str, dict] = {"Link": _LINK, "Service": _SERVICE,
                                "ServiceProvider": _SERVICE_PROVIDER}
    for name, st in OPER_STRUCTS.items():
        schemas[name] = _struct_schema(st.fields)
    paths: Dict[str, dict] = {}
    tags = []
    for spec in sorted(TYPES.values(), key=lambda t: t.collection):
        tag = spec.go_name
        tags.append({"name": tag})
        key_doc = "the object's key: " + (":".join(spec.key_fields) or "its id")
        ref = {"$ref": f"#/components/schemas/{spec.go_name}"}
        if spec.has_oper:
            schemas.setdefault(f"{spec.go_name}Oper",
                               _struct_schema(spec.oper_fields,
                                              f"operational state of a {spec.go_name}"))
        if spec.has_config:
            schemas[spec.go_name] = _config_schema(spec)
            schemas[f"{spec.go_name}Request"] = _request_schema(spec)
            coll = f"/api/v1/{spec.collection}/"
            paths[coll] = {"get": {
                "tags": [tag], "operationId": f"list{spec.go_name}",
                "summary": f"List every {spec.go_name}.",
                "responses": dict({"200": _ok({"type": "array", "items": ref})},
                                  **_refusals(500, 503))}}
            write = {
                "requestBody": {"required": True, "content": _json(
                    {"$ref": f"#/components/schemas/{spec.go_name}Request"})},
                "responses": dict({"200": _ok(ref, "the stored object")},
                                  **_refusals(400, 500, 503)),
            }
            paths[coll + "{key}/"] = {
                "parameters": [_path_param("key", key_doc)],
                "get": {"tags": [tag], "operationId": f"get{spec.go_name}",
                        "summary": f"One {spec.go_name}.",
                        "responses": dict({"200": _ok(ref)}, **_refusals(404, 500, 503))},
                "post": dict(copy.deepcopy(write), tags=[tag],
                             operationId=f"create{spec.go_name}",
                             summary=f"Create or update a {spec.go_name}."),
                "put": dict(copy.deepcopy(write), tags=[tag],
                            operationId=f"update{spec.go_name}",
                            summary=f"Create or update a {spec.go_name} (same as POST)."),
                "delete": {"tags": [tag], "operationId": f"delete{spec.go_name}",
                           "summary": f"Delete a {spec.go_name}; answers its key.",
                           "responses": dict({"200": _ok({"type": "string"}, "the key")},
                                             **_refusals(404, 500, 503))},
            }
        paths[f"/api/v1/inspect/{spec.collection}/{{key}}/"] = {
            "parameters": [_path_param("key", key_doc)],
            "get": {"tags": [tag], "operationId": f"inspect{spec.go_name}",
                    "summary": f"A {spec.go_name}'s config and operational state.",
                    "responses": dict({"200": _ok(_inspect_schema(spec))},
                                      **_refusals(404, 500, 503))}}
    for name in P.REQUESTS:
        req = _shape_schema(P.REQUESTS[name], schemas)
        rep = _shape_schema(PLUGIN_REPLIES[name], schemas)
        paths[f"/plugin/{name}"] = {"post": {
            "tags": ["plugin"], "operationId": name, "summary": _PLUGIN_DOC[name],
            "description": "The host agents' call; Content-Type must be application/json "
                           "(anything else is `404 page not found`, as in Contiv).",
            "requestBody": {"required": True, "content": _json(req)},
            "responses": dict({"200": _ok(rep)}, **_refusals(500, 503))}}
    tags.append({"name": "plugin"})
    tags.append({"name": "cluster"})
    for path, method, summary, schema, params in _OTHER:
        op = {"tags": ["cluster"], "summary": summary,
              "operationId": path.strip("/").split("/{")[0].replace("/", "_").replace(".", "_"),
              "responses": dict({"200": _ok(schema)}, **_refusals(500, 503))}
        entry = paths.setdefault(path, {})
        if params:
            entry["parameters"] = [_path_param(n, d) for n, d in params]
        entry[method] = op
    tags.append({"name": "web"})
    paths["/web/state"] = {"get": {
        "tags": ["web"], "operationId": "web_state",
        "summary": "The web view's state document (what /web/events sends).",
        "responses": dict({"200": _ok(_WEB_STATE)}, **_refusals(500, 503))}}
    for path, summary, media in _WEB:
        paths[path] = {"get": {
            "tags": ["web"], "summary": summary,
            "operationId": "web_" + (path.strip("/").split("/")[-1].replace(".", "_")
                                     if path != "/web/" else "page"),
            "responses": dict({"200": {"description": "the answer", "content": {
                media: {"schema": {"type": "string"}}}}}, **_refusals(500, 503))}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "contiv-sdn netmaster",
            "version": __version__,
            "description": "The Contiv-compatible REST API of the contiv-sdn netmaster "
                           "(`netctl` speaks it), generated from the model tables that "
                           "validate requests. Refusals are plain text. Unrouted paths and "
                           "methods answer `404 page not found`.",
        },
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


_DOC: Optional[dict] = None
_DOC_BYTES: Optional[bytes] = None


def document() -> Dict[str, Any]:
    """The document (built once; a deep copy, so callers may change it)."""
    global _DOC
    if _DOC is None:
        _DOC = _build()
    return copy.deepcopy(_DOC)


def document_bytes() -> bytes:
    """The document as JSON bytes, built once (what the route serves)."""
    global _DOC_BYTES
    if _DOC_BYTES is None:
        _DOC_BYTES = json.dumps(document(), indent=1).encode()
    return _DOC_BYTES


def operations() -> List[Tuple[str, str]]:
    """Every documented (METHOD, path template), e.g. ``("GET", "/api/v1/networks/{key}/")``."""
    out = []
    for path, item in document()["paths"].items():
        for method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
            if method in item:
                out.append((method.upper(), path))
    return out
