"""The shape of one object type's semantics (Contiv's ``<Obj>Create/Update/Delete/GetOper``).

A handler never writes directly: ``create``/``update``/``delete`` edit
objects through a :class:`~contiv_sdn.master.work.Work` and add allocations
and state records to its transaction, which commits atomically or not at all.
``oper`` only reads.
"""

from __future__ import annotations

from typing import Dict, Optional

from contiv_sdn.master.config import MasterConfig
from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.work import Work
from contiv_sdn.store import Store


class OperContext:
    """Reads shared by the oper computations of one inspect request."""

    def __init__(self, store: Store, config: MasterConfig):
        self.store = store
        self.config = config
        self._cache: Dict[str, Dict[str, dict]] = {}

    async def states(self, kind: str) -> Dict[str, dict]:
        if kind not in self._cache:
            self._cache[kind] = await self.store.list(kind)
        return self._cache[kind]

    async def objs(self, modeltype: str) -> Dict[str, dict]:
        return await self.states("obj:" + modeltype)

    async def state(self, kind: str, key: str) -> Optional[dict]:
        if kind in self._cache:
            return self._cache[kind].get(key)
        return await self.store.get(kind, key)


class Handler:
    """Default semantics: store as given, no oper (e.g. appProfile without ACI)."""

    modeltype: str = ""

    def __init__(self, config: MasterConfig):
        self.config = config

    async def create(self, w: Work, obj: dict) -> dict:
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        """Contiv's update callbacks decide what of ``new`` reaches the stored object."""
        return new

    async def delete(self, w: Work, obj: dict) -> None:
        return None

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        return None


class Unsupported(Handler):
    """Types with routes but no callbacks in Contiv (volume, volumeProfile)."""

    async def create(self, w: Work, obj: dict) -> dict:
        raise MasterError("Invalid object type")

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        raise MasterError("Invalid object type")

    async def delete(self, w: Work, obj: dict) -> None:
        raise MasterError("Invalid object type")


def require_tenant_name(obj: dict) -> str:
    name = obj.get("tenantName") or ""
    if not name:
        raise MasterError("Invalid tenant name")
    return name
