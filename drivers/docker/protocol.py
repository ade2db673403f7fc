"""The libnetwork remote driver and IPAM protocols: which calls exist and what their bodies hold.

Docker calls a plugin with ``POST /<Interface>.<Method>`` and a JSON body (see
libnetwork's ``docs/remote.md`` and ``docs/ipam.md``).  The rules of those
documents that this module enforces:

* a request that cannot be decoded, or lacks a field the call needs, is a
  *syntactic* problem: HTTP 4xx with ``{"Err": "..."}``;
* a request that is understood but cannot be carried out gets ``{"Err": "..."}``
  (we answer it with HTTP 500, which Docker's plugin client also turns into
  the ``Err`` text);
* an unknown call is HTTP 404 (and only that: Docker's plugin client reads a
  404 as "not implemented", so a missing network or endpoint is a 500).

Each call's request is declared as the Go struct libnetwork sends
(``drivers/remote/api`` and ``ipams/remote/api``: ``CreateNetworkRequest``,
``RequestPoolRequest``...) in :data:`REQUESTS`, and decoded with Go's rules
(:mod:`contiv_sdn.model.shapes`): strict JSON (no NaN/Infinity, nesting bounded as
Go bounds it, no recursion), ``null`` for any field means its zero value, unknown
fields are ignored, names match case-insensitively as in Go, ``Options`` maps are
``map[string]interface{}`` (``map[string]string`` for IPAM and AllocateNetwork).
A field of the wrong type is refused before the driver sees the call, naming the
field and quoting Go's error.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional, Tuple

from contiv_sdn.model import gojson
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.gojson import JObject
from contiv_sdn.model.shapes import (ANY, BOOL, INT, STR, STR_MAP, ListOf, MapOf, Struct, Type,
                                     loads)

#: Media type of plugin responses (Docker accepts plain JSON too).
CONTENT_TYPE = b"application/vnd.docker.plugins.v1+json"


class BadRequest(ValueError):
    """The body is not what the call needs; answered with HTTP 400."""


class DriverError(RuntimeError):
    """The call was understood but failed; answered with ``{"Err": str(self)}``."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


#: ``map[string]interface{}``: free-form options (nested values allowed).
OPTIONS = MapOf(ANY)

#: ``driverapi.IPAMData`` as it travels (its MarshalJSON writes the networks as strings).
IPAM_DATA = Struct("IPAMData", [("AddressSpace", STR), ("Pool", STR), ("Gateway", STR),
                                ("AuxAddresses", STR_MAP)])
ENDPOINT_INTERFACE = Struct("EndpointInterface", [("Address", STR), ("AddressIPv6", STR),
                                                  ("MacAddress", STR)])


def _ep(go_name: str, *more: Tuple[str, Type]) -> Struct:
    return Struct(go_name, [("NetworkID", STR), ("EndpointID", STR), *more])


def _net(go_name: str, *more: Tuple[str, Type]) -> Struct:
    return Struct(go_name, [("NetworkID", STR), *more])


_DISCOVERY = Struct("DiscoveryNotification", [("DiscoveryType", INT), ("DiscoveryData", ANY)])

#: Every call we serve: its request shape and the fields that must not be empty/zero
#: (None: no body expected).
REQUESTS: Dict[str, Optional[Tuple[Struct, Tuple[str, ...]]]] = {
    "Plugin.Activate": None,
    "Plugin.Deactivate": None,
    # -- NetworkDriver ---------------------------------------------------------
    "NetworkDriver.GetCapabilities": None,
    "NetworkDriver.CreateNetwork": (_net("CreateNetworkRequest", ("Options", OPTIONS),
                                         ("IPv4Data", ListOf(IPAM_DATA)),
                                         ("IPv6Data", ListOf(IPAM_DATA))), ("NetworkID",)),
    "NetworkDriver.DeleteNetwork": (_net("DeleteNetworkRequest"), ("NetworkID",)),
    "NetworkDriver.AllocateNetwork": (_net("AllocateNetworkRequest", ("Options", STR_MAP),
                                           ("IPv4Data", ListOf(IPAM_DATA)),
                                           ("IPv6Data", ListOf(IPAM_DATA))), ("NetworkID",)),
    "NetworkDriver.FreeNetwork": (_net("FreeNetworkRequest"), ("NetworkID",)),
    "NetworkDriver.CreateEndpoint": (_ep("CreateEndpointRequest",
                                         ("Interface", ENDPOINT_INTERFACE), ("Options", OPTIONS)),
                                     ("NetworkID", "EndpointID")),
    "NetworkDriver.EndpointOperInfo": (_ep("EndpointInfoRequest"), ("NetworkID", "EndpointID")),
    "NetworkDriver.DeleteEndpoint": (_ep("DeleteEndpointRequest"), ("NetworkID", "EndpointID")),
    "NetworkDriver.Join": (_ep("JoinRequest", ("SandboxKey", STR), ("Options", OPTIONS)),
                           ("NetworkID", "EndpointID", "SandboxKey")),
    "NetworkDriver.Leave": (_ep("LeaveRequest"), ("NetworkID", "EndpointID")),
    "NetworkDriver.DiscoverNew": (_DISCOVERY, ("DiscoveryType",)),
    "NetworkDriver.DiscoverDelete": (_DISCOVERY, ("DiscoveryType",)),
    "NetworkDriver.ProgramExternalConnectivity": (
        _ep("ProgramExternalConnectivityRequest", ("Options", OPTIONS)),
        ("NetworkID", "EndpointID")),
    "NetworkDriver.RevokeExternalConnectivity": (_ep("RevokeExternalConnectivityRequest"),
                                                 ("NetworkID", "EndpointID")),
    # -- IpamDriver -------------------------------------------------------------
    "IpamDriver.GetCapabilities": None,
    "IpamDriver.GetDefaultAddressSpaces": None,
    "IpamDriver.RequestPool": (Struct("RequestPoolRequest", [
        ("AddressSpace", STR), ("Pool", STR), ("SubPool", STR), ("Options", STR_MAP),
        ("V6", BOOL)]), ()),
    "IpamDriver.ReleasePool": (Struct("ReleasePoolRequest", [("PoolID", STR)]), ("PoolID",)),
    "IpamDriver.RequestAddress": (Struct("RequestAddressRequest", [
        ("PoolID", STR), ("Address", STR), ("Options", STR_MAP)]), ("PoolID",)),
    "IpamDriver.ReleaseAddress": (Struct("ReleaseAddressRequest", [
        ("PoolID", STR), ("Address", STR)]), ("PoolID", "Address")),
}

#: Identifiers (Docker's are 64 hex characters; pool ids a placement and a CIDR) longer
#: than this are refused: nothing legitimate comes near it, and they end up in state
#: files, OVS records and logs.
MAX_ID = 512
_IDS = ("NetworkID", "EndpointID", "PoolID")


def _pytype(t: Type) -> type:
    if t is STR:
        return str
    if t is INT:
        return int
    if t is BOOL:
        return bool
    if isinstance(t, ListOf):
        return list
    if isinstance(t, (MapOf, Struct)):
        return dict
    return object


# field name -> (type, required), the plain view of :data:`REQUESTS` (for tests and docs).
Spec = Dict[str, Tuple[type, bool]]

#: Every call we serve and the fields of its request body (None: no body expected).
CALLS: Dict[str, Optional[Spec]] = {
    call: None if entry is None else
    {name: (_pytype(t), name in entry[1]) for name, t in entry[0].fields.items()}
    for call, entry in REQUESTS.items()
}

_FIELD_ERROR = re.compile(r"Go struct field [^.\s]+\.(\S+) of type (\S+)$")


def _describe(go_type: str) -> str:
    if go_type == "string":
        return "a string"
    if go_type in ("int", "float64"):
        return "an integer" if go_type == "int" else "a number"
    if go_type == "bool":
        return "a boolean"
    if go_type.startswith("[]"):
        return "an array"
    return "an object"


def _kind_of(value: Any) -> str:
    if isinstance(value, JObject):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def parse(call: str, raw: bytes) -> Dict[str, Any]:
    """Decode and check the body of ``call`` into its declared shape (every field
    present, typed; absent/null fields hold Go's zero value)."""
    entry = REQUESTS[call]
    text = raw.strip()
    if entry is None:
        # Docker sends no body here; tolerate "{}" or "null" from other clients
        if text and text not in (b"{}", b"null"):
            try:
                loads(text)
            except DecodeError as e:
                raise BadRequest(f"{call}: the body is not valid JSON ({e})") from None
        return {}
    shape, required = entry
    if not text:
        raise BadRequest(f"{call}: empty body; expected a JSON object with "
                         f"{', '.join(required) or 'its fields'}")
    try:
        value = gojson.parse(text)
    except DecodeError as e:
        raise BadRequest(f"{call}: the body is not valid JSON ({e})") from None
    if not isinstance(value, JObject):
        raise BadRequest(f"{call}: the body must be a JSON object ({shape.go_name}), not "
                         f"{_kind_of(value)}")
    try:
        out = shape.decode(value, None, shape.go_name, [])
    except DecodeError as e:
        m = _FIELD_ERROR.search(str(e))
        if m is None:
            raise BadRequest(f"{call}: {e}") from None
        raise BadRequest(f"{call}: {m.group(1)} must be {_describe(m.group(2))} ({e})") \
            from None
    for name in required:
        if not out[name]:
            raise BadRequest(f"{call}: {name} is required")
    for name in _IDS:
        if len(out.get(name) or "") > MAX_ID:
            raise BadRequest(f"{call}: {name} is {len(out[name])} characters long; "
                             f"at most {MAX_ID} are accepted")
    return out


def error_body(message: str) -> bytes:
    return json.dumps({"Err": message}).encode()
