"""``Validate<Obj>`` of the generated Contiv model: key check, defaults, field checks.

Why the order matters: Contiv reports only the first failure, so a client sending
two bad fields sees one specific message.  The original checks the key first
(``obj.Key`` from the URL against the key built from the body), then each field
in Go struct order: for a string its length (in bytes) then its regex, for an
int its default then its bounds.  Defaults (``nwType`` -> ``data``,
``priority`` -> 1) are written into the returned object, as the original does.
"""

from __future__ import annotations

from typing import Any, Mapping

from contiv_sdn.model.errors import ModelError
from contiv_sdn.model.schema import INT, STR_LIST, TypeSpec


def normalize(spec: TypeSpec, obj: Mapping[str, Any]) -> dict:
    """A fresh config object: every field present (missing or ``None`` -> zero value),
    lists and link structures copied so the caller's object is never shared."""
    out: dict = {"key": obj.get("key") or ""}
    for f in spec.fields:
        v = obj.get(f.name)
        if v is None:
            v = f.zero()
        elif f.type == STR_LIST:
            if isinstance(v, str) or not all(isinstance(x, str) for x in v):
                raise TypeError(f"{spec.name}.{f.name} must be a list of str, not {v!r}")
            v = list(v)
        elif not isinstance(v, f.type) or isinstance(v, bool):
            # decode() never produces this; it guards callers that build objects by hand
            raise TypeError(f"{spec.name}.{f.name} must be {f.type.__name__}, not {v!r}")
        out[f.name] = v
    given_sets = obj.get("link-sets") or {}
    out["link-sets"] = {
        name: {k: dict(link) for k, link in (given_sets.get(name) or {}).items()}
        for name in spec.link_sets
    }
    given_links = obj.get("links") or {}
    out["links"] = {}
    for name in spec.links:
        link = given_links.get(name) or {}
        out["links"][name] = {"type": link.get("type") or "", "key": link.get("key") or ""}
    return out


def validate(spec: TypeSpec, obj: Mapping[str, Any], key: str) -> dict:
    """Return a copy of ``obj`` with ``key`` set and defaults applied, or raise
    :class:`ModelError` with the original's text for the first failing check:
    ``Invalid Key``, ``<field> string too long``, ``<field> string invalid format``,
    ``<field> Value Out of bound``."""
    if not spec.has_config:
        raise ValueError(f"{spec.name} has no config object")
    out = normalize(spec, obj)
    out["key"] = key
    if key != spec.key_of(out):
        raise ModelError("Invalid Key")
    for f in spec.fields:
        value = out[f.name]
        if f.type is INT:
            if f.default is not None and value == 0:
                value = out[f.name] = f.default
            if f.min is not None and value < f.min:
                raise ModelError(f"{f.name} Value Out of bound")
            if f.max is not None and value > f.max:
                raise ModelError(f"{f.name} Value Out of bound")
        elif f.type is str:
            if f.default is not None and value == "":
                value = out[f.name] = f.default
            if f.maxlen is not None and len(value.encode("utf-8", "surrogatepass")) > f.maxlen:
                raise ModelError(f"{f.name} string too long")
            if f.pattern is not None and f.pattern.fullmatch(value) is None:
                raise ModelError(f"{f.name} string invalid format")
    return out
