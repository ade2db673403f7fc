"""Go ``encoding/json`` behaviour at the byte level: parsing a request body the way
``json.NewDecoder(r.Body).Decode`` reads it, and writing ``json.NewEncoder(w).Encode``.

Why not plain ``json``: Contiv clients see Go's exact error texts (``EOF``,
``unexpected EOF``, ``invalid character 'x' looking for beginning of value``) and
Go's output bytes (``\\u003c`` for ``<``, no spaces, trailing newline).  Parsing
goes through the C ``json`` module first; only when it fails (or recurses too
deep) does a small iterative re-implementation of Go's scanner run, to find the
error Go would report, or to parse what Python could not.

Parsed values keep what the struct decoder needs: objects are :class:`JObject`
(the list of ``(key, value)`` pairs in document order, duplicates included, as
Go visits them) and numbers are :class:`GoNumber` (the literal text, because Go
decides int-vs-error on the literal).  Strings follow Go: a lone surrogate escape
or an invalid UTF-8 byte becomes U+FFFD.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Union

from contiv_sdn.model.errors import DecodeError

# Go's scanner refuses deeper nesting than this (encoding/json maxNestingDepth).
MAX_DEPTH = 10000
_WS = b" \t\r\n"


class JObject(list):
    """A JSON object as its ``(key, value)`` pairs, in document order."""

    __slots__ = ()


class GoNumber:
    """A JSON number, kept as its literal text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"GoNumber({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoNumber) and other.text == self.text

    __hash__ = None  # type: ignore[assignment]


class _Constant(ValueError):
    """Python accepts NaN/Infinity; Go does not."""


def _no_constant(name: str) -> Any:
    raise _Constant(name)


_DECODER = json.JSONDecoder(
    object_pairs_hook=JObject,
    parse_int=GoNumber,
    parse_float=GoNumber,
    parse_constant=_no_constant,
)

_SURROGATES = re.compile("[\ud800-\udfff]")


def fix_string(s: str) -> str:
    """Go's view of a decoded string: lone surrogates (and invalid UTF-8 bytes,
    which arrive here as surrogate escapes) become U+FFFD, one per byte/escape."""
    if _SURROGATES.search(s) is None:
        return s
    return _SURROGATES.sub("\ufffd", s)


def parse(body: Union[bytes, str]) -> Any:
    """Parse the first JSON value of ``body`` as Go's ``json.Decoder.Decode`` does.

    Whatever follows the first value is ignored (the Decoder never reads it).
    Raises :class:`DecodeError` with Go's text: ``EOF`` for an empty or blank
    body, ``unexpected EOF`` for a truncated one, ``invalid character ...``.
    """
    if isinstance(body, str):
        text = body
        data = None
    else:
        data = bytes(body)
        text = data.decode("utf-8", "surrogateescape")
    start = 0
    n = len(text)
    while start < n and text[start] in " \t\r\n":
        start += 1
    if start == n:
        raise DecodeError("EOF")
    try:
        value, _end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and NaN/Infinity.  The leading blanks
        # are ASCII, so ``start`` is also the byte offset.
        if data is None:
            data = text.encode("utf-8", "surrogatepass")
        return _GoParser(data, start).parse()
    if isinstance(value, GoNumber):
        # A top-level number: Python stops at "1" in "1.x" or "1e", Go's scanner
        # fails there; let the Go scanner decide (it is short either way).
        if data is None:
            data = text.encode("utf-8", "surrogatepass")
        return _GoParser(data, start).parse()
    return value


# --- the fallback: Go's scanner, iteratively --------------------------------------

_ESCAPES = {
    ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b",
    ord("f"): "\f", ord("n"): "\n", ord("r"): "\r", ord("t"): "\t",
}
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_PLAIN_RUN = re.compile(rb'[^"\\\x00-\x1f]*')
_GO_QUOTE = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 0x5C: "\\\\"}


def quote_char(c: int) -> str:
    """Go's ``quoteChar``: how ``invalid character ...`` shows the offending byte."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    ch = chr(c)
    if c in _GO_QUOTE:
        s = _GO_QUOTE[c]
    elif ch.isprintable():
        s = ch
    elif c < 0x80:
        s = "\\x%02x" % c
    else:
        s = "\\u%04x" % c
    return "'" + s + "'"


class _Unexpected(Exception):
    pass


class _GoParser:
    """Go's scanner states, with values built on an explicit stack (no recursion)."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    # helpers
    def _skip_ws(self) -> int:
        data, pos, n = self.data, self.pos, len(self.data)
        while pos < n and data[pos] in _WS:
            pos += 1
        self.pos = pos
        if pos >= n:
            raise _Unexpected()
        return data[pos]

    @staticmethod
    def _error(c: int, context: str) -> DecodeError:
        return DecodeError("invalid character " + quote_char(c) + " " + context)

    def parse(self) -> Any:
        try:
            return self._parse()
        except _Unexpected:
            raise DecodeError("unexpected EOF") from None

    def _parse(self) -> Any:
        # stack items: [container, pending_key]; container is JObject or list
        stack: list[list] = []
        while True:
            c = self._skip_ws()
            # begin value
            if c == 0x7B:  # {
                self.pos += 1
                if len(stack) + 1 > MAX_DEPTH:
                    raise self._error(c, "exceeded max depth")
                c = self._skip_ws()
                if c == 0x7D:  # }
                    self.pos += 1
                    value: Any = JObject()
                else:
                    if c != 0x22:
                        raise self._error(c, "looking for beginning of object key string")
                    key = self._string()
                    self._colon()
                    stack.append([JObject(), key])
                    continue
            elif c == 0x5B:  # [
                self.pos += 1
                if len(stack) + 1 > MAX_DEPTH:
                    raise self._error(c, "exceeded max depth")
                c = self._skip_ws()
                if c == 0x5D:  # ]
                    self.pos += 1
                    value = []
                else:
                    stack.append([[], None])
                    continue
            elif c == 0x22:
                value = self._string()
            elif c == 0x2D or c in _DIGITS:
                value = self._number(top=not stack)
            elif c == 0x74:
                value = self._literal(b"true", True)
            elif c == 0x66:
                value = self._literal(b"false", False)
            elif c == 0x6E:
                value = self._literal(b"null", None)
            else:
                raise self._error(c, "looking for beginning of value")

            # end value: attach to the enclosing containers, closing as many as end here
            while True:
                if not stack:
                    return value
                top = stack[-1]
                container = top[0]
                if isinstance(container, JObject):
                    container.append((top[1], value))
                    c = self._skip_ws()
                    if c == 0x2C:  # ,
                        self.pos += 1
                        c = self._skip_ws()
                        if c != 0x22:
                            raise self._error(c, "looking for beginning of object key string")
                        top[1] = self._string()
                        self._colon()
                        break
                    if c == 0x7D:
                        self.pos += 1
                        stack.pop()
                        value = container
                        continue
                    raise self._error(c, "after object key:value pair")
                container.append(value)
                c = self._skip_ws()
                if c == 0x2C:
                    self.pos += 1
                    break
                if c == 0x5D:
                    self.pos += 1
                    stack.pop()
                    value = container
                    continue
                raise self._error(c, "after array element")

    def _colon(self) -> None:
        c = self._skip_ws()
        if c != 0x3A:
            raise self._error(c, "after object key")
        self.pos += 1

    def _string(self) -> str:
        data = self.data
        pos = self.pos + 1  # past the opening quote
        out: list[str] = []
        while True:
            m = _PLAIN_RUN.match(data, pos)
            if m.end() > pos:
                out.append(data[pos:m.end()].decode("utf-8", "surrogateescape"))
                pos = m.end()
            if pos >= len(data):
                raise _Unexpected()
            c = data[pos]
            if c == 0x22:
                self.pos = pos + 1
                return fix_string("".join(out))
            if c < 0x20:
                raise self._error(c, "in string literal")
            # backslash
            pos += 1
            if pos >= len(data):
                raise _Unexpected()
            e = data[pos]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                pos += 1
                continue
            if e != 0x75:  # u
                raise self._error(e, "in string escape code")
            pos += 1
            for i in range(4):
                if pos + i >= len(data):
                    raise _Unexpected()
                if data[pos + i] not in _HEXDIGITS:
                    raise self._error(data[pos + i], "in \\u hexadecimal character escape")
            code = int(data[pos:pos + 4], 16)
            pos += 4
            if 0xD800 <= code < 0xDC00 and data[pos:pos + 2] == b"\\u":
                low = data[pos + 2:pos + 6]
                if len(low) == 4 and all(b in _HEXDIGITS for b in low):
                    lc = int(low, 16)
                    if 0xDC00 <= lc < 0xE000:
                        out.append(chr(0x10000 + ((code - 0xD800) << 10) + (lc - 0xDC00)))
                        pos += 6
                        continue
            out.append("\ufffd" if 0xD800 <= code < 0xE000 else chr(code))

    def _number(self, top: bool) -> GoNumber:
        data, start = self.data, self.pos
        pos = start
        n = len(data)

        def at(p: int) -> int:
            # At the very end of the body the Decoder feeds a space: a top-level
            # number may end there, anything unfinished is "unexpected EOF".
            if p >= n:
                if top:
                    return 0x20
                raise _Unexpected()
            return data[p]

        if data[pos] == 0x2D:
            pos += 1
            c = at(pos)
            if c not in _DIGITS:
                if pos >= n:
                    raise _Unexpected()
                raise self._error(c, "in numeric literal")
        if data[pos] == 0x30:
            pos += 1
        else:
            while pos < n and data[pos] in _DIGITS:
                pos += 1
        if pos < n and data[pos] == 0x2E:
            pos += 1
            c = at(pos)
            if c not in _DIGITS:
                if pos >= n:
                    raise _Unexpected()
                raise self._error(c, "after decimal point in numeric literal")
            while pos < n and data[pos] in _DIGITS:
                pos += 1
        if pos < n and data[pos] in b"eE":
            pos += 1
            if pos < n and data[pos] in b"+-":
                pos += 1
            c = at(pos)
            if c not in _DIGITS:
                if pos >= n:
                    raise _Unexpected()
                raise self._error(c, "in exponent of numeric literal")
            while pos < n and data[pos] in _DIGITS:
                pos += 1
        if pos >= n and not top:
            raise _Unexpected()
        self.pos = pos
        return GoNumber(data[start:pos].decode("ascii"))

    def _literal(self, word: bytes, value: Any) -> Any:
        data, pos = self.data, self.pos
        name = word.decode()
        for i in range(1, len(word)):
            if pos + i >= len(data):
                raise _Unexpected()
            if data[pos + i] != word[i]:
                raise self._error(
                    data[pos + i], f"in literal {name} (expecting {quote_char(word[i])})"
                )
        self.pos = pos + len(word)
        return value


# --- encoding ---------------------------------------------------------------------
#
# One encoder for every JSON this project writes the way Go wrote it: the REST API's
# replies (``json.NewEncoder(w).Encode``), netctl's request bodies (``json.Marshal``)
# and its ``-j`` / ``inspect`` output (``json.MarshalIndent(v, "", "  ")``).
#
# String escapes follow ``encodeState.string`` of the Go releases Contiv was built
# with (netplugin's Dockerfile: golang:1.7.6; the same code through Go 1.21): only
# ``\\``, ``\"``, ``\n``, ``\r`` and ``\t`` get short escapes, every other byte
# below 0x20 is ``\u00XX`` -- so backspace and form feed are ``\u0008`` and
# ``\u000c``, not ``\b``/``\f`` (those short forms only arrived in Go 1.22).  ``<``,
# ``>`` and ``&`` are ``\u003c``... (escapeHTML, on by default), U+2028/U+2029 are
# always escaped, and what is not valid UTF-8 (here: a lone surrogate) is ``\ufffd``.

def _escape_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for c in range(0x20):
        table[c] = "\\u%04x" % c
    table.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    table.update({ord('"'): '\\"', ord("\\"): "\\\\"})
    table.update({ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"})
    table.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
    for c in range(0xD800, 0xE000):
        table[c] = "\\ufffd"
    return table


_ESCAPE = _escape_table()
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')


def _quote(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    return '"' + s.translate(_ESCAPE) + '"'


def _go_float(f: float) -> str:
    """strconv.AppendFloat(f, 'f' or 'e', -1, 64) as encoding/json chooses it."""
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError(f"json: unsupported value: {f!r}")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        # repr is the shortest round-trip form and uses an exponent in this range.
        mant, exp = repr(f).split("e")
        if len(exp) == 3 and exp[0] == "-" and exp[1] == "0":
            exp = "-" + exp[2]  # Go writes e-7, not e-07
        return mant + "e" + exp
    return format(Decimal(repr(f)).normalize(), "f")


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_quote(str(k)) + ":")
            _encode(v, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        first = True
        for v in value:
            if not first:
                out.append(",")
            first = False
            _encode(v, out)
        out.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(value).__name__}")


def marshal(value: Any) -> str:
    """Go's ``json.Marshal(value)`` as text: compact, no trailing newline.

    Dicts keep their insertion order (they stand for Go structs, see
    :func:`contiv_sdn.model.wire.to_wire`); a caller encoding a Go *map* must sort
    its keys first.  Escapes: see the notes above :func:`_escape_table`.
    """
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


# The tokens of marshal()'s compact output: a string, one punctuation byte, or a
# literal (number, true, false, null).  There is no white space to skip.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^"{}\[\],:]+')


def marshal_indent(value: Any, indent: str = "  ") -> str:
    """Go's ``json.MarshalIndent(value, "", indent)`` (what netctl's ``-j`` and
    ``inspect`` print): :func:`marshal`, then re-spaced as Go's ``json.Indent`` does
    it -- one element a line, ``": "`` after a key, an empty ``{}``/``[]`` kept whole.
    Done as a second pass, as in Go, so the compact encoder stays as fast as it is."""
    out: list[str] = []
    depth = 0
    opened = False  # just after "{" or "[": indent only if something follows
    for tok in _TOKENS.findall(marshal(value)):
        closing = tok == "}" or tok == "]"
        if opened and not closing:
            depth += 1
            out.append("\n" + indent * depth)
        if tok == "{" or tok == "[":
            out.append(tok)
            opened = True
            continue
        if tok == ",":
            out.append(",\n" + indent * depth)
        elif tok == ":":
            out.append(": ")
        elif closing and not opened:
            depth -= 1
            out.append("\n" + indent * depth + tok)
        else:
            out.append(tok)
        opened = False
    return "".join(out)


def encode_json(value: Any) -> bytes:
    """Bytes identical to Go's ``json.NewEncoder(w).Encode(value)``: :func:`marshal`
    and a trailing newline, as UTF-8 (non-ASCII is not escaped)."""
    out: list[str] = []
    _encode(value, out)
    out.append("\n")
    return "".join(out).encode("utf-8")
