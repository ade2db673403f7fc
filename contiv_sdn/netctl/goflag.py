"""Command-line flags parsed the way Contiv's netctl parsed them.

Contiv's netctl used codegangsta/cli on top of Go's ``flag`` package. Scripts
written for it rely on that package's rules, which argparse cannot reproduce:

* ``-flag value``, ``-flag=value``, ``--flag value`` and ``--flag=value`` are
  the same thing, for long names and one-letter names alike (``-policy=x``,
  ``--pkt-tag=1001``, ``-s6 ...``);
* boolean flags take no value, but accept ``-j=false``;
* parsing stops at the first non-flag argument, and ``--`` ends the flags;
* a flag has several names (``tenant, t``); using two of them at once is an
  error ("Cannot use two forms of the same flag"), repeating one is not
  (last value wins; a string-slice flag collects every value);
* in a leaf command, codegangsta moved everything from the first ``-x`` onward
  in front of the positional arguments, so ``group create NET GROUP
  -policy=P`` works, but a positional argument *between* flags ends parsing.

Integers are parsed like Go's ``strconv.ParseInt(s, 0, 64)`` and booleans like
``strconv.ParseBool``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

STRING = "string"
INT = "int"
BOOL = "bool"
SLICE = "slice"

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class FlagError(Exception):
    """A usage error while parsing flags (shown as "Incorrect Usage")."""


@dataclass(frozen=True)
class Flag:
    """One flag with all its names, as declared by a command.

    ``names`` keeps codegangsta's order: the long name first, then the
    aliases. ``env`` names an environment variable whose non-empty value
    replaces the default (as codegangsta's ``EnvVar``). ``hidden`` flags are
    accepted but not listed in help.
    """

    names: tuple[str, ...]
    kind: str = STRING
    default: Any = None
    usage: str = ""
    env: Optional[str] = None
    hidden: bool = False

    @property
    def name(self) -> str:
        return self.names[0]

    def initial(self, environ: Mapping[str, str]) -> Any:
        """The value before the command line is read: default, then env."""
        value: Any
        if self.kind == SLICE:
            value = list(self.default or [])
        elif self.kind == INT:
            value = int(self.default or 0)
        elif self.kind == BOOL:
            value = bool(self.default)
        else:
            value = self.default or ""
        env_value = environ.get(self.env, "") if self.env else ""
        if env_value:
            if self.kind == STRING:
                value = env_value
            elif self.kind == BOOL:
                try:
                    value = parse_go_bool(env_value)
                except ValueError:
                    pass
            elif self.kind == INT:
                try:
                    value = parse_go_int(env_value)
                except ValueError:
                    pass
            elif self.kind == SLICE:
                value = [part.strip() for part in env_value.split(",")]
        return value


def string_flag(names: str, usage: str = "", default: str = "", env: Optional[str] = None,
                hidden: bool = False) -> Flag:
    return Flag(_split_names(names), STRING, default, usage, env, hidden)


def int_flag(names: str, usage: str = "", default: int = 0) -> Flag:
    return Flag(_split_names(names), INT, default, usage)


def bool_flag(names: str, usage: str = "", env: Optional[str] = None,
              hidden: bool = False) -> Flag:
    return Flag(_split_names(names), BOOL, False, usage, env, hidden)


def slice_flag(names: str, usage: str = "") -> Flag:
    return Flag(_split_names(names), SLICE, None, usage)


def _split_names(names: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in names.split(","))


_BOOL_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_BOOL_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_go_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in _BOOL_TRUE:
        return True
    if text in _BOOL_FALSE:
        return False
    raise ValueError("parse error")


_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def parse_go_int(text: str) -> int:
    """Go's strconv.ParseInt(text, 0, 64): sign, 0x/0o/0b/0 prefixes, and
    underscores only between digits of a prefixed literal."""
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body:
        raise ValueError("parse error")
    base = 10
    prefixed = False
    lower = body.lower()
    if lower.startswith(("0x", "0o", "0b")):
        base = {"x": 16, "o": 8, "b": 2}[lower[1]]
        body = body[2:]
        prefixed = True
    elif len(body) > 1 and body[0] == "0":
        base = 8
        body = body[1:]
        prefixed = True
    if prefixed and "_" in body:
        # Go: underscores must separate digits ("0x_1f" is fine, "0x1__f" is not).
        if not re.fullmatch(r"_?[^_]+(_[^_]+)*", body):
            raise ValueError("parse error")
        body = body.replace("_", "")
    if not body or any(ch not in _DIGITS[base] for ch in body):
        raise ValueError("parse error")
    value = sign * int(body, base)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("value out of range")
    return value


@dataclass
class FlagValues:
    """The result of parsing: a value per flag, reachable by any of its names."""

    flags: Sequence[Flag]
    values: dict[str, Any] = field(default_factory=dict)
    visited: dict[str, list[str]] = field(default_factory=dict)

    def _flag(self, name: str) -> Optional[Flag]:
        for flag in self.flags:
            if name in flag.names:
                return flag
        return None

    def get(self, name: str) -> Any:
        flag = self._flag(name)
        if flag is None:
            raise KeyError(name)
        return self.values[flag.name]

    def is_set(self, name: str) -> bool:
        flag = self._flag(name)
        return flag is not None and bool(self.visited.get(flag.name))

    def string(self, name: str) -> str:
        flag = self._flag(name)
        return "" if flag is None or flag.kind != STRING else self.values[flag.name]

    def int(self, name: str) -> int:
        flag = self._flag(name)
        return 0 if flag is None or flag.kind != INT else self.values[flag.name]

    def bool(self, name: str) -> bool:
        flag = self._flag(name)
        return False if flag is None or flag.kind != BOOL else self.values[flag.name]

    def string_slice(self, name: str) -> list[str]:
        flag = self._flag(name)
        return [] if flag is None or flag.kind != SLICE else list(self.values[flag.name])


def parse_flags(flags: Sequence[Flag], args: Sequence[str],
                environ: Optional[Mapping[str, str]] = None) -> tuple[FlagValues, list[str]]:
    """Parse ``args`` as Go's FlagSet.Parse does, then apply codegangsta's
    alias check. Returns the values and the remaining positional arguments.
    Raises FlagError on a usage error."""
    environ = {} if environ is None else environ
    by_name: dict[str, Flag] = {}
    for flag in flags:
        for name in flag.names:
            by_name[name] = flag
    result = FlagValues(flags, {f.name: f.initial(environ) for f in flags})
    rest = list(args)
    slice_seen: set[str] = set()
    while rest:
        arg = rest[0]
        if len(arg) < 2 or arg[0] != "-":
            break
        minuses = 1
        if arg[1] == "-":
            minuses = 2
            if len(arg) == 2:
                rest.pop(0)
                break
        name = arg[minuses:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        rest.pop(0)
        has_value = False
        value = ""
        eq = name.find("=", 1)
        if eq > 0:
            name, value, has_value = name[:eq], name[eq + 1:], True
        flag = by_name.get(name)
        if flag is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        if flag.kind == BOOL:
            if has_value:
                try:
                    result.values[flag.name] = parse_go_bool(value)
                except ValueError as exc:
                    raise FlagError(f"invalid boolean value {_go_quote(value)} for -{name}: {exc}")
            else:
                result.values[flag.name] = True
        else:
            if not has_value and rest:
                value, has_value = rest.pop(0), True
            if not has_value:
                raise FlagError(f"flag needs an argument: -{name}")
            if flag.kind == INT:
                try:
                    result.values[flag.name] = parse_go_int(value)
                except ValueError as exc:
                    raise FlagError(f"invalid value {_go_quote(value)} for flag -{name}: {exc}")
            elif flag.kind == SLICE:
                if flag.name not in slice_seen:
                    # Values given on the command line replace an env default.
                    result.values[flag.name] = []
                    slice_seen.add(flag.name)
                result.values[flag.name].append(value)
            else:
                result.values[flag.name] = value
        used = result.visited.setdefault(flag.name, [])
        if name not in used:
            used.append(name)
    for flag in flags:
        used = result.visited.get(flag.name, [])
        if len(used) > 1:
            ordered = [n for n in flag.names if n in used]
            raise FlagError(f"Cannot use two forms of the same flag: {ordered[1]} {ordered[0]}")
    return result, rest


def reorder_leaf_args(args: Sequence[str]) -> list[str]:
    """codegangsta's Command.Run: move everything from the first argument
    that starts with '-' (up to a '--') in front of the arguments before it,
    so that flags may follow the positional arguments."""
    first_flag: Optional[int] = None
    terminator: Optional[int] = None
    for index, arg in enumerate(args):
        if arg == "--":
            terminator = index
            break
        if arg.startswith("-") and first_flag is None:
            first_flag = index
    if first_flag is None:
        return list(args)
    regular = list(args[:first_flag])
    if terminator is not None:
        flag_args = list(args[first_flag:terminator])
        regular += list(args[terminator:])
    else:
        flag_args = list(args[first_flag:])
    return flag_args + regular


def parse_leaf(flags: Sequence[Flag], args: Sequence[str],
               environ: Optional[Mapping[str, str]] = None) -> tuple[FlagValues, list[str]]:
    """Parse the arguments of a leaf command (flags may follow positionals)."""
    return parse_flags(flags, reorder_leaf_args(args), environ)


def _go_quote(text: str) -> str:
    """Go's %q for the printable strings that reach error messages."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
