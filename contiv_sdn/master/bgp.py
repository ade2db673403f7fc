"""Per-host BGP settings (the ``Bgp`` object, used in routing mode).

The objects are stored with Contiv's checks for the agents to read.  The BGP
speaker itself and its oper (neighbor state, routes — Contiv's netmaster
fetched them from the agent's ``:9090/inspect/bgp``) are out of scope, so the
Bgp oper is empty.
"""

from __future__ import annotations

from typing import Optional

from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.handler import Handler, OperContext
from contiv_sdn.master.work import Work


class BgpHandler(Handler):
    modeltype = "Bgp"

    async def create(self, w: Work, obj: dict) -> dict:
        if not obj.get("hostname"):
            raise MasterError("Invalid host name")
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        if not new.get("hostname"):
            raise MasterError("Invalid host name")
        stored = dict(old)
        for f in ("hostname", "routerip", "as", "neighbor-as", "neighbor"):
            stored[f] = new.get(f, "")
        return stored

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        return {}
