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

Go's JSON decoding is what Docker's own plugins use, so we accept what it
accepts: ``null`` for any optional field, unknown fields ignored.  Field names
are matched exactly (Docker always sends them in this spelling).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

#: Media type of plugin responses (Docker accepts plain JSON too).
CONTENT_TYPE = b"application/vnd.docker.plugins.v1+json"


class BadRequest(ValueError):
    """The body is not what the call needs; answered with HTTP 400."""


class DriverError(RuntimeError):
    """The call was understood but failed; answered with ``{"Err": str(self)}``."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


# field name -> (type, required).  Types: str, dict, list, bool, int.
Spec = Dict[str, Tuple[type, bool]]

_NET = {"NetworkID": (str, True)}
_EP = {"NetworkID": (str, True), "EndpointID": (str, True)}

#: Every call we serve and the fields of its request body (None: no body expected).
CALLS: Dict[str, Optional[Spec]] = {
    "Plugin.Activate": None,
    "Plugin.Deactivate": None,
    # -- NetworkDriver ---------------------------------------------------------
    "NetworkDriver.GetCapabilities": None,
    "NetworkDriver.CreateNetwork": {**_NET, "Options": (dict, False), "IPv4Data": (list, False),
                                    "IPv6Data": (list, False)},
    "NetworkDriver.DeleteNetwork": dict(_NET),
    "NetworkDriver.AllocateNetwork": {**_NET, "Options": (dict, False),
                                      "IPv4Data": (list, False), "IPv6Data": (list, False)},
    "NetworkDriver.FreeNetwork": dict(_NET),
    "NetworkDriver.CreateEndpoint": {**_EP, "Interface": (dict, False), "Options": (dict, False)},
    "NetworkDriver.EndpointOperInfo": dict(_EP),
    "NetworkDriver.DeleteEndpoint": dict(_EP),
    "NetworkDriver.Join": {**_EP, "SandboxKey": (str, True), "Options": (dict, False)},
    "NetworkDriver.Leave": dict(_EP),
    "NetworkDriver.DiscoverNew": {"DiscoveryType": (int, True), "DiscoveryData": (object, False)},
    "NetworkDriver.DiscoverDelete": {"DiscoveryType": (int, True),
                                     "DiscoveryData": (object, False)},
    "NetworkDriver.ProgramExternalConnectivity": {**_EP, "Options": (dict, False)},
    "NetworkDriver.RevokeExternalConnectivity": dict(_EP),
    # -- IpamDriver -------------------------------------------------------------
    "IpamDriver.GetCapabilities": None,
    "IpamDriver.GetDefaultAddressSpaces": None,
    "IpamDriver.RequestPool": {"AddressSpace": (str, False), "Pool": (str, False),
                               "SubPool": (str, False), "Options": (dict, False),
                               "V6": (bool, False)},
    "IpamDriver.ReleasePool": {"PoolID": (str, True)},
    "IpamDriver.RequestAddress": {"PoolID": (str, True), "Address": (str, False),
                                  "Options": (dict, False)},
    "IpamDriver.ReleaseAddress": {"PoolID": (str, True), "Address": (str, True)},
}

_ZERO = {str: "", dict: {}, list: [], bool: False, int: 0, object: None}
_TYPE_NAMES = {str: "a string", dict: "an object", list: "an array", bool: "a boolean",
               int: "an integer"}


def parse(call: str, raw: bytes) -> Dict[str, Any]:
    """Decode and check the body of ``call``; absent/null optional fields get Go's zero value."""
    spec = CALLS[call]
    text = raw.strip()
    if spec is None:
        # Docker sends no body here; tolerate "{}" or "null" from other clients.
        if text and text not in (b"{}", b"null"):
            try:
                json.loads(text)
            except ValueError as e:
                raise BadRequest(f"{call}: the body is not valid JSON ({e})") from None
        return {}
    if not text:
        raise BadRequest(f"{call}: empty body; expected a JSON object with "
                         f"{', '.join(k for k, (_, req) in spec.items() if req)}")
    try:
        body = json.loads(text)
    except ValueError as e:
        raise BadRequest(f"{call}: the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"{call}: the body must be a JSON object, not {type(body).__name__}")
    out: Dict[str, Any] = {}
    for name, (typ, required) in spec.items():
        value = body.get(name)
        if value is None:
            if required:
                raise BadRequest(f"{call}: {name} is required")
            out[name] = _copy(_ZERO[typ])
            continue
        if typ is not object and not _is(value, typ):
            raise BadRequest(f"{call}: {name} must be {_TYPE_NAMES[typ]}, "
                             f"not {json.dumps(value)[:60]}")
        if required and typ is str and not value:
            raise BadRequest(f"{call}: {name} must not be empty")
        out[name] = value
    if call == "NetworkDriver.CreateEndpoint":
        _check_interface(call, out["Interface"])
    if call in ("NetworkDriver.CreateNetwork", "NetworkDriver.AllocateNetwork"):
        for key in ("IPv4Data", "IPv6Data"):
            for entry in out[key]:
                if not isinstance(entry, dict):
                    raise BadRequest(f"{call}: every {key} entry must be an object")
    return out


def _is(value: Any, typ: type) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) \
        else value


def _check_interface(call: str, iface: Dict[str, Any]) -> None:
    for key in ("Address", "AddressIPv6", "MacAddress"):
        value = iface.get(key)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{call}: Interface.{key} must be a string")


def error_body(message: str) -> bytes:
    return json.dumps({"Err": message}).encode()
