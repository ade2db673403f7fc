"""One declarative spec per Contiv object: fields, checks, links and oper fields.

Everything the rest of the model does (decode, validate, wire encoding) is driven
by these tables, so wire compatibility is a matter of getting the tables right.
They follow the generated ``contivmodel/contivModel.go`` of contiv/netplugin:
field order is the Go struct order (which is also the JSON output order and the
order in which validation runs, so it decides which error wins), and each check
carries the exact limit and regex of the original.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping, NamedTuple, Optional

from contiv_sdn.model import regexes as rx

#: The Python types a field may have.  ``list[dict]`` only occurs in oper structs
#: (``endpoints``, ``providers``, ...), with :attr:`Field.elem` naming the struct.
STR = str
INT = int
STR_LIST = list[str]
STRUCT_LIST = list[dict]

_compile = functools.lru_cache(maxsize=None)(re.compile)


# The specs are NamedTuples (immutable, compared by value) rather than frozen
# dataclasses: ``dataclasses`` pulls in ``inspect``, several milliseconds of every
# ``contiv-cni`` run, which imports this module through the request shapes.

class Field(NamedTuple):
    """One JSON field of a Go struct, with the checks ``Validate<Obj>`` applies to it."""

    name: str
    type: Any = STR
    maxlen: Optional[int] = None
    regex: Optional[str] = None
    min: Optional[int] = None
    max: Optional[int] = None
    default: Any = None
    elem: Optional[str] = None

    @property
    def pattern(self) -> Optional[re.Pattern]:
        """:attr:`regex` compiled, on first use: every ``contiv-cni`` run imports this
        module (through the request shapes) and never validates a config object."""
        return None if self.regex is None else _compile(self.regex)

    @property
    def go_type(self) -> str:
        """The Go type name, as it appears in ``json: cannot unmarshal`` errors."""
        if self.type is INT:
            return "int"
        if self.type == STR_LIST:
            return "[]string"
        if self.type == STRUCT_LIST:
            return "[]contivModel." + (self.elem or "")
        return "string"

    def zero(self) -> Any:
        """Go's zero value for the field (what ``omitempty`` leaves out)."""
        if self.type is INT:
            return 0
        if self.type in (STR_LIST, STRUCT_LIST):
            return []
        return ""


class StructSpec(NamedTuple):
    """A plain (oper) struct: a Go name and its fields in Go order."""

    go_name: str
    fields: tuple[Field, ...]


class TypeSpec(NamedTuple):
    """A Contiv object type: what the REST layer needs to route, decode, check and encode it."""

    name: str
    go_name: str
    collection: str
    key_fields: tuple[str, ...]
    fields: tuple[Field, ...] = ()
    link_sets: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    oper_fields: tuple[Field, ...] = ()
    has_config: bool = True

    @property
    def has_oper(self) -> bool:
        """True when ``GET /api/v1/inspect/<coll>/<key>/`` carries an ``Oper`` part."""
        return bool(self.oper_fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def link_type(self, name: str) -> str:
        """The modeldb type a link or link-set member of this type points at
        (the ``type`` written in it, e.g. ``Tenant`` -> ``tenant``)."""
        if name not in self.links and name not in self.link_sets:
            raise KeyError(f"{self.name} has no link or link-set {name!r}")
        return LINK_TARGETS[name]

    def key_of(self, obj: Mapping[str, Any]) -> str:
        """The key the server expects for ``obj`` (``tenantName:networkName``, ...).

        A POST whose URL key differs from this is refused with ``Invalid Key``.
        """
        if not self.key_fields:
            return str(obj.get("key") or "")
        return ":".join(str(obj.get(k) or "") for k in self.key_fields)

    def zero(self) -> dict:
        """A config object with every field at its Go zero value (before defaults)."""
        obj: dict = {"key": ""}
        for f in self.fields:
            obj[f.name] = f.zero()
        obj["link-sets"] = {name: {} for name in self.link_sets}
        obj["links"] = {name: {"type": "", "key": ""} for name in self.links}
        return obj


#: The modeldb type of what each link / link-set points at.  A link's ``type`` is the
#: target's ``GetType()``: ``serviceLB``, ``netprofile``, ``extContractsGroup`` (not the
#: ``ref`` spellings of the model JSON files).  ``Services`` and ``ServiceInstances``
#: are declared by the original but never filled.
LINK_TARGETS: dict[str, str] = {
    "AppProfile": "appProfile",
    "AppProfiles": "appProfile",
    "EndpointGroups": "endpointGroup",
    "ExtContractsGrps": "extContractsGroup",
    "MatchEndpointGroup": "endpointGroup",
    "MatchRules": "rule",
    "NetProfile": "netprofile",
    "NetProfiles": "netprofile",
    "Network": "network",
    "Networks": "network",
    "Policies": "policy",
    "Rules": "rule",
    "ServiceInstances": "serviceInstance",
    "Servicelbs": "serviceLB",
    "Services": "service",
    "Tenant": "tenant",
    "VolumeProfiles": "volumeProfile",
    "Volumes": "volume",
}


def _s(name: str, maxlen: Optional[int] = None, regex: Optional[str] = None, **kw: Any) -> Field:
    return Field(name, STR, maxlen=maxlen, regex=regex, **kw)


def _i(name: str, **kw: Any) -> Field:
    return Field(name, INT, **kw)


def _l(name: str) -> Field:
    return Field(name, STR_LIST)


def _sl(name: str, elem: str) -> Field:
    return Field(name, STRUCT_LIST, elem=elem)


# --- oper structs -------------------------------------------------------------

ENDPOINT_OPER_FIELDS: tuple[Field, ...] = (
    _s("key"),
    _s("containerID"),
    _s("containerName"),
    _i("endpointGroupId"),
    _s("endpointGroupKey"),
    _s("endpointID"),
    _s("homingHost"),
    _s("intfName"),
    _l("ipAddress"),
    _s("labels"),
    _s("macAddress"),
    _s("network"),
    _s("serviceName"),
    _s("virtualPort"),
    _s("vtepIP"),
)

_EPG_OPER = (
    _s("allocatedIPAddresses"),
    _s("availableIPAddresses"),
    _s("docknetUUID"),
    _sl("endpoints", "EndpointOper"),
    _i("externalPktTag"),
    _s("groupTag"),
    _i("numEndpoints"),
    _i("pktTag"),
)
_NETWORK_OPER = (
    _i("allocatedAddressesCount"),
    _s("allocatedIPAddresses"),
    _s("availableIPAddresses"),
    _s("docknetUUID"),
    _sl("endpoints", "EndpointOper"),
    _i("externalPktTag"),
    _s("networkTag"),
    _i("numEndpoints"),
    _i("pktTag"),
)
_POLICY_OPER = (
    _sl("endpoints", "EndpointOper"),
    _i("numEndpoints"),
    _i("policyViolations"),
)
_SERVICE_LB_OPER = (
    _i("numProviders"),
    _sl("providers", "EndpointOper"),
    _s("serviceVip"),
)

#: Oper structs that appear as elements of other oper structs' lists.
OPER_STRUCTS: dict[str, StructSpec] = {
    "EndpointOper": StructSpec("EndpointOper", ENDPOINT_OPER_FIELDS),
    "EndpointGroupOper": StructSpec("EndpointGroupOper", _EPG_OPER),
    "NetworkOper": StructSpec("NetworkOper", _NETWORK_OPER),
    "PolicyOper": StructSpec("PolicyOper", _POLICY_OPER),
    "ServiceLBOper": StructSpec("ServiceLBOper", _SERVICE_LB_OPER),
}


# --- object types -------------------------------------------------------------

_TYPE_LIST: tuple[TypeSpec, ...] = (
    TypeSpec(
        "aciGw", "AciGw", "aciGws", ("name",),
        fields=(
            _s("enforcePolicies", 64, rx.YES_NO),
            _s("includeCommonTenant", 64, rx.YES_NO),
            _s("name", 64, rx.ACI_GW_NAME),
            _s("nodeBindings", 2048, rx.NODE_BINDINGS),
            _s("pathBindings", 2048, rx.PATH_BINDINGS),
            _s("physicalDomain", 128, rx.NAME),
        ),
        oper_fields=(_i("numAppProfiles"),),
    ),
    TypeSpec(
        "appProfile", "AppProfile", "appProfiles", ("tenantName", "appProfileName"),
        fields=(
            _s("appProfileName", 64, rx.NAME),
            _l("endpointGroups"),
            _s("tenantName", 64, rx.NAME),
        ),
        link_sets=("EndpointGroups",),
        links=("Tenant",),
    ),
    TypeSpec(
        "Bgp", "Bgp", "Bgps", ("hostname",),
        fields=(
            _s("as", 64),
            _s("hostname", 256, rx.NAME),
            _s("neighbor", 15, rx.IPV4_OPT),
            _s("neighbor-as", 64),
            _s("routerip", None, rx.ROUTER_IP),
        ),
        oper_fields=(
            _s("adminStatus"),
            _s("neighborStatus"),
            _i("numRoutes"),
            _l("routes"),
        ),
    ),
    TypeSpec(
        "endpointGroup", "EndpointGroup", "endpointGroups", ("tenantName", "groupName"),
        fields=(
            _s("cfgdTag", 128, rx.TAG),
            _l("extContractsGrps"),
            _s("groupName", 64, rx.NAME),
            _s("ipPool", None, rx.IP_POOL),
            _s("netProfile", 64),
            _s("networkName", 64, rx.NAME),
            _l("policies"),
            _s("tenantName", 64, rx.NAME),
        ),
        link_sets=("ExtContractsGrps", "MatchRules", "Policies", "Services"),
        links=("AppProfile", "NetProfile", "Network", "Tenant"),
        oper_fields=_EPG_OPER,
    ),
    TypeSpec(
        "extContractsGroup", "ExtContractsGroup", "extContractsGroups",
        ("tenantName", "contractsGroupName"),
        fields=(
            _l("contracts"),
            _s("contractsGroupName", 64, rx.NAME),
            _s("contractsType"),
            _s("tenantName", 64, rx.NAME),
        ),
        link_sets=("EndpointGroups",),
    ),
    TypeSpec(
        "global", "Global", "globals", ("name",),
        fields=(
            _s("arpMode", 64, rx.ARP_MODE),
            _s("fwdMode", 64, rx.FWD_MODE),
            _s("name", 64, rx.GLOBAL_NAME),
            _s("networkInfraType", 64, rx.NETWORK_INFRA_TYPE),
            _s("pvtSubnet", None, rx.PVT_SUBNET),
            _s("vlans", None, rx.VLANS),
            _s("vxlans", None, rx.VXLANS),
        ),
        oper_fields=(
            _s("clusterMode"),
            _s("defaultNetwork"),
            _i("freeVXLANsStart"),
            _i("numNetworks"),
            _s("vlansInUse"),
            _s("vxlansInUse"),
        ),
    ),
    TypeSpec(
        "netprofile", "Netprofile", "netprofiles", ("tenantName", "profileName"),
        fields=(
            _i("DSCP", max=63, default=0),
            _s("bandwidth", 64, rx.BANDWIDTH),
            _i("burst", max=10486),
            _s("profileName", 64),
            _s("tenantName"),
        ),
        link_sets=("EndpointGroups",),
        links=("Tenant",),
    ),
    TypeSpec(
        "network", "Network", "networks", ("tenantName", "networkName"),
        fields=(
            _s("cfgdTag", 128, rx.TAG),
            _s("encap", None, rx.ENCAP),
            _s("gateway", None, rx.IPV4_OPT),
            _s("ipv6Gateway", None, rx.IPV6_GATEWAY),
            _s("ipv6Subnet", None, rx.IPV6_SUBNET),
            _s("networkName", 64, rx.NAME),
            _s("nwType", None, rx.NW_TYPE, default="data"),
            _i("pktTag", max=16777216),
            _s("subnet", None, rx.SUBNET),
            _s("tenantName", 64, rx.NAME),
        ),
        link_sets=("EndpointGroups", "Servicelbs", "Services"),
        links=("Tenant",),
        oper_fields=_NETWORK_OPER,
    ),
    TypeSpec(
        "policy", "Policy", "policys", ("tenantName", "policyName"),
        fields=(
            _s("policyName", 64, rx.NAME),
            _s("tenantName", 64, rx.NAME),
        ),
        link_sets=("EndpointGroups", "Rules"),
        links=("Tenant",),
        oper_fields=_POLICY_OPER,
    ),
    TypeSpec(
        "rule", "Rule", "rules", ("tenantName", "policyName", "ruleId"),
        fields=(
            _s("action", None, rx.ACTION),
            _s("direction", None, rx.DIRECTION),
            _s("fromEndpointGroup", 64, rx.NAME_OPT),
            _s("fromIpAddress", None, rx.RULE_IP),
            _s("fromNetwork", 64, rx.NAME_OPT),
            _s("policyName", 64, rx.NAME),
            _i("port", max=65535),
            _i("priority", min=1, max=100, default=1),
            _s("protocol", None, rx.PROTOCOL),
            _s("ruleId", 64, rx.NAME),
            _s("tenantName", 64, rx.NAME),
            _s("toEndpointGroup", 64, rx.NAME_OPT),
            _s("toIpAddress", None, rx.RULE_IP),
            _s("toNetwork", 64, rx.NAME_OPT),
        ),
        link_sets=("Policies",),
        links=("MatchEndpointGroup",),
    ),
    TypeSpec(
        "serviceLB", "ServiceLB", "serviceLBs", ("tenantName", "serviceName"),
        fields=(
            _s("ipAddress", 15, rx.IPV4_OPT),
            _s("networkName", 64, rx.NAME),
            _l("ports"),
            _l("selectors"),
            _s("serviceName", 256, rx.NAME),
            _s("tenantName", 64, rx.NAME),
        ),
        links=("Network", "Tenant"),
        oper_fields=_SERVICE_LB_OPER,
    ),
    TypeSpec(
        "tenant", "Tenant", "tenants", ("tenantName",),
        fields=(
            _s("defaultNetwork", 64, rx.NAME_OPT),
            _s("tenantName", 64, rx.NAME),
        ),
        link_sets=(
            "AppProfiles", "EndpointGroups", "NetProfiles", "Networks",
            "Policies", "Servicelbs", "VolumeProfiles", "Volumes",
        ),
        oper_fields=(
            _sl("endpointGroups", "EndpointGroupOper"),
            _sl("endpoints", "EndpointOper"),
            _sl("networks", "NetworkOper"),
            _sl("policies", "PolicyOper"),
            _sl("servicelbs", "ServiceLBOper"),
            _i("totalAppProfiles"),
            _i("totalEPGs"),
            _i("totalEndpoints"),
            _i("totalNetprofiles"),
            _i("totalNetworks"),
            _i("totalPolicies"),
            _i("totalServicelbs"),
        ),
    ),
    TypeSpec(
        "volume", "Volume", "volumes", ("tenantName", "volumeName"),
        fields=(
            _s("datastoreType"),
            _s("mountPoint"),
            _s("poolName"),
            _s("size"),
            _s("tenantName"),
            _s("volumeName"),
        ),
        link_sets=("ServiceInstances",),
        links=("Tenant",),
    ),
    TypeSpec(
        "volumeProfile", "VolumeProfile", "volumeProfiles", ("tenantName", "volumeProfileName"),
        fields=(
            _s("datastoreType"),
            _s("mountPoint"),
            _s("poolName"),
            _s("size"),
            _s("tenantName"),
            _s("volumeProfileName"),
        ),
        link_sets=("Services",),
        links=("Tenant",),
    ),
    # The endpoint is oper-only: GET /api/v1/inspect/endpoints/{key}/ -> {"Oper": {...}}.
    TypeSpec(
        "endpoint", "Endpoint", "endpoints", (),
        oper_fields=ENDPOINT_OPER_FIELDS,
        has_config=False,
    ),
)

#: Every type, keyed by its modeldb type name.
TYPES: dict[str, TypeSpec] = {t.name: t for t in _TYPE_LIST}

_BY_COLLECTION: dict[str, TypeSpec] = {t.collection: t for t in _TYPE_LIST}


def by_collection(coll: str) -> Optional[TypeSpec]:
    """The type served under ``/api/v1/<coll>/`` (``None`` for an unknown collection).

    Collection names are case-sensitive, as in gorilla/mux: ``Bgps`` and ``policys``
    are Contiv's spellings.  ``endpoints`` maps to the oper-only endpoint type
    (``has_config`` False: it has an inspect route only).
    """
    return _BY_COLLECTION.get(coll)
