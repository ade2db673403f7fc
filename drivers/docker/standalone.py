"""``python -m drivers.docker.standalone``: the netplugin agent with the Docker driver in it.

The same process ``twistd netplugin --docker-plugin … --docker …`` is once the
agent carries the two wiring lines of :mod:`drivers.docker.service`: every
option of ``twistd netplugin`` plus

  --docker-plugin PATH   the plugin socket (default /run/docker/plugins/netplugin.sock)
  --docker URL           the engine to keep in step (default unix:///var/run/docker.sock)
  --logfile PATH         log here instead of stdout
  --pidfile PATH         write the pid here

It runs the agent's own :func:`~contiv_sdn.agent.service.make_service` on the
reactor and stops it cleanly on SIGTERM/SIGINT, like ``twistd -n``.  The tests
and the lab use it while (or where) the agent's twistd plugin lacks the options.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from contiv_sdn.agent.options import Options as AgentOptions

from drivers.docker.service import DEFAULT_DOCKER, DEFAULT_PLUGIN_SOCKET


class Options(AgentOptions):
    optParameters = AgentOptions.optParameters + [
        ["docker-plugin", None, DEFAULT_PLUGIN_SOCKET, "Docker plugin socket"],
        ["docker", None, DEFAULT_DOCKER, "Docker engine API (unix://PATH)"],
        ["logfile", None, None, "log file (default: stdout)"],
        ["pidfile", None, None, "pid file"],
    ]


def main(argv: Optional[List[str]] = None) -> int:
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.python import usage

    opts = Options()
    try:
        opts.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{sys.argv[0]}: {e}\n{opts}", file=sys.stderr)
        return 2
    out = open(opts["logfile"], "a", buffering=1) if opts["logfile"] else sys.stdout
    globalLogBeginner.beginLoggingTo([textFileLogObserver(out)], redirectStandardIO=False)
    if opts["pidfile"]:
        with open(opts["pidfile"], "w") as f:
            f.write(f"{os.getpid()}\n")

    from twisted.internet import reactor

    from contiv_sdn.agent.service import make_service
    from drivers.docker.service import make_docker_plugin_service

    agent = make_service(opts)
    docker = make_docker_plugin_service(agent, opts["docker-plugin"], opts["docker"])
    docker.setServiceParent(agent)
    agent.docker = docker
    reactor.callWhenRunning(agent.startService)
    reactor.addSystemEventTrigger("before", "shutdown", agent.stopService)
    reactor.run()
    if opts["pidfile"]:
        try:
            os.unlink(opts["pidfile"])
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
