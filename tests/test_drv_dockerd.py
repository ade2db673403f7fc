"""``contiv_sdn.lab.docker``: several private dockerds on one machine, each with its own plugins.

The lab relies on it: every simulated host's dockerd must reach *its* host's
netplugin (mount-namespace trick), run containers in that host's network
namespace, keep them across its own restart (live-restore), and leave nothing
behind (processes, mounts) when cleaned up.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile

from twisted.internet import defer, endpoints, reactor, threads
from twisted.trial import unittest
from twisted.web import resource, server

from contiv_sdn.testing import require_binary, require_root


class RecordingPlugin(resource.Resource):
    """A remote network driver that only records which calls reached it."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def render_POST(self, request):
        call = request.path.decode().lstrip("/")
        self.calls.append(call)
        request.setHeader(b"Content-Type", b"application/vnd.docker.plugins.v1+json")
        if call == "Plugin.Activate":
            return b'{"Implements": ["NetworkDriver"]}'
        if call == "NetworkDriver.GetCapabilities":
            return b'{"Scope": "local"}'
        return b"{}"


class PrivateDockerdTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        require_root()
        require_binary("dockerd", "docker", "nsenter", "unshare")
        self.dir = tempfile.mkdtemp(prefix="drv-dockerd-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def netns(self) -> str:
        name = f"drvd{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", name])
        return name

    @defer.inlineCallbacks
    def test_two_engines_each_with_its_own_plugin_and_namespace(self):
        from contiv_sdn.lab.docker import Dockerd, import_busybox
        engines, plugins = [], []
        for i in range(2):
            ns = self.netns()
            base = os.path.join(self.dir, f"h{i}")
            plugin = RecordingPlugin()
            os.makedirs(os.path.join(base, "plugins"))
            port = yield endpoints.UNIXServerEndpoint(
                reactor, os.path.join(base, "plugins", "drvrec.sock")).listen(server.Site(plugin))
            self.addCleanup(port.stopListening)
            d = Dockerd(os.path.join(base, "docker"), netns=ns,
                        plugin_dir=os.path.join(base, "plugins"), name=f"drvd{i}")
            self.addCleanup(threads.deferToThread, d.cleanup)
            yield threads.deferToThread(d.start)
            engines.append((d, ns))
            plugins.append(plugin)
        yield threads.deferToThread(import_busybox, engines[0][0].socket)
        # a network of driver "drvrec" on engine 0 reaches plugin 0 only
        yield threads.deferToThread(engines[0][0].docker, "network", "create", "-d", "drvrec",
                                    "--subnet", "10.97.0.0/24", "recnet")
        self.assertIn("NetworkDriver.CreateNetwork", plugins[0].calls)
        self.assertEqual(plugins[1].calls, [])
        # containers run in the engine's host namespace: a --net host container sees it
        d0, ns0 = engines[0]
        subprocess.run(["ip", "-n", ns0, "link", "add", "drvdmark", "type", "veth", "peer",
                        "name", "drvdmarkp"], check=True)
        out = yield threads.deferToThread(d0.docker, "run", "--rm", "--net", "host",
                                          "busybox:local", "ip", "link")
        self.assertIn("drvdmark", out.stdout)
        # live-restore: a restart of the engine keeps its running container
        yield threads.deferToThread(d0.docker, "run", "-d", "--name", "keep", "--net", "none",
                                    "busybox:local", "sleep", "300")
        yield threads.deferToThread(d0.restart)
        ps = yield threads.deferToThread(d0.docker, "ps", "--format", "{{.Names}}")
        self.assertEqual(ps.stdout.split(), ["keep"])
        # cleanup removes processes, mounts and folders
        pid = d0.pid()
        yield threads.deferToThread(d0.cleanup)
        self.assertFalse(os.path.exists(d0.root))
        self.assertIsNone(d0.pid())
        with open("/proc/self/mountinfo") as f:
            self.assertNotIn(d0.root, f.read())
        self.assertFalse(os.path.exists(f"/proc/{pid}/cmdline") and
                         "dockerd" in open(f"/proc/{pid}/cmdline").read()
                         and _not_zombie(pid))


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
