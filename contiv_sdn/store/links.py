"""Link-set edits on a record's JSON text, without decoding the record.

Why: a parent record lists every child in its ``link-sets`` (a tenant lists
every network), so a create that adds one link by read-decode-edit-encode of
the parent costs O(children) in the netmaster — and two creates under one
parent conflict on its content.  The ``link`` operation of the ``APPLY``
script (:mod:`contiv_sdn.store.lua`) instead splices the one member into the
stored text server-side; this module is its exact Python twin, used to keep
the store's cache of whole kinds in step with what the script wrote (and, in
tests, as the oracle the script is checked against).

The splice works only on the canonical text this project writes
(``json.dumps`` with ``(",", ":")`` separators) and only when it can prove
where the set is with a few plain searches; anything unusual (a key with
characters a model key never has, a member added twice, a set that is
missing) answers :data:`SLOW`, and the caller redoes the edit the old way
(read, edit, write under a guard).  Members are added at the *front* of the
set: a set is a JSON object, and every reader either looks members up by key
or sorts them (the REST wire form, ``to_wire``, writes them sorted, as Go's
encoder does), so the order inside the stored text is not observable.
"""

from __future__ import annotations

import re
from typing import Optional, Union

#: a model key (``tenant:network``...), a set name, a link's type/key as they
#: may appear in the spliced text: no quote, backslash or brace can be in them
SAFE = re.compile(r"[A-Za-z0-9:._\-]+")
SAFE_OPT = re.compile(r"[A-Za-z0-9:._\-]*")
SET_NAME = re.compile(r"[A-Za-z0-9]+")
#: the canonical text of one member (``"k":{"type":"t","key":"k"}``, comma after)
_MEMBERS = re.compile(r'(?:"[^"\\{}]*":\{"type":"[^"\\{}]*","key":"[^"\\{}]*"\},?)*')
_LINK_VALUE = re.compile(r'\{"type":"[^"\\{}]*","key":"[^"\\{}]*"\}')
_LINK_SETS = ',"link-sets":{'


class _Slow:
    """The splice cannot prove where the member goes: do it the read-edit-write way."""

    def __repr__(self) -> str:
        return "SLOW"


SLOW = _Slow()


def key_text(member_key: str) -> Optional[str]:
    """The JSON text of a member key the splice can handle, or None."""
    return f'"{member_key}"' if SAFE.fullmatch(member_key) else None


def link_text(link_type: str, link_key: str) -> Optional[str]:
    """The JSON text of a link value (``{"type":..,"key":..}``) or None."""
    if not (SAFE_OPT.fullmatch(link_type) and SAFE_OPT.fullmatch(link_key)):
        return None
    return f'{{"type":"{link_type}","key":"{link_key}"}}'


def _set_brace(text: str, set_name: str) -> Union[int, _Slow]:
    """Index of the ``{`` opening ``link-sets[set_name]`` in ``text``, or SLOW.

    ``,"link-sets":{`` must occur once: its quote follows a comma, so it is
    not escaped, and a key cannot close a string followed by letters, so it
    is the object key (records have no free-form fields, so only the top
    level has one).  The first ``"S":{`` after it, preceded by ``{`` or ``,``
    and opening either ``{}`` or a member whose value is an object, is the
    set: a member named S would hold a link, ``{"type":"...``.
    """
    ls = text.find(_LINK_SETS)
    if ls < 0 or text.find(_LINK_SETS, ls + 1) >= 0:
        return SLOW
    start = ls + len(_LINK_SETS) - 1
    needle = f'"{set_name}":{{'
    at = text.find(needle, start)
    if at < 0 or text[at - 1] not in "{,":
        return SLOW
    brace = at + len(needle) - 1
    nxt = text[brace + 1:brace + 2]
    if nxt == "}":
        return brace
    if nxt != '"':
        return SLOW
    close = text.find('"', brace + 2)
    if close < 0 or "\\" in text[brace + 2:close] or text[close + 1:close + 3] != ":{":
        return SLOW
    return brace


def splice(text: str, set_name: str, key_json: str,
           value_json: Optional[str]) -> Union[str, None, _Slow]:
    """``text`` with member ``key_json`` added to (``value_json`` given) or
    removed from (None) ``link-sets[set_name]``; None when nothing changes
    (a removal of an absent member); :data:`SLOW` when the splice cannot
    prove the edit (see the module docstring).  Mirrors ``link_edit`` of the
    APPLY script character for character."""
    if not SET_NAME.fullmatch(set_name):
        return SLOW
    if not (key_json.startswith('"') and key_json.endswith('"')
            and SAFE.fullmatch(key_json[1:-1])):
        return SLOW
    brace = _set_brace(text, set_name)
    if brace is SLOW:
        return SLOW
    assert isinstance(brace, int)
    member = key_json + ":"
    if value_json is not None:
        if not _LINK_VALUE.fullmatch(value_json):
            return SLOW
        if text.find(member, brace) >= 0:
            return SLOW  # perhaps a member already (Python replaces it in place)
        sep = "" if text[brace + 1] == "}" else ","
        return text[:brace + 1] + member + value_json + sep + text[brace + 1:]
    at = text.find(member + "{", brace)
    if at < 0:
        return None  # not after the set's start, so not in the set
    if text[at - 1] not in "{," or not _MEMBERS.fullmatch(text, brace + 1, at):
        return SLOW  # not provably a member of this set
    m = _LINK_VALUE.match(text, at + len(member))
    if m is None:
        return SLOW
    end = m.end()  # one past the member's value
    if text[at - 1] == ",":
        return text[:at - 1] + text[end:]
    if text[end] == ",":
        return text[:at] + text[end + 1:]
    return text[:at] + text[end:]
