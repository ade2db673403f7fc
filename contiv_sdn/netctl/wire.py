"""The JSON netctl sends and prints, shaped as Contiv's Go client shaped it.

Contiv's netctl posted Go structs from ``contivmodel/client``: fields in
struct order, zero values omitted (``omitempty``), an empty ``"link-sets":{}``
and ``"links":{"Tenant":{}}`` where the struct has them, HTML characters
escaped. Servers and proxies written against Contiv see exactly that body
from this netctl. The structs are the model's (:mod:`contiv_sdn.model.schema`,
the same declaration the netmaster decodes with), written by the model's
encoder (:func:`contiv_sdn.model.wire.to_wire`, :func:`contiv_sdn.model.gojson.marshal`).
Reading is lenient the way Go's decoder is: field names match
case-insensitively and a missing field reads as its zero value.
"""

from __future__ import annotations

from typing import Any, Mapping

from contiv_sdn.model.schema import INT, STR_LIST, by_collection
from contiv_sdn.model.wire import to_wire


def field(obj: Any, name: str) -> Any:
    """``obj[name]``, matched case-insensitively as Go's decoder does; None if absent."""
    if not isinstance(obj, Mapping):
        return None
    if name in obj:
        return obj[name]
    folded = name.casefold()
    for key, value in obj.items():
        if isinstance(key, str) and key.casefold() == folded:
            return value
    return None


def go_str(obj: Any, name: str) -> str:
    """A Go string field for printing with %v ("" when absent or null)."""
    value = field(obj, name)
    if value is None:
        return ""
    return value if isinstance(value, str) else go_v(value)


def go_int(obj: Any, name: str) -> int:
    """A Go int field (0 when absent, null or not a number)."""
    value = field(obj, name)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def go_list(obj: Any, name: str) -> list[str]:
    value = field(obj, name)
    if isinstance(value, list):
        return [v if isinstance(v, str) else go_v(v) for v in value]
    return []


def go_v(value: Any) -> str:
    """Go's %v for the JSON values netctl prints ([]string as "[a b]")."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(go_v(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def encode_object(collection: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The body Contiv's Go client POSTs for ``values`` (JSON names as keys).

    ``values`` (flags, or a GET result being re-posted) is read into the
    collection's model struct as Go would fill it -- names folded, unknown
    fields dropped, a number given as text read as the number -- and written
    as the client struct marshals: ``key`` first when set, zero values
    dropped, link-sets / links as the Go struct has them."""
    spec = by_collection(collection)
    if spec is None or not spec.has_config:
        raise KeyError(f"netctl has no client struct for collection {collection!r}")
    key = field(values, "key")
    obj: dict[str, Any] = {"key": key if isinstance(key, str) else ""}
    for f in spec.fields:
        if f.type is INT:
            obj[f.name] = go_int(values, f.name)
        elif f.type == STR_LIST:
            obj[f.name] = go_list(values, f.name)
        else:
            value = field(values, f.name)
            obj[f.name] = value if isinstance(value, str) else ""
    given_sets = field(values, "link-sets")
    obj["link-sets"] = {}
    for name in spec.link_sets:
        members = field(given_sets, name)
        if isinstance(members, Mapping):
            obj["link-sets"][name] = {k: _read_link(v) for k, v in members.items()}
    given_links = field(values, "links")
    obj["links"] = {name: _read_link(field(given_links, name)) for name in spec.links}
    return to_wire(spec, obj)


def _read_link(value: Any) -> dict[str, str]:
    """A modeldb Link as Go reads it: ``type`` and ``key``, each "" unless a string."""
    link: dict[str, str] = {}
    for name in ("type", "key"):
        text = field(value, name)
        link[name] = text if isinstance(text, str) else ""
    return link
