"""``twistd netplugin``: the contiv-sdn host agent (see contiv_sdn.agent.service)."""

from zope.interface import implementer

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin


@implementer(IServiceMaker, IPlugin)
class NetpluginServiceMaker:
    tapname = "netplugin"
    description = ("contiv-sdn host agent: host registration, br-int over OVSDB, endpoint "
                   "plumbing, local API")

    @property
    def options(self):
        # imported lazily: twistd loads every plugin module just to list them
        from contiv_sdn.agent.options import Options
        return Options

    def makeService(self, options):
        from contiv_sdn.ops import jsonlog
        from drivers.netplugin import make_service  # the agent plus the drivers asked for

        jsonlog.start(options.get("log-json"))
        return make_service(options)


serviceMaker = NetpluginServiceMaker()
