"""The netmaster's object semantics behind one facade the REST layer calls.

``post`` is Contiv's generated ``Create<Obj>``: create when the key is new,
otherwise the type's update rules; ``delete`` refuses a missing object with
``<type> not found`` (a 500, never a 404, so Go clients see an error).  Each
call is one optimistic transaction (:func:`contiv_sdn.store.transact`): it
re-runs from scratch if anything it read changed before it committed, which
keeps several netmasters on one Redis correct without locks.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from contiv_sdn.master.config import MasterConfig
from contiv_sdn.master.endpoints import Endpoints
from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.global_cfg import GlobalHandler
from contiv_sdn.master.group import EndpointGroupHandler
from contiv_sdn.master.hosts import Hosts
from contiv_sdn.master.handler import Handler, OperContext, Unsupported
from contiv_sdn.master.network import NetworkHandler
from contiv_sdn.master.oper import endpoint_oper
from contiv_sdn.master.policy import PolicyHandler, RuleHandler
from contiv_sdn.master.profiles import (
    AciGwHandler,
    AppProfileHandler,
    ExtContractsGroupHandler,
    NetprofileHandler,
)
from contiv_sdn.master.bgp import BgpHandler
from contiv_sdn.master.servicelb import ServiceLBHandler
from contiv_sdn.master.tenant import TenantHandler
from contiv_sdn.master.work import Work
from contiv_sdn.model import TYPES
from contiv_sdn.model import validate as model_validate
from contiv_sdn.store import Store, StoreError, StoreUnavailable, View, transact
from contiv_sdn.store.keys import obj_kind

log = Logger()

_HANDLERS = {
    "global": GlobalHandler, "tenant": TenantHandler, "network": NetworkHandler,
    "endpointGroup": EndpointGroupHandler, "policy": PolicyHandler, "rule": RuleHandler,
    "netprofile": NetprofileHandler, "appProfile": AppProfileHandler,
    "extContractsGroup": ExtContractsGroupHandler, "aciGw": AciGwHandler, "Bgp": BgpHandler,
    "serviceLB": ServiceLBHandler, "volume": Unsupported, "volumeProfile": Unsupported,
}


class Master:
    """Create/update/delete/inspect of every object, plus the agents' calls."""

    def __init__(self, store: Store, config: MasterConfig):
        self.store = store
        self.config = config
        self.handlers: Dict[str, Handler] = {t: cls(config) for t, cls in _HANDLERS.items()}
        self.endpoints = Endpoints(store)
        self.hosts = Hosts(store)
        # Intent changes read whole kinds (a network create checks every network
        # of its tenant), so within one process they would only conflict with
        # each other and retry: each is built one at a time here — but the lock
        # is let go once its commit is sent, not answered (transact's
        # ``serialize``), so the next is built during the round trip.  Across
        # netmasters the optimistic check decides.
        self._intent = DeferredLock()

    def _handler(self, modeltype: str) -> Handler:
        h = self.handlers.get(modeltype)
        if h is None:
            raise MasterError("Invalid object type")
        return h

    async def _run(self, fn):
        try:
            return await transact(self.store, fn, serialize=self._intent)
        except StoreUnavailable:
            raise  # not a refusal: the REST layer answers it as "try again" (503)
        except StoreError as e:
            raise MasterError(str(e))

    # -- config objects ---------------------------------------------------
    async def get(self, modeltype: str, key: str) -> dict:
        obj = await self.store.get(obj_kind(modeltype), key)
        if obj is None:
            raise MasterError(f"{modeltype} not found")
        return obj

    async def list(self, modeltype: str) -> List[dict]:
        items = await self.store.list(obj_kind(modeltype))
        return [items[k] for k in sorted(items)]

    async def post(self, modeltype: str, key: str, obj: dict) -> dict:
        """Create or update; ``obj`` is already decoded and validated for ``key``."""
        handler = self._handler(modeltype)

        async def fn(view: View):
            w = Work(view)
            existing = await w.obj(modeltype, key)
            if existing is None:
                stored = await handler.create(w, obj)
                reply = stored
            else:
                stored = await handler.update(w, existing, obj)
                reply = obj
            w.save(modeltype, key, stored)
            w.flush()
            return reply

        return await self._run(fn)

    async def delete(self, modeltype: str, key: str) -> None:
        handler = self._handler(modeltype)

        async def fn(view: View):
            w = Work(view)
            existing = await w.obj(modeltype, key)
            if existing is None:
                raise MasterError(f"{modeltype} not found")
            await handler.delete(w, existing)
            w.remove(modeltype, key)
            w.flush()

        await self._run(fn)

    async def inspect(self, modeltype: str, key: str) -> Tuple[dict, Optional[dict]]:
        config = await self.get(modeltype, key)
        oper = await self._handler(modeltype).oper(OperContext(self.store, self.config), config)
        return config, oper

    async def inspect_endpoint(self, key: str) -> dict:
        """Contiv's substring match over endpoint id, container id and name."""
        endpoints = await self.store.list("endpoint")
        for ep_id in sorted(endpoints):
            ep = endpoints[ep_id]
            if key in ep.get("id", "") or key in (ep.get("containerID") or "") or \
                    key in (ep.get("containerName") or ""):
                return endpoint_oper(ep, key=key, with_port=True)
        raise MasterError("endpoint not found")

    # -- start-up ---------------------------------------------------------
    async def ensure_defaults(self) -> None:
        """The global object (from the flags) and tenant ``default`` exist.

        On a later start only the flags given explicitly are applied to an
        existing global object; a refusal (e.g. a new forwarding mode while
        networks exist) is logged and the stored settings stay.
        """
        current = await self.store.get(obj_kind("global"), "global")
        spec = TYPES["global"]
        if current is None:
            wanted = model_validate(spec, self.config.global_object(), "global")
            try:
                await self.post("global", "global", wanted)
            except MasterError as e:
                log.error("cannot create the global object: {err}", err=str(e))
        elif self.config.explicit:
            wanted = dict(current)
            for attr in self.config.explicit:
                name = MasterConfig.FIELDS.get(attr)
                if name:
                    wanted[name] = getattr(self.config, attr)
            if wanted != current:
                try:
                    await self.post("global", "global", model_validate(spec, wanted, "global"))
                except MasterError as e:
                    log.error("keeping the stored global settings: {err}", err=str(e))
        if await self.store.get(obj_kind("tenant"), "default") is None:
            try:
                await self.post("tenant", "default",
                                model_validate(TYPES["tenant"], {"tenantName": "default"},
                                               "default"))
            except MasterError as e:
                if "Cant change" not in str(e):
                    raise
