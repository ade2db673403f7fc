"""A real switch for tests and benchmarks: a private OVS whose bridges connect to our factory.

Tests of the channel and of flow sync need a switch that behaves like production
(real handshake, real bundles, real flow-stats), so they get one:
:class:`SwitchLab` starts a private :class:`~contiv_sdn.lab.ovs.OvsInstance`,
listens with an :class:`OpenFlowFactory` on a kernel-chosen loopback port, and
adds bridges that connect to it.  Everything it creates carries the caller's
prefix (``ofp`` for this package's tests) plus the process id, so parallel runs
never collide, and :meth:`SwitchLab.stop` removes bridges (their tap devices
outlive ovs-vswitchd otherwise), daemons and the directory, even after a failure.

OVS commands run in a thread (``deferToThread``): the reactor keeps serving the
switches meanwhile.

Why the product package carries it rather than ``tests/``: the benchmarks
(``bench/flowpush.py``, ``make bench``) drive the same real switch, and ``bench/``
does not import from ``tests/`` (not a package that is installed).  Nothing in
netmaster or netplugin imports it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Any, Dict, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from contiv_sdn.lab.ovs import OvsInstance
from contiv_sdn.openflow.protocol import OpenFlowFactory, OpenFlowProtocol
from contiv_sdn.openflow.registry import SwitchRegistry

log = Logger()


class SwitchLab:
    def __init__(self, prefix: str = "ofp", registry: Optional[SwitchRegistry] = None,
                 **factory_kwargs: Any):
        self.prefix = f"{prefix}{os.getpid() % 100000}"
        self.registry = registry if registry is not None else SwitchRegistry()
        self.factory = OpenFlowFactory(self.registry, **factory_kwargs)
        self.ovs: Optional[OvsInstance] = None
        self.port: Any = None
        self.bridges: List[str] = []
        self.ifaces: List[str] = []
        self._waiters: Dict[int, List[Deferred]] = {}
        self._user_up = self.registry.on_switch_up
        self.registry.on_switch_up = self._switch_up
        self._n = 0

    @property
    def controller(self) -> str:
        return f"tcp:127.0.0.1:{self.port.getHost().port}"

    def name(self, tag: str) -> str:
        """A device name with our prefix, at most 15 characters (the kernel's limit)."""
        n = f"{self.prefix}{tag}"
        if len(n) > 15:
            raise ValueError(f"device name {n!r} too long")
        return n

    async def start(self) -> "SwitchLab":
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        directory = tempfile.mkdtemp(prefix=f"{self.prefix}-ovs-")
        self.ovs = OvsInstance(directory)
        await deferToThread(self.ovs.start)
        return self

    def _switch_up(self, switch: OpenFlowProtocol) -> Any:
        for d in self._waiters.pop(switch.dpid, []):
            d.callback(switch)
        if self._user_up is not None:
            return self._user_up(switch)
        return None

    def wait_switch(self, dpid: int) -> Deferred:
        """Fires with the next connection of ``dpid`` that completes the handshake."""
        d: Deferred = Deferred()
        self._waiters.setdefault(dpid, []).append(d)
        return d

    def next_dpid(self) -> int:
        self._n += 1
        return (0x0FF0 << 48) | (os.getpid() << 8) | self._n

    async def add_switch(self, tag: str = "br", dpid: Optional[int] = None,
                         max_backoff_ms: int = 1000) -> OpenFlowProtocol:
        """A bridge connected to our factory; returns its connection once it is up."""
        assert self.ovs is not None
        name = self.name(tag)
        dpid = dpid if dpid is not None else self.next_dpid()
        up = self.wait_switch(dpid)
        self.bridges.append(name)
        await deferToThread(self.ovs.add_bridge, name, dpid, [self.controller])
        # reconnect fast after a drop (the default backoff grows to 8 s)
        await deferToThread(self.ovs.vsctl, "set", "controller", name, f"max_backoff={max_backoff_ms}")
        return await up

    async def add_internal_port(self, bridge: str, tag: str) -> str:
        assert self.ovs is not None
        name = self.name(tag)
        self.ifaces.append(name)
        await deferToThread(self.ovs.vsctl, "add-port", bridge, name, "--", "set", "interface",
                            name, "type=internal")
        return name

    def ofctl(self, *args: str) -> Deferred:
        assert self.ovs is not None
        return deferToThread(self.ovs.ofctl, *args)

    def vsctl(self, *args: str) -> Deferred:
        assert self.ovs is not None
        return deferToThread(self.ovs.vsctl, *args)

    async def stop(self) -> None:
        for p in list(self.factory.connections):
            p.close("test lab stopping")
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        if self.ovs is not None:
            await deferToThread(self._stop_ovs, self.ovs)
            self.ovs = None

    def _stop_ovs(self, ovs: OvsInstance) -> None:
        for br in self.bridges:
            try:
                ovs.vsctl("--if-exists", "del-br", br)
            except Exception as e:
                log.warn("del-br {br} failed: {e}", br=br, e=e)
        # "exit" returns at once; SIGTERM (OvsInstance.stop) takes seconds per daemon
        for ctl in ("ovs-vswitchd.ctl", "ovsdb-server.ctl"):
            subprocess.run(["ovs-appctl", "-t", os.path.join(ovs.dir, ctl), "exit"],
                           capture_output=True, timeout=10)
        ovs.stop(remove=True)
        for dev in self.bridges + self.ifaces:
            if os.path.exists(f"/sys/class/net/{dev}"):
                subprocess.run(["ip", "link", "del", dev], capture_output=True)
