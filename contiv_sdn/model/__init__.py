"""The Contiv object model: one spec per type, Go-compatible decoding, validation
and wire encoding.  Pure code, no I/O: the REST API calls it.

Typical POST handler::

    spec = by_collection(coll)
    obj = validate(spec, decode(spec, body), key)   # ModelError -> HTTP 500, str(e)
    ...
    return encode_json(to_wire(spec, obj))
"""

from contiv_sdn.model.decode import decode
from contiv_sdn.model.errors import DecodeError, ModelError
from contiv_sdn.model.gojson import encode_json
from contiv_sdn.model.schema import (
    ENDPOINT_OPER_FIELDS,
    LINK_TARGETS,
    OPER_STRUCTS,
    TYPES,
    Field,
    StructSpec,
    TypeSpec,
    by_collection,
)
from contiv_sdn.model.validate import normalize, validate
from contiv_sdn.model.wire import (
    endpoint_oper_to_wire,
    inspect_to_wire,
    make_link,
    oper_to_wire,
    to_wire,
)

__all__ = [
    "TYPES",
    "TypeSpec",
    "StructSpec",
    "Field",
    "OPER_STRUCTS",
    "LINK_TARGETS",
    "ENDPOINT_OPER_FIELDS",
    "ModelError",
    "DecodeError",
    "by_collection",
    "decode",
    "normalize",
    "validate",
    "to_wire",
    "oper_to_wire",
    "endpoint_oper_to_wire",
    "inspect_to_wire",
    "encode_json",
    "make_link",
]
