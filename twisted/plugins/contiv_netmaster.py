"""``twistd netmaster``: the contiv-sdn netmaster (REST API, semantics, Redis).

This folder has no ``__init__.py`` on purpose: it extends Twisted's
``twisted.plugins`` namespace package.  Imports of the implementation are
deferred to ``makeService`` so that listing plugins stays cheap.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer

from contiv_sdn.master.options import NetmasterOptions


@implementer(IServiceMaker, IPlugin)
class _NetmasterMaker:
    tapname = "netmaster"
    description = "contiv-sdn netmaster: Contiv REST API and object semantics on Redis"
    options = NetmasterOptions

    def makeService(self, options):
        from contiv_sdn.master.service import make_service
        from contiv_sdn.ops import jsonlog

        jsonlog.start(options.get("log-json"))
        return make_service(options)


netmaster = _NetmasterMaker()
