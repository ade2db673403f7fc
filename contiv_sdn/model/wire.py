"""The JSON shape Contiv clients read: Go structs with ``omitempty`` everywhere.

Rules (from the generated structs): ``key`` first, then the fields in Go struct
order, each left out when it is ``0``, ``""`` or ``[]``; then ``link-sets`` and
``links`` for the types that declare them, which are Go structs and so are
**always** written (``omitempty`` never drops a struct): ``"link-sets": {}``
when no set has members, and ``"links": {"Tenant": {}}`` for an unset link,
because a Link's own ``type``/``key`` are omitempty.  A link-set is a Go map,
written with its keys sorted.  The functions return plain dicts in that order;
:func:`contiv_sdn.model.gojson.encode_json` writes them byte-for-byte as Go.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from contiv_sdn.model.schema import (
    ENDPOINT_OPER_FIELDS,
    OPER_STRUCTS,
    STRUCT_LIST,
    Field,
    TypeSpec,
)


def make_link(type: str, key: str) -> dict:
    """A modeldb Link: ``{"type": <modeldb type>, "key": <object key>}``."""
    return {"type": type, "key": key}


def _link_wire(link: Optional[Mapping[str, Any]]) -> dict:
    out: dict = {}
    if link:
        if link.get("type"):
            out["type"] = link["type"]
        if link.get("key"):
            out["key"] = link["key"]
    return out


def _struct_wire(fields: tuple[Field, ...], obj: Mapping[str, Any]) -> dict:
    out: dict = {}
    for f in fields:
        v = obj.get(f.name)
        if not v:  # None, 0, "", [] are Go zero values: omitempty
            continue
        if f.type == STRUCT_LIST:
            elem = OPER_STRUCTS[f.elem].fields  # type: ignore[index]
            out[f.name] = [_struct_wire(elem, e or {}) for e in v]
        elif isinstance(v, (list, tuple)):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


def to_wire(spec: TypeSpec, obj: Mapping[str, Any]) -> dict:
    """The config object as Contiv writes it (GET, list, POST reply, inspect ``Config``)."""
    out: dict = {}
    if obj.get("key"):
        out["key"] = obj["key"]
    out.update(_struct_wire(spec.fields, obj))
    if spec.link_sets:
        given = obj.get("link-sets") or {}
        sets: dict = {}
        for name in spec.link_sets:
            members = given.get(name)
            if members:
                sets[name] = {k: _link_wire(members[k]) for k in sorted(members)}
        out["link-sets"] = sets
    if spec.links:
        given = obj.get("links") or {}
        out["links"] = {name: _link_wire(given.get(name)) for name in spec.links}
    return out


def oper_to_wire(spec: TypeSpec, oper: Optional[Mapping[str, Any]]) -> dict:
    """``spec``'s oper struct (the inspect ``Oper`` part), same omitempty rules;
    ``endpoints``/``providers``/... elements are written as their own oper structs."""
    return _struct_wire(spec.oper_fields, oper or {})


def endpoint_oper_to_wire(ep: Optional[Mapping[str, Any]]) -> dict:
    """An ``EndpointOper`` (``key`` first when set)."""
    return _struct_wire(ENDPOINT_OPER_FIELDS, ep or {})


def inspect_to_wire(
    spec: TypeSpec,
    config: Optional[Mapping[str, Any]] = None,
    oper: Optional[Mapping[str, Any]] = None,
) -> dict:
    """The body of ``GET /api/v1/inspect/<coll>/<key>/``: ``{"Config": ..., "Oper": ...}``.

    Types without oper have ``{"Config": ...}`` only; the endpoint (no config)
    has ``{"Oper": ...}`` only.  ``Oper`` is present (possibly ``{}``) whenever
    the type has one, as Go never omits a struct.
    """
    out: dict = {}
    if spec.has_config:
        out["Config"] = to_wire(spec, config or {})
    if spec.has_oper:
        out["Oper"] = oper_to_wire(spec, oper)
    return out
