"""The JSON netctl sends and prints, shaped as Contiv's Go client shaped it.

Contiv's netctl posted Go structs from ``contivmodel/client``: fields in
struct order, zero values omitted (``omitempty``), an empty ``"link-sets":{}``
and ``"links":{"Tenant":{}}`` where the struct has them, HTML characters
escaped. Servers and proxies written against Contiv see exactly that body
from this netctl. Reading is lenient the same way Go's decoder is: field
names match case-insensitively and a missing field reads as its zero value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

S, I, L = "s", "i", "l"  # Go string, int, []string


@dataclass(frozen=True)
class Struct:
    """A contivmodel client struct: its JSON fields in Go order, and the names
    inside its ``link-sets`` / ``links`` (None when the struct has none)."""

    fields: tuple[tuple[str, str], ...]
    link_sets: Optional[tuple[str, ...]] = None
    links: Optional[tuple[str, ...]] = None


# Keyed by REST collection name (the path segment under /api/v1/).
STRUCTS: dict[str, Struct] = {
    "aciGws": Struct((("enforcePolicies", S), ("includeCommonTenant", S), ("name", S),
                      ("nodeBindings", S), ("pathBindings", S), ("physicalDomain", S))),
    "appProfiles": Struct((("appProfileName", S), ("endpointGroups", L), ("tenantName", S)),
                          ("EndpointGroups",), ("Tenant",)),
    "Bgps": Struct((("as", S), ("hostname", S), ("neighbor", S), ("neighbor-as", S),
                    ("routerip", S))),
    "endpointGroups": Struct((("cfgdTag", S), ("extContractsGrps", L), ("groupName", S),
                              ("ipPool", S), ("netProfile", S), ("networkName", S),
                              ("policies", L), ("tenantName", S)),
                             ("ExtContractsGrps", "MatchRules", "Policies", "Services"),
                             ("AppProfile", "NetProfile", "Network", "Tenant")),
    "extContractsGroups": Struct((("contracts", L), ("contractsGroupName", S),
                                  ("contractsType", S), ("tenantName", S)),
                                 ("EndpointGroups",), None),
    "globals": Struct((("arpMode", S), ("fwdMode", S), ("name", S), ("networkInfraType", S),
                       ("pvtSubnet", S), ("vlans", S), ("vxlans", S))),
    "netprofiles": Struct((("DSCP", I), ("bandwidth", S), ("burst", I), ("profileName", S),
                           ("tenantName", S)), ("EndpointGroups",), ("Tenant",)),
    "networks": Struct((("cfgdTag", S), ("encap", S), ("gateway", S), ("ipv6Gateway", S),
                        ("ipv6Subnet", S), ("networkName", S), ("nwType", S), ("pktTag", I),
                        ("subnet", S), ("tenantName", S)),
                       ("EndpointGroups", "Servicelbs", "Services"), ("Tenant",)),
    "policys": Struct((("policyName", S), ("tenantName", S)),
                      ("EndpointGroups", "Rules"), ("Tenant",)),
    "rules": Struct((("action", S), ("direction", S), ("fromEndpointGroup", S),
                     ("fromIpAddress", S), ("fromNetwork", S), ("policyName", S), ("port", I),
                     ("priority", I), ("protocol", S), ("ruleId", S), ("tenantName", S),
                     ("toEndpointGroup", S), ("toIpAddress", S), ("toNetwork", S)),
                    ("Policies",), ("MatchEndpointGroup",)),
    "serviceLBs": Struct((("ipAddress", S), ("networkName", S), ("ports", L), ("selectors", L),
                          ("serviceName", S), ("tenantName", S)), None, ("Network", "Tenant")),
    "tenants": Struct((("defaultNetwork", S), ("tenantName", S)),
                      ("AppProfiles", "EndpointGroups", "NetProfiles", "Networks", "Policies",
                       "Servicelbs", "VolumeProfiles", "Volumes"), None),
}


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

    Zero values are dropped, ``key`` comes first when set, and link-sets /
    links appear as the Go struct would marshal them."""
    struct = STRUCTS[collection]
    body: dict[str, Any] = {}
    key = field(values, "key")
    if isinstance(key, str) and key:
        body["key"] = key
    for name, kind in struct.fields:
        value = field(values, name)
        if kind == S:
            if isinstance(value, str) and value:
                body[name] = value
        elif kind == I:
            number = go_int(values, name)
            if number:
                body[name] = number
        elif kind == L:
            items = go_list(values, name)
            if items:
                body[name] = items
    if struct.link_sets is not None:
        body["link-sets"] = _encode_link_sets(struct.link_sets, field(values, "link-sets"))
    if struct.links is not None:
        body["links"] = _encode_links(struct.links, field(values, "links"))
    return body


def _encode_link(value: Any) -> dict[str, str]:
    link: dict[str, str] = {}
    for name in ("type", "key"):
        text = field(value, name)
        if isinstance(text, str) and text:
            link[name] = text
    return link


def _encode_link_sets(names: tuple[str, ...], current: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        members = field(current, name)
        if isinstance(members, Mapping) and members:
            out[name] = {k: _encode_link(members[k]) for k in sorted(members)}
    return out


def _encode_links(names: tuple[str, ...], current: Any) -> dict[str, Any]:
    return {name: _encode_link(field(current, name)) for name in names}


def _go_escape(text: str) -> str:
    # encoding/json escapes these even inside strings; they cannot occur
    # outside strings in JSON text, so a plain replace is exact.
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def go_marshal(value: Any) -> str:
    """json.Marshal: compact, UTF-8, HTML-escaped."""
    return _go_escape(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def go_marshal_indent(value: Any) -> str:
    """json.MarshalIndent(v, "", "  "), as netctl's -j and inspect print."""
    return _go_escape(json.dumps(value, indent=2, ensure_ascii=False))
