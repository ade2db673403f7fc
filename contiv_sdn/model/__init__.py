"""The Contiv object model: one spec per type, Go-compatible decoding, validation
and wire encoding.  Pure code, no I/O: the REST API calls it.

Typical POST handler::

    spec = by_collection(coll)
    obj = validate(spec, decode(spec, body), key)   # ModelError -> HTTP 500, str(e)
    ...
    return encode_json(to_wire(spec, obj))

The names below are loaded on first use (PEP 562): ``contiv-cni`` runs once per
container event and needs only ``errors`` and ``shapes``, so importing the package
must not build the whole model (schema tables, validation, wire encoding).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (like importlib, types) costs start-up time in contiv-cni
    from typing import Any

# Each public name and the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "TYPES": "schema",
    "TypeSpec": "schema",
    "StructSpec": "schema",
    "Field": "schema",
    "OPER_STRUCTS": "schema",
    "LINK_TARGETS": "schema",
    "ENDPOINT_OPER_FIELDS": "schema",
    "by_collection": "schema",
    "ModelError": "errors",
    "DecodeError": "errors",
    "decode": "decode",
    "normalize": "validate",
    "validate": "validate",
    "to_wire": "wire",
    "oper_to_wire": "wire",
    "endpoint_oper_to_wire": "wire",
    "inspect_to_wire": "wire",
    "make_link": "wire",
    "encode_json": "gojson",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    qualified = f"{__name__}.{module}"
    __import__(qualified)
    value = getattr(sys.modules[qualified], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(type(sys)):  # types.ModuleType
    """``decode`` and ``validate`` are both a function and the submodule defining it.

    Importing a submodule binds it on the package (``contiv_sdn.model.decode =
    <module>``), which would then shadow the function for every later ``from
    contiv_sdn.model import decode`` -- depending on import order.  The eager
    ``__init__`` this replaces rebound the function after the import; this does
    the same at the moment the import system binds the submodule."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, type(sys)) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
