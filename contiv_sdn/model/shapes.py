"""Declared shapes of the JSON that crosses a process boundary outside the model routes.

The model routes decode into Contiv's generated structs (:mod:`contiv_sdn.model.decode`).
Everything else a process accepts — the netmaster's ``/plugin/*`` calls, the agent's
local API, the Docker driver calls, netplugin's replies to ``contiv-cni`` — is declared
here as a :class:`Struct` of typed fields and decoded with the same Go rules, so a
request is type-checked *before* anything is written or acted on, and a wrong type is
refused with Go's text (``json: cannot unmarshal number into Go struct field
CreateEndpointRequest.ConfigEP.Host of type string``) instead of travelling on as a
dict where a string was meant.

Parsing is :func:`contiv_sdn.model.gojson.parse`: NaN/Infinity are refused (``invalid
character 'N' looking for beginning of value``) and nesting is bounded at Go's depth,
without recursion.  A decoded struct is a plain ``dict`` holding every declared field
(zero value when absent or ``null``), so callers index it without guessing.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

from contiv_sdn.model.decode import _as_int, _as_string, _kind, _Matcher, _type_error
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.gojson import GoNumber, JObject, fix_string, parse


_INF = float("inf")


class Type:
    """A Go field type: its name (for error texts), zero value and decoder."""

    go: str = ""

    def zero(self) -> Any:
        raise NotImplementedError

    def decode(self, value: Any, current: Any, struct: str, path: List[str]) -> Any:
        raise NotImplementedError


class _Str(Type):
    go = "string"

    def zero(self) -> str:
        return ""

    def decode(self, value, current, struct, path):
        return _as_string(value, current, struct, path)


class _Int(Type):
    go = "int"

    def zero(self) -> int:
        return 0

    def decode(self, value, current, struct, path):
        return _as_int(value, current, struct, path)


class _Uint64(Type):
    """``uint64`` (a datapath id): an unsigned integer literal below 2**64; a sign,
    fraction or exponent is Go's unmarshal error."""

    go = "uint64"

    def zero(self) -> int:
        return 0

    def decode(self, value, current, struct, path):
        if value is None:
            return current
        if isinstance(value, GoNumber):
            if value.text.isdigit() and len(value.text) <= 20 and int(value.text) < 1 << 64:
                return int(value.text)
            raise _type_error("number " + value.text, self.go, struct, path)
        raise _type_error(_kind(value), self.go, struct, path)


class _Float(Type):
    go = "float64"

    def zero(self) -> float:
        return 0.0

    def decode(self, value, current, struct, path):
        if value is None:
            return current
        if isinstance(value, GoNumber):
            f = float(value.text)
            if f in (float("inf"), float("-inf")):
                raise _type_error("number " + value.text, self.go, struct, path)
            return f
        raise _type_error(_kind(value), self.go, struct, path)


class _Bool(Type):
    go = "bool"

    def zero(self) -> bool:
        return False

    def decode(self, value, current, struct, path):
        if value is None:
            return current
        if isinstance(value, bool):
            return value
        raise _type_error(_kind(value), self.go, struct, path)


class _Any(Type):
    """``interface{}``: any JSON value, as plain Python (numbers as float64, like Go)."""

    go = "interface {}"

    def zero(self) -> Any:
        return None

    def decode(self, value, current, struct, path):
        return plain(value)


class ListOf(Type):
    """``[]T``: ``null`` empties it."""

    def __init__(self, elem: Type):
        self.elem = elem
        self.go = "[]" + elem.go

    def zero(self) -> list:
        return []

    def decode(self, value, current, struct, path):
        if value is None:
            return []
        if not isinstance(value, list) or isinstance(value, JObject):
            raise _type_error(_kind(value), self.go, struct, path)
        return [self.elem.decode(v, self.elem.zero(), struct, path) for v in value]


class MapOf(Type):
    """``map[string]T``: ``null`` empties it, an object adds to it (Go merges)."""

    def __init__(self, elem: Type):
        self.elem = elem
        self.go = "map[string]" + elem.go

    def zero(self) -> dict:
        return {}

    def decode(self, value, current, struct, path):
        if value is None:
            return {}
        if not isinstance(value, JObject):
            raise _type_error(_kind(value), self.go, struct, path)
        out = dict(current or {})
        for k, v in value:
            out[fix_string(k)] = self.elem.decode(v, self.elem.zero(), struct, path)
        return out


STR: Type = _Str()
INT: Type = _Int()
UINT64: Type = _Uint64()
FLOAT: Type = _Float()
BOOL: Type = _Bool()
ANY: Type = _Any()
STR_MAP: Type = MapOf(STR)
STR_LIST: Type = ListOf(STR)


class Struct(Type):
    """A Go struct: named, typed fields matched case-insensitively (exact name first);
    unknown fields are ignored, as Go does."""

    def __init__(self, go_name: str, fields: Sequence[Tuple[str, Type]]):
        self.go_name = go_name
        self.go = go_name
        self.fields: Dict[str, Type] = dict(fields)
        self._matcher = _Matcher(tuple(self.fields))

    def zero(self) -> dict:
        return {name: t.zero() for name, t in self.fields.items()}

    def decode(self, value, current, struct, path):
        if value is None:
            return current if current is not None else self.zero()
        if not isinstance(value, JObject):
            if path:
                raise _type_error(_kind(value), self.go, struct, path)
            raise DecodeError(f"json: cannot unmarshal {_kind(value)} into Go value of type "
                              f"{self.go}")
        out = dict(current) if current is not None else self.zero()
        for k, v in value:
            name = self._matcher.find(k)
            if name is None:
                continue
            t = self.fields[name]
            out[name] = t.decode(v, out[name], self.go_name, path + [name])
        return out

    def load(self, body: Union[bytes, str]) -> dict:
        """Parse and decode a request body; raises :class:`DecodeError` with Go's text."""
        return self.decode(parse(body), None, self.go_name, [])

    def coerce(self, value: Any) -> dict:
        """Decode an already-parsed plain-Python value (e.g. ``json.loads`` output of a
        trusted-format channel) with the same checks."""
        return self.decode(from_plain(value), None, self.go_name, [])


def plain(value: Any, exact_ints: bool = False) -> Any:
    """A parsed gojson value as plain Python (dict, list, str, float, bool, None),
    without recursion (gojson allows Go's nesting depth, far past Python's stack).
    Numbers are float64 as in Go's ``interface{}``, or ``int`` where the literal is
    an integer and ``exact_ints`` is set."""
    def conv(v: Any) -> Tuple[Any, bool]:
        if isinstance(v, JObject):
            return {}, True
        if isinstance(v, list):
            return [], True
        if isinstance(v, GoNumber):
            if exact_ints:
                try:
                    return int(v.text), False
                except ValueError:
                    pass
            f = float(v.text)
            if f in (_INF, -_INF):  # Go: a number out of float64's range is an error
                raise DecodeError(f"json: cannot unmarshal number {v.text[:40]} into Go value "
                                  f"of type float64")
            return f, False
        if isinstance(v, str):
            return fix_string(v), False
        return v, False

    root, nested = conv(value)
    stack = [(value, root)] if nested else []
    while stack:
        src, dst = stack.pop()
        items = src if isinstance(src, JObject) else enumerate(src)
        for k, v in items:
            out, nested = conv(v)
            if isinstance(dst, dict):
                dst[fix_string(k)] = out  # a later duplicate wins, as in Go
            else:
                dst.append(out)
            if nested:
                stack.append((v, out))
    return root


def from_plain(value: Any) -> Any:
    """The inverse view: plain Python (from ``json.loads``) as gojson values, so
    :meth:`Struct.coerce` applies Go's rules to it.  NaN/Infinity are refused."""
    def conv(v: Any) -> Tuple[Any, bool]:
        if isinstance(v, dict):
            return JObject(), True
        if isinstance(v, (list, tuple)):
            return [], True
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v, False
        if isinstance(v, int):
            return GoNumber(str(v)), False
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise DecodeError("json: unsupported value: " + repr(v).replace("inf", "+Inf")
                                  .replace("nan", "NaN"))
            return GoNumber(repr(v)), False
        raise DecodeError(f"json: unsupported type: {type(v).__name__}")

    root, nested = conv(value)
    stack = [(value, root)] if nested else []
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for k, v in items:
            out, nested = conv(v)
            if isinstance(dst, JObject):
                dst.append((str(k), out))
            else:
                dst.append(out)
            if nested:
                stack.append((v, out))
    return root


def loads(body: Union[bytes, str]) -> Any:
    """Strict JSON for free-form documents (CNI config, Docker options): Go's parser
    (no NaN/Infinity, bounded depth), plain Python out, integers kept exact.
    Raises :class:`DecodeError` with Go's text."""
    return plain(parse(body), exact_ints=True)


__all__ = ["Type", "Struct", "ListOf", "MapOf", "STR", "INT", "UINT64", "FLOAT", "BOOL", "ANY",
           "STR_MAP", "STR_LIST", "plain", "from_plain", "loads"]
