"""Go ``json.Unmarshal`` of a request body into a Contiv config struct.

The REST handlers of the original decode the body straight into the generated Go
struct, so what a client may send is defined by Go's rules, reproduced here:
field names match case-insensitively (an exact match wins), unknown fields are
ignored, ``null`` leaves a scalar or struct as it is and empties a list or map,
a later duplicate key wins (maps merge), and the first wrong type decides the
error, worded as Go (>= 1.14) words it::

    json: cannot unmarshal string into Go struct field Network.pktTag of type int
    json: cannot unmarshal array into Go value of type contivModel.Network
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.gojson import GoNumber, JObject, fix_string, parse
from contiv_sdn.model.schema import INT, STR_LIST, TypeSpec

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# Characters outside ASCII that Go's case folding equates with an ASCII letter
# (Kelvin sign ~ k, long s ~ s); field names are ASCII, so nothing else can match.
_FOLD = {ord("\u212a"): "k", ord("\u017f"): "s"}


def _fold(name: str) -> str:
    return name.lower().translate(_FOLD) if name.isascii() else _ascii_fold(name)


def _ascii_fold(name: str) -> str:
    out = []
    for ch in name:
        if ch.isascii():
            out.append(ch.lower())
        else:
            out.append(_FOLD.get(ord(ch), ch))
    return "".join(out)


class _Matcher:
    """Go's field lookup for one struct: exact name first, then the first field
    (in struct order) whose name folds to the same string."""

    __slots__ = ("exact", "folded")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.exact = {n: n for n in names}
        self.folded: dict[str, str] = {}
        for n in names:
            self.folded.setdefault(_fold(n), n)

    def find(self, key: str) -> Optional[str]:
        hit = self.exact.get(key)
        if hit is None:
            hit = self.folded.get(_fold(key))
        return hit


def _kind(value: Any) -> str:
    """The ``Value`` of Go's UnmarshalTypeError for a JSON value."""
    if isinstance(value, JObject):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, GoNumber):
        return "number"
    return "null"


def _type_error(kind: str, go_type: str, struct: str, path: list[str]) -> DecodeError:
    return DecodeError(
        f"json: cannot unmarshal {kind} into Go struct field "
        f"{struct}.{'.'.join(path)} of type {go_type}"
    )


def _as_string(value: Any, current: str, struct: str, path: list[str]) -> str:
    if value is None:
        return current
    if isinstance(value, str):
        return fix_string(value)
    raise _type_error(_kind(value), "string", struct, path)


def _as_int(value: Any, current: int, struct: str, path: list[str]) -> int:
    if value is None:
        return current
    if isinstance(value, GoNumber):
        text = value.text
        # strconv.ParseInt(text, 10, 64): no fraction, no exponent, int64 range.
        digits = text[1:] if text.startswith("-") else text
        if digits.isdigit() and len(digits) <= 19:
            n = int(text)
            if _INT64_MIN <= n <= _INT64_MAX:
                return n
        raise _type_error("number " + text, "int", struct, path)
    raise _type_error(_kind(value), "int", struct, path)


def _as_str_list(value: Any, struct: str, path: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or isinstance(value, JObject):
        raise _type_error(_kind(value), "[]string", struct, path)
    return [_as_string(v, "", struct, path) for v in value]


def _decode_link(value: Any, link: dict, struct: str, path: list[str]) -> dict:
    """modeldb.Link ``{"type", "key"}``; ``null`` leaves it unchanged."""
    if value is None:
        return link
    if not isinstance(value, JObject):
        raise _type_error(_kind(value), "modeldb.Link", struct, path)
    for k, v in value:
        name = _LINK_FIELDS.find(k)
        if name is not None:
            link[name] = _as_string(v, link[name], "Link", path + [name])
    return link


_LINK_FIELDS = _Matcher(("type", "key"))


def _decode_link_map(value: Any, current: dict, struct: str, path: list[str]) -> dict:
    """map[string]modeldb.Link: ``null`` empties it, an object adds to it."""
    if value is None:
        return {}
    if not isinstance(value, JObject):
        raise _type_error(_kind(value), "map[string]modeldb.Link", struct, path)
    for k, v in value:
        current[fix_string(k)] = _decode_link(v, {"type": "", "key": ""}, struct, path)
    return current


def _decode_sub_struct(
    value: Any,
    target: dict,
    go_name: str,
    matcher: _Matcher,
    struct: str,
    path: list[str],
    member: Callable[[Any, Any, str, list[str]], Any],
) -> None:
    """A nested struct (``link-sets`` or ``links``): members decoded by ``member``."""
    if value is None:
        return
    if not isinstance(value, JObject):
        raise _type_error(_kind(value), "contivModel." + go_name, struct, path)
    for k, v in value:
        name = matcher.find(k)
        if name is not None:
            target[name] = member(v, target[name], go_name, path + [name])


class _ConfigDecoder:
    """The per-type lookup tables, built once."""

    def __init__(self, spec: TypeSpec) -> None:
        self.spec = spec
        names = ["key"] + [f.name for f in spec.fields]
        if spec.link_sets:
            names.append("link-sets")
        if spec.links:
            names.append("links")
        self.matcher = _Matcher(tuple(names))
        self.link_sets = _Matcher(spec.link_sets)
        self.links = _Matcher(spec.links)
        self.types = {f.name: f.type for f in spec.fields}
        self.types["key"] = str

    def decode(self, value: Any) -> dict:
        spec = self.spec
        if value is None:
            return spec.zero()  # Go: null into a struct is a no-op
        if not isinstance(value, JObject):
            raise DecodeError(
                f"json: cannot unmarshal {_kind(value)} into Go value of type "
                f"contivModel.{spec.go_name}"
            )
        obj = spec.zero()
        struct = spec.go_name
        for k, v in value:
            name = self.matcher.find(k)
            if name is None:
                continue
            path = [name]
            if name == "link-sets":
                _decode_sub_struct(
                    v, obj["link-sets"], struct + "LinkSets", self.link_sets, struct, path,
                    _decode_link_map,
                )
            elif name == "links":
                _decode_sub_struct(
                    v, obj["links"], struct + "Links", self.links, struct, path,
                    _decode_link,
                )
            else:
                t = self.types[name]
                if t is INT:
                    obj[name] = _as_int(v, obj[name], struct, path)
                elif t == STR_LIST:
                    obj[name] = _as_str_list(v, struct, path)
                else:
                    obj[name] = _as_string(v, obj[name], struct, path)
        return obj


_DECODERS: dict[str, _ConfigDecoder] = {}


def decode(spec: TypeSpec, body: Union[bytes, str]) -> dict:
    """Decode a POST/PUT body into ``spec``'s config struct, or raise :class:`DecodeError`.

    Returns every config field (zero values filled in: ``0``, ``""``, ``[]``), the
    body's ``key`` (the REST layer overrides it with the URL key), and
    ``"link-sets"`` (each declared link-set: ``{objKey: {"type", "key"}}``) and
    ``"links"`` (each declared link: ``{"type", "key"}``) as given in the body.
    """
    if not spec.has_config:
        raise ValueError(f"{spec.name} has no config object")
    dec = _DECODERS.get(spec.name)
    if dec is None:
        dec = _DECODERS[spec.name] = _ConfigDecoder(spec)
    return dec.decode(parse(body))
