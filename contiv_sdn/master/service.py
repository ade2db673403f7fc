"""The netmaster process as a Twisted service tree.

``make_service(options)`` returns a :class:`NetmasterService` (a
``MultiService``).  On start it brings up Redis (an embedded redis-server
unless ``--redis`` is given), the store, the default objects, then the REST
API; other parts of the netmaster (the OpenFlow controller, DNS) are added as
child services and reach the store through ``service.store`` once
``service.when_ready()`` has fired.  If start-up fails the reactor is stopped
so that ``twistd`` exits non-zero instead of serving nothing.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional

from twisted.application.service import MultiService
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site

from contiv_sdn.api import NetmasterAPI
from contiv_sdn.controller.service import Controller
from contiv_sdn.master.config import MasterConfig
from contiv_sdn.master.core import Master
from contiv_sdn.store import Store
from contiv_sdn.store.embedded import EmbeddedRedis

log = Logger()


class NetmasterService(MultiService):
    def __init__(self, config: MasterConfig, listen: str, redis_url: Optional[str],
                 state_dir: str, ofp_listen: Optional[str] = None):
        super().__init__()
        self.ofp_listen = ofp_listen
        self.controller: Optional[Controller] = None
        self.config = config
        self.listen = listen
        self.redis_url = redis_url
        self.state_dir = state_dir
        self.store: Optional[Store] = None
        self.master: Optional[Master] = None
        self.port = None
        self.embedded: Optional[EmbeddedRedis] = None
        self._waiting: List[defer.Deferred] = []
        self._ready = False
        self._instance = ""

    def when_ready(self) -> defer.Deferred:
        """Fires with the store once Redis, the defaults and the API are up."""
        if self._ready:
            return defer.succeed(self.store)
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def address(self) -> str:
        if self.port is None:
            return ""
        h = self.port.getHost()
        return f"{getattr(h, 'host', '')}:{getattr(h, 'port', '')}"

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._failed)

    def _failed(self, failure) -> None:
        log.failure("netmaster failed to start", failure)
        for d in self._waiting:
            d.errback(failure)
        self._waiting = []
        if reactor.running:
            reactor.stop()

    async def _start(self) -> None:
        url = self.redis_url
        if not url:
            self.embedded = EmbeddedRedis(self.state_dir)
            url = await self.embedded.start()
        log.info("connecting to redis {url}", url=url)
        self.store = await Store.connect(url)
        self.master = Master(self.store, self.config)
        await self.master.ensure_defaults()
        if self.ofp_listen:
            # The controller is a child service: it stops before the store closes.
            self.controller = Controller(self.store, listen=self.ofp_listen)
            self.controller.setServiceParent(self)
        api = NetmasterAPI(self.master, self.address)
        site = Site(api.resource())
        site.noisy = False
        site.log = lambda request: None  # no per-request access log: it halves throughput
        self.port = await serverFromString(reactor, self.listen).listen(site)
        self._instance = f"{self.address()}@{os.uname().nodename}:{os.getpid()}"
        await self.store.put_state("netmaster", self._instance,
                                   {"address": self.address(), "pid": os.getpid(),
                                    "started": int(time.time())})
        where = "embedded redis-server " + url if self.embedded else url
        log.info("netmaster listening on {addr}, redis {redis}", addr=self.address(), redis=where)
        self._ready = True
        for d in self._waiting:
            d.callback(self.store)
        self._waiting = []

    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: defer.ensureDeferred(self._stop()))
        return d

    async def _stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        if self.store is not None:
            try:
                if self._instance:
                    await self.store.del_state("netmaster", self._instance)
            except Exception:
                log.failure("could not deregister")
            await self.store.close()
            self.store = None
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None


def make_service(options) -> NetmasterService:
    """The netmaster service tree from parsed :class:`NetmasterOptions`."""
    return NetmasterService(options.config(), options["listen-endpoint"], options["redis"],
                            options["state-dir"], options.get("ofp-endpoint"))
