"""Shared parts of the four input fuzzers (REST, OpenFlow, CNI, Docker plugin API); no tests here.

Why one module: the fuzzers differ in the surface they hit, not in how they
make hostile input or how they judge the aftermath.  Everything here is
seeded and bounded:

* :func:`case_count` — each fuzzer's default is sized for CI (the four together
  stay well inside 90 s on the CI machine); ``CONTIV_FUZZ_CASES=N`` runs N cases
  of each instead, for long runs.
* :func:`seed` / :func:`seeded` — one seed per test, ``CONTIV_FUZZ_SEED`` to
  replay one; a failing test's message starts with the seed and the command
  that replays it.
* :func:`mutate_value`, :func:`render`, :func:`mutate_bytes` — JSON values and
  bodies made hostile: wrong types, huge and deep values, NaN/Infinity/1e400,
  truncation, invalid UTF-8, duplicate and case-variant keys.
* :func:`log_problems` (a process's log file) and :class:`EventWatch`
  (twisted.logger events in this process) — what counts as an unhandled
  exception: a traceback, an error/critical record, "Unhandled".
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from twisted.logger import LogLevel, formatEvent, globalLogPublisher

DEFAULT_SEED = 20261130


def case_count(default: int) -> int:
    """``default`` cases, or ``CONTIV_FUZZ_CASES`` when set (a long run)."""
    value = os.environ.get("CONTIV_FUZZ_CASES", "").strip()
    return int(value) if value else default


def seed() -> int:
    """The seed of this run: ``CONTIV_FUZZ_SEED`` or the fixed default (CI is reproducible)."""
    value = os.environ.get("CONTIV_FUZZ_SEED", "").strip()
    return int(value) if value else DEFAULT_SEED


def seeded(f: Callable) -> Callable:
    """Wrap an ``async def test_x(self, rnd)``: a :class:`random.Random` from :func:`seed`,
    run as a Deferred; any failure is re-raised with the seed and how to replay it."""
    from twisted.internet import defer

    @functools.wraps(f)
    def wrapper(self: Any) -> Any:
        s = seed()

        def note(failure: Any) -> Any:
            if failure.check(AssertionError):
                raise AssertionError(
                    f"[fuzz seed {s}: replay with CONTIV_FUZZ_SEED={s} "
                    f"CONTIV_FUZZ_CASES={os.environ.get('CONTIV_FUZZ_CASES', '')!s}] "
                    f"{failure.value}") from None
            failure.value.args = (f"[fuzz seed {s}] " + (str(failure.value.args[0])
                                  if failure.value.args else ""),) + failure.value.args[1:]
            return failure
        return defer.ensureDeferred(f(self, random.Random(s))).addErrback(note)
    return wrapper


# -- hostile JSON -------------------------------------------------------------------

#: Values that break naive handlers: wrong types, extremes, odd text.
HOSTILE: List[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -2**63 - 1, 2**64 + 1, 10**30, 1.5, -0.0, 1e308,
    "", " ", "x", "0", "-1", "true", "null", "a" * 513, "é", "\u0000", "\ud7ff\ue000", "\u202e",
    "%00", "../..", "a/b", "a:b:c", "a.b.c", "*", "10.0.0.1", "10.0.0.0/8", "999.1.1.1",
    "fe80::1", "::", "0.0.0.0/0", "tcp:1", "\n\r\t", "'\"`", "<script>", "${x}", "{{x}}",
    [], [None], [1, "a"], ["x"], {}, {"a": 1}, {"a": {"b": "c"}}, {"": ""},
]


def deep(depth: int, kind: str = "list") -> Any:
    """A value nested ``depth`` deep, built without recursion."""
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def hostile_value(rnd: random.Random) -> Any:
    kind = rnd.randrange(10)
    if kind < 6:
        return rnd.choice(HOSTILE)
    if kind == 6:
        return rnd.choice(("a", "é", "\x7f", "0")) * rnd.choice((100, 1000, 70_000))
    if kind == 7:
        return deep(rnd.choice((5, 100, 1000)), rnd.choice(("list", "map")))
    if kind == 8:
        return rnd.randint(-2**70, 2**70)
    return {rnd.choice(("a", "b", "Name", "")): rnd.choice(HOSTILE) for _ in range(rnd.randint(0, 3))}


def case_variant(rnd: random.Random, name: str) -> str:
    """Go matches JSON field names case-insensitively: exercise that path."""
    return rnd.choice((name, name.lower(), name.upper(), name.swapcase()))


def mutate_value(rnd: random.Random, value: Any, fields: Sequence[str] = ()) -> Any:
    """One structural mutation of a JSON value (mostly of one field of an object)."""
    if isinstance(value, dict) and value and rnd.random() < 0.8:
        out = dict(value)
        key = rnd.choice(sorted(out))
        op = rnd.randrange(6)
        if op == 0:
            del out[key]
        elif op == 1:
            out[case_variant(rnd, key)] = out.pop(key)
        elif op == 2 and isinstance(out[key], (dict, list)) and out[key]:
            out[key] = mutate_value(rnd, out[key], fields)
        elif op == 3:
            out[rnd.choice(list(fields) or [key]) + rnd.choice(("", "x", "_"))] = \
                hostile_value(rnd)
        else:
            out[key] = hostile_value(rnd)
        return out
    if isinstance(value, list) and value and rnd.random() < 0.7:
        out_l = list(value)
        i = rnd.randrange(len(out_l))
        out_l[i] = mutate_value(rnd, out_l[i], fields) if rnd.random() < 0.5 else hostile_value(rnd)
        return out_l
    return hostile_value(rnd)


def render(rnd: random.Random, value: Any) -> bytes:
    """Serialize ``value``, usually as valid JSON, sometimes damaged in one of many ways."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (ValueError, RecursionError):
        text = "[" * 5000 + "]" * 5000
    kind = rnd.randrange(16)
    if kind < 8:
        return text.encode("utf-8", "surrogatepass")
    if kind == 8:
        return text[: rnd.randrange(len(text) + 1)].encode("utf-8", "surrogatepass")
    if kind == 9:
        return text.replace("1", rnd.choice(("NaN", "Infinity", "-Infinity", "1e400", "01",
                                             "0x1", "1.", ".5", "+1")), 1).encode()
    if kind == 10:
        return b"\xef\xbb\xbf" + text.encode()  # a BOM
    if kind == 11:
        raw = bytearray(text.encode())
        if raw:
            raw[rnd.randrange(len(raw))] = rnd.choice((0x80, 0xC0, 0xFF, 0x00))
        return bytes(raw)
    if kind == 12 and text.startswith("{") and len(text) > 2:
        # a duplicate key: the last one wins in Go
        return b'{"dup": 1, "dup": "x", ' + text[1:].encode()
    if kind == 13:
        return rnd.choice((b"", b"null", b"[]", b"5", b'"x"', b"true", b"{", b"}", b"[" * 20000,
                           b'{"a":' * 3000 + b"1" + b"}" * 3000, b"{'a': 1}", b"{a: 1}",
                           b"\x00" * 16))
    if kind == 14:
        return text.encode() + rnd.choice((b" ", b"\n", b"x", b"{}", b"\x00", b",", b"]"))
    return mutate_bytes(rnd, text.encode())


def mutate_bytes(rnd: random.Random, data: bytes) -> bytes:
    """A byte-level mutation (bit flips, overwrites, cuts, inserts, noise)."""
    out = bytearray(data)
    kind = rnd.randrange(6)
    if kind == 0 and out:
        for _ in range(rnd.randint(1, 8)):
            i = rnd.randrange(len(out))
            out[i] ^= 1 << rnd.randrange(8)
    elif kind == 1 and out:
        for _ in range(rnd.randint(1, 6)):
            out[rnd.randrange(len(out))] = rnd.randrange(256)
    elif kind == 2:
        del out[rnd.randrange(len(out) + 1):]
    elif kind == 3:
        i = rnd.randrange(len(out) + 1)
        out[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 40)))
    elif kind == 4:
        out += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 300)))
    else:
        out = bytearray(rnd.randrange(256) for _ in range(rnd.randint(0, 400)))
    return bytes(out)


# -- judging the aftermath -----------------------------------------------------------

#: A log line of a real bug: a traceback, an unhandled error, an error/critical record.
_BAD_LINE = re.compile(r"Traceback \(most recent call last\)|Unhandled|#error\]|#critical\]")


def log_problems(text: str, allow: Iterable[str] = ()) -> List[str]:
    """The records of a twistd log file that show an unhandled exception or an error
    (``allow``: regexes of error records that are by design, e.g. a switch's own error);
    each with the lines that follow it (its traceback), so a failure shows the bug."""
    allowed = [re.compile(a) for a in allow]
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _BAD_LINE.search(line) and not any(a.search(line) for a in allowed):
            j = i + 1
            while j < len(lines) and j < i + 40 and not re.match(r"\d{4}-\d\d-\d\dT", lines[j]) \
                    or (j < len(lines) and j < i + 40 and "#critical] " in lines[j]
                        and lines[j].rstrip().endswith("]")):
                j += 1
            # a failure is logged as several records: keep the ones of the same second
            while j < len(lines) and j < i + 40 and lines[j][:24] == line[:24] and \
                    "#critical]" in lines[j]:
                j += 1
            out.append("\n".join(l[:300] for l in lines[i:j]))
            i = j
            continue
        i += 1
    return out


class EventWatch:
    """twisted.logger events in this process (an in-process agent) that are real bugs:
    a logged failure or an error/critical record."""

    def __init__(self, test: Any, allow: Iterable[str] = ()):
        self.allow = [re.compile(a) for a in allow]
        self.bad: List[str] = []
        globalLogPublisher.addObserver(self._observe)
        test.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: Dict[str, Any]) -> None:
        failure = event.get("log_failure")
        level = event.get("log_level")
        if failure is None and level not in (LogLevel.error, LogLevel.critical):
            return
        try:
            text = formatEvent(event) or ""
        except Exception:  # pragma: no cover - a broken format is itself worth seeing
            text = repr(event.get("log_format"))
        if failure is None and any(a.search(text) for a in self.allow):
            return
        if failure is not None:
            text += "\n" + failure.getTraceback()
        self.bad.append(text[:3000])


#: Python's own words and reprs, which must never reach a client (Go quotes a character
#: as '{', which is not a repr).
PYTHON_TEXT = re.compile(r"Traceback|File \"|(?<!')\{'|(?<!')\['[^']*'[,\]]|\bNone\b|\bnan\b|\binf\b|"
                         r"internal error|RecursionError|TypeError|KeyError|AttributeError|"
                         r"ValueError|UnicodeDecodeError")


def python_in(text: str) -> Optional[str]:
    """The first Python-ism in an answer's text, or None."""
    m = PYTHON_TEXT.search(text)
    return m.group(0) if m else None
