"""One attempt at a semantic operation: reads (guarded), object edits, links.

Contiv keeps relationships as ``link-sets``/``links`` inside the stored
objects (a tenant lists its networks, a network its EPGs...), and a create
edits several objects.  :class:`Work` caches every object read or edited in
the attempt so that two edits of the same object compose, and writes each
edited object once at the end, all in the same atomic transaction.

A link added to (or removed from) a parent that the attempt never reads is
left to the store's script (:meth:`~contiv_sdn.store.Txn.link`): the parent
is neither read, guarded nor re-sent, so a create costs the same in a tenant
of 10 networks as in one of 10,000, and two creates under one parent do not
conflict on it.  Reading the parent later in the attempt applies the pending
edits to the copy read, and the parent is then written whole as before.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from contiv_sdn.model import make_link
from contiv_sdn.store import View
from contiv_sdn.store.txn import LinksNeedRead
from contiv_sdn.store.keys import obj_kind

_MISSING = object()


class Work:
    def __init__(self, view: View):
        self.view = view
        self.txn = view.txn
        self._objs: Dict[Tuple[str, str], Optional[dict]] = {}
        self._dirty: set = set()
        #: link edits of parents not read: ident -> [(set, member type, member key or
        #: None for a removal, member key)], emitted as server-side edits by flush
        self._links: Dict[Tuple[str, str], List[Tuple[str, Optional[str], str]]] = {}

    # -- model objects ----------------------------------------------------
    async def obj(self, modeltype: str, key: str) -> Optional[dict]:
        """A model object (a private copy, edits are kept until :meth:`flush`)."""
        ident = (modeltype, key)
        if ident not in self._objs:
            self._objs[ident] = o = await self.view.get(obj_kind(modeltype), key)
            pending = self._links.pop(ident, None)
            if pending and o is not None:
                for set_name, member_type, member_key in pending:
                    members = o.setdefault("link-sets", {}).setdefault(set_name, {})
                    if member_type is not None:
                        members[member_key] = make_link(member_type, member_key)
                    else:
                        members.pop(member_key, None)
                self.save(modeltype, key, o)
        return self._objs[ident]

    async def exists(self, modeltype: str, key: str) -> bool:
        """Whether an object is there, guarded on that alone (not read: see the module
        docstring; an object read or edited in this attempt answers from the attempt)."""
        ident = (modeltype, key)
        if ident in self._objs:
            return self._objs[ident] is not None
        return await self.view.exists(obj_kind(modeltype), key)

    async def objs(self, modeltype: str) -> Dict[str, dict]:
        """Every object of a type, read-only (any concurrent change to the type conflicts)."""
        for ident in [i for i in self._links if i[0] == modeltype]:
            await self.obj(*ident)  # applies the pending link edits to what is listed
        items = await self.view.list(obj_kind(modeltype))
        out = {}
        for key, value in items.items():
            ident = (modeltype, key)
            if ident in self._objs:
                if self._objs[ident] is not None:
                    out[key] = self._objs[ident]
            else:
                out[key] = value
        for (t, key), value in self._objs.items():
            if t == modeltype and value is not None:
                out[key] = value
        return out

    def edited(self, modeltype: str) -> bool:
        """Whether this attempt read or changed an object of the type that a
        listing straight from the view would not show as it is now (pending
        link edits, saved or removed objects)."""
        return any(t == modeltype for t, _ in self._dirty) or \
            any(t == modeltype for t, _ in self._links)

    def save(self, modeltype: str, key: str, obj: dict) -> None:
        self._objs[(modeltype, key)] = obj
        self._dirty.add((modeltype, key))

    def remove(self, modeltype: str, key: str) -> None:
        self._objs[(modeltype, key)] = None
        self._dirty.add((modeltype, key))

    # -- links (modeldb.AddLinkSet / AddLink and their removals) ------------
    async def add_to_set(self, modeltype: str, key: str, set_name: str, member_type: str,
                         member_key: str) -> None:
        if (modeltype, key) not in self._objs and self.view.server_links:
            self._links.setdefault((modeltype, key), []).append(
                (set_name, member_type, member_key))
            return
        o = await self.obj(modeltype, key)
        if o is None:
            return
        o.setdefault("link-sets", {}).setdefault(set_name, {})[member_key] = \
            make_link(member_type, member_key)
        self.save(modeltype, key, o)

    async def remove_from_set(self, modeltype: str, key: str, set_name: str,
                              member_key: str) -> None:
        if (modeltype, key) not in self._objs and self.view.server_links:
            self._links.setdefault((modeltype, key), []).append((set_name, None, member_key))
            return
        o = await self.obj(modeltype, key)
        if o is None:
            return
        members = o.setdefault("link-sets", {}).setdefault(set_name, {})
        if member_key in members:
            del members[member_key]
            self.save(modeltype, key, o)

    @staticmethod
    def set_link(o: dict, name: str, target_type: str, target_key: str) -> None:
        o.setdefault("links", {})[name] = make_link(target_type, target_key)

    @staticmethod
    def clear_link(o: dict, name: str) -> None:
        o.setdefault("links", {})[name] = {"type": "", "key": ""}

    # -- state records ----------------------------------------------------
    async def state(self, kind: str, key: str) -> Optional[dict]:
        return await self.view.get(kind, key)

    async def peek_state(self, kind: str, key: str) -> Optional[dict]:
        return await self.view.peek(kind, key)

    async def states(self, kind: str) -> Dict[str, dict]:
        return await self.view.list(kind)

    def flush(self) -> None:
        for (modeltype, key), pending in sorted(self._links.items()):
            for set_name, member_type, member_key in pending:
                link = (member_type, member_key) if member_type is not None else None
                if not self.txn.link(obj_kind(modeltype), key, set_name, member_key, link):
                    # names the script cannot splice: nothing else can be written for
                    # this attempt's parent now, so let the retry read it
                    raise LinksNeedRead(f"{modeltype} {key}: link {member_key!r} not spliceable")
        self._links.clear()
        for modeltype, key in sorted(self._dirty):
            value = self._objs[(modeltype, key)]
            if value is None:
                self.txn.delete(obj_kind(modeltype), key)
            else:
                self.txn.put(obj_kind(modeltype), key, value)
        self._dirty.clear()


def link_count(o: Optional[dict], set_name: str) -> int:
    if not o:
        return 0
    return len((o.get("link-sets") or {}).get(set_name) or {})


def link_keys(o: Optional[dict], set_name: str):
    if not o:
        return []
    return sorted((o.get("link-sets") or {}).get(set_name) or {})


def link_target(o: Optional[dict], name: str) -> str:
    if not o:
        return ""
    return ((o.get("links") or {}).get(name) or {}).get("key") or ""
