"""The agent's OVSDB client: br-int, its controllers, and the ports on it.

It uses the Open vSwitch project's own Python IDL (the ``ovs`` package), which
keeps a replica of the tables we care about and commits transactions with
optimistic concurrency (``verify``/``TRY_AGAIN``), exactly like ``ovs-vsctl``.
The IDL is blocking and not thread-safe, so it lives in ONE dedicated worker
thread: every public method hands a function to that thread and returns a
Deferred; the reactor thread never touches the IDL.  We chose the IDL over
``ovs-vsctl`` subprocesses because it gives real transactions (bridge +
controllers in one commit, so OVS never sees the bridge without its controllers
and never flushes flows), no per-call process start, and typed results.

Every blocking wait has a deadline, so a dead ovsdb-server turns into an
:class:`OvsdbError` instead of a stuck thread.
"""

from __future__ import annotations

import errno
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence


def _import_ovs_without_eventlet() -> None:
    """Import ``ovs.poller`` without letting it import eventlet.

    ``ovs.poller`` tries ``from eventlet import patcher`` only to detect a
    monkey-patched ``select``; eventlet is installed here (os-ken depends on
    it) and the project never imports it.  Hiding it for the duration of this
    one import makes that probe fail cleanly (the library falls back to plain
    ``select.poll``, which is what we want in a worker thread).
    """
    if "eventlet" in sys.modules:
        import ovs.poller  # noqa: F401  (someone else already paid for eventlet)
        return
    hidden: dict = {}
    for name in ("eventlet", "eventlet.patcher"):
        hidden[name] = sys.modules.get(name, _MISSING)
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import ovs.poller  # noqa: F401
    finally:
        for name, value in hidden.items():
            if value is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


_MISSING: Any = object()
_import_ovs_without_eventlet()

import ovs.db.idl  # noqa: E402
import ovs.jsonrpc  # noqa: E402
import ovs.poller  # noqa: E402
import ovs.stream  # noqa: E402
import ovs.timeval  # noqa: E402
from twisted.internet import defer, threads  # noqa: E402
from twisted.logger import Logger  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from contiv_sdn.ops import metrics  # noqa: E402

log = Logger()

Transaction = ovs.db.idl.Transaction

#: The tables (and only those) the agent replicates.
TABLES = {
    "Open_vSwitch": ["bridges", "cur_cfg", "next_cfg", "ovs_version", "ssl"],
    "SSL": ["private_key", "certificate", "ca_cert", "bootstrap_ca_cert"],
    "Bridge": ["name", "ports", "controller", "datapath_type", "fail_mode", "protocols",
               "other_config", "external_ids", "datapath_id"],
    "Controller": ["target", "is_connected"],
    "Port": ["name", "interfaces", "external_ids", "tag", "trunks"],
    "Interface": ["name", "type", "options", "external_ids", "ofport", "error", "mtu_request",
                  "mac_in_use"],
}


class OvsdbError(RuntimeError):
    """OVSDB could not be reached or refused a transaction; the text says which and why."""


@dataclass(frozen=True)
class SslSpec:
    """The switch's own TLS identity for ``ssl:`` controllers (OVS's ``Open_vSwitch.ssl``):
    its private key, its certificate, and the CA the controller's certificate must chain to.
    Paths as ovs-vswitchd opens them."""

    private_key: str
    certificate: str
    ca_cert: str


@dataclass(frozen=True)
class BridgeSpec:
    """What br-int must look like."""

    name: str
    datapath_type: str
    dpid: int
    controllers: Sequence[str]
    protocols: Sequence[str] = ("OpenFlow13",)
    fail_mode: str = "secure"
    #: with ``ssl:`` controllers: the SSL record written in the bridge's transaction
    ssl: Optional[SslSpec] = None


@dataclass
class PortInfo:
    name: str
    type: str
    ofport: Optional[int]
    external_ids: Dict[str, str] = field(default_factory=dict)
    options: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None


class Ovsdb:
    """One IDL session on one ovsdb-server, serialised through its own thread."""

    def __init__(self, remote: str, reactor: Any = None, timeout: float = 20.0,
                 apply_timeout: float = 10.0):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.remote = remote
        self.reactor = reactor
        self.timeout = timeout
        #: How long to wait for ovs-vswitchd to apply a change (cur_cfg) before moving on.
        self.apply_timeout = apply_timeout
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"ovsdb {remote}")
        self._idl: Optional[ovs.db.idl.Idl] = None
        self._started = False

    # -- life cycle ----------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> defer.Deferred:
        if not self._started:
            self._pool.start()
            self._started = True
        return threads.deferToThreadPool(self.reactor, self._pool, fn, *args, **kw)

    def connect(self) -> defer.Deferred:
        """Fetch the server's schema, start the replica and wait for its first contents."""
        return self._call(self._connect)

    def close(self) -> defer.Deferred:
        """Close the session and stop the worker thread (waits for the current call)."""
        if not self._started:
            return defer.succeed(None)

        def _close() -> None:
            if self._idl is not None:
                self._idl.close()
                self._idl = None

        d = self._call(_close)

        def _stop(result: Any) -> Any:
            self._started = False
            # joining the (now idle) worker is quick; do it off the reactor anyway
            return threads.deferToThread(self._pool.stop).addCallback(lambda _: result)

        return d.addBoth(_stop)

    # -- public operations (each one Deferred-returning) ----------------------
    def ensure_bridge(self, spec: BridgeSpec) -> defer.Deferred:
        """Create the bridge with all its settings in one transaction, or fix an existing one.

        Fires with ``{"created": bool, "changed": [column, ...]}``.  An existing
        bridge keeps its flows: datapath type and controllers are only written
        when they differ, and the controller list is replaced in one step.
        """
        return self._call(self._ensure_bridge, spec)

    def set_controllers(self, bridge: str, targets: Sequence[str]) -> defer.Deferred:
        """Replace the controller list in one transaction; refuses an empty list."""
        return self._call(self._set_controllers, bridge, list(targets))

    def get_ssl(self) -> defer.Deferred:
        """Fires with the switch's SSL settings (``private_key``, ``certificate``,
        ``ca_cert``), or None when it has none."""
        return self._call(self._get_ssl)

    def get_bridge(self, bridge: str) -> defer.Deferred:
        """Fires with a dict of the bridge's settings, or None when it does not exist."""
        return self._call(self._get_bridge, bridge)

    def ensure_port(self, bridge: str, name: str, type: str = "",
                    options: Optional[Dict[str, str]] = None,
                    external_ids: Optional[Dict[str, str]] = None,
                    iface_external_ids: Optional[Dict[str, str]] = None,
                    wait_applied: bool = True) -> defer.Deferred:
        """Add a port (one interface of the same name) or bring an existing one to this shape.

        Fires with a :class:`PortInfo`; when ``wait_applied`` it waits (bounded)
        until ovs-vswitchd has applied the change, so ``ofport`` is known.
        """
        return self._call(self._ensure_port, bridge, name, type, dict(options or {}),
                          dict(external_ids or {}), dict(iface_external_ids or {}),
                          wait_applied)

    def delete_port(self, bridge: str, name: str, wait_applied: bool = True) -> defer.Deferred:
        """Remove a port from the bridge; fires with True if it existed (idempotent)."""
        return self._call(self._delete_port, bridge, name, wait_applied)

    def list_ports(self, bridge: str) -> defer.Deferred:
        """Fires with the bridge's ports (without the bridge's own internal port)."""
        return self._call(self._list_ports, bridge)

    def find_port(self, name: str) -> defer.Deferred:
        """Fires with ``(bridge name or None, PortInfo)`` for a port name, or None."""
        return self._call(self._find_port, name)

    # -- worker-thread side ----------------------------------------------------
    def _deadline(self, seconds: Optional[float] = None) -> float:
        return ovs.timeval.msec() + 1000 * (self.timeout if seconds is None else seconds)

    def _fetch_schema(self, deadline: float) -> Dict[str, Any]:
        err, stream = ovs.stream.Stream.open_block(
            ovs.stream.Stream.open(self.remote), max(0, int(deadline - ovs.timeval.msec())))
        if err:
            raise OvsdbError(f"cannot connect to OVSDB at {self.remote}: {_strerror(err)} "
                             "(is ovsdb-server running? check --ovs-db)")
        rpc = ovs.jsonrpc.Connection(stream)
        try:
            request = ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"])
            err = rpc.send(request)
            while not err:
                err, msg = rpc.recv()
                if err == errno.EAGAIN:
                    if ovs.timeval.msec() > deadline:
                        raise OvsdbError(f"OVSDB at {self.remote} did not answer get_schema")
                    rpc.run()
                    poller = ovs.poller.Poller()
                    rpc.wait(poller)
                    rpc.recv_wait(poller)
                    poller.timer_wait_until(deadline)
                    poller.block()
                    err = 0
                    continue
                if err:
                    break
                if msg.id == request.id:
                    if msg.type == ovs.jsonrpc.Message.T_ERROR:
                        raise OvsdbError(f"OVSDB at {self.remote}: get_schema: {msg.error}")
                    return msg.result
            raise OvsdbError(f"OVSDB at {self.remote}: {_strerror(err)}")
        finally:
            rpc.close()

    def _connect(self) -> None:
        if self._idl is not None:
            return
        deadline = self._deadline()
        schema = self._fetch_schema(deadline)
        helper = ovs.db.idl.SchemaHelper(schema_json=schema)
        for table, columns in TABLES.items():
            present = [c for c in columns if c in schema["tables"].get(table, {}).get("columns", {})]
            helper.register_columns(table, present)
        self._idl = ovs.db.idl.Idl(self.remote, helper)
        self._sync(deadline)
        log.info("OVSDB connected: {remote}", remote=self.remote)

    def _sync(self, deadline: Optional[float] = None) -> ovs.db.idl.Idl:
        """Process pending updates; on the first call, wait for the initial replica."""
        idl = self._idl
        if idl is None:
            raise OvsdbError("OVSDB session is not connected (call connect() first)")
        deadline = deadline or self._deadline()
        while True:
            idl.run()
            if idl.has_ever_connected() and idl.state == idl.IDL_S_MONITORING:
                return idl
            if ovs.timeval.msec() > deadline:
                raise OvsdbError(f"OVSDB at {self.remote} is not reachable "
                                 "(is ovsdb-server running? check --ovs-db)")
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait_until(deadline)
            poller.block()

    def _transact(self, build: Callable[[Transaction], Any], what: str,
                  wait_applied: bool = False) -> Any:
        """Run ``build`` in a transaction and commit it, retrying on TRY_AGAIN (timed for
        ``contiv_ovsdb_transaction_duration_seconds``; this runs in the OVSDB thread)."""
        started = time.perf_counter()
        op = metrics.ovsdb_op(what)
        try:
            return self._transact_once(build, what, wait_applied)
        except BaseException:
            metrics.OVSDB_FAILURES.labels(op).inc()
            raise
        finally:
            metrics.OVSDB_SECONDS.labels(op).observe(time.perf_counter() - started)

    def _transact_once(self, build: Callable[[Transaction], Any], what: str,
                       wait_applied: bool) -> Any:
        deadline = self._deadline()
        while True:
            idl = self._sync(deadline)
            seqno = idl.change_seqno
            txn = Transaction(idl)
            txn.add_comment(f"contiv-sdn agent: {what}")
            try:
                result = build(txn)
            except BaseException:
                txn.abort()
                raise
            # Only bump next_cfg when something changes, so a no-op stays UNCHANGED.
            bump = wait_applied and bool(txn._txn_rows)
            if bump:
                self._root().increment("next_cfg")
            status = self._commit(txn, deadline)
            if status in (Transaction.SUCCESS, Transaction.UNCHANGED):
                if bump and status == Transaction.SUCCESS:
                    self._wait_applied(txn.get_increment_new_value())
                return result
            if status == Transaction.TRY_AGAIN:
                if ovs.timeval.msec() > deadline:
                    raise OvsdbError(f"{what}: OVSDB kept asking to retry; giving up")
                self._wait_change(seqno, deadline)
                continue
            raise OvsdbError(f"{what}: OVSDB transaction {status}: {txn.get_error()}")

    def _commit(self, txn: Transaction, deadline: float) -> str:
        while True:
            status = txn.commit()
            if status != Transaction.INCOMPLETE:
                return status
            if ovs.timeval.msec() > deadline:
                txn.abort()
                raise OvsdbError(f"OVSDB at {self.remote} did not confirm a transaction in time")
            self._idl.run()
            poller = ovs.poller.Poller()
            self._idl.wait(poller)
            txn.wait(poller)
            poller.timer_wait_until(deadline)
            poller.block()

    def _wait_change(self, seqno: int, deadline: float) -> None:
        idl = self._idl
        while idl.change_seqno == seqno and ovs.timeval.msec() < deadline:
            idl.run()
            if idl.change_seqno != seqno:
                return
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait_until(min(deadline, ovs.timeval.msec() + 500))
            poller.block()

    def _wait_applied(self, next_cfg: int) -> None:
        """Wait until ovs-vswitchd reports cur_cfg >= next_cfg (bounded; logs if it is not)."""
        deadline = self._deadline(self.apply_timeout)
        idl = self._idl
        while True:
            idl.run()
            root = self._root()
            if root is not None and root.cur_cfg >= next_cfg:
                return
            if ovs.timeval.msec() > deadline:
                log.warn("ovs-vswitchd has not applied OVSDB change {cfg} yet "
                         "(is ovs-vswitchd running?)", cfg=next_cfg)
                return
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait_until(deadline)
            poller.block()

    def _root(self) -> Any:
        rows = list(self._idl.tables["Open_vSwitch"].rows.values())
        if not rows:
            raise OvsdbError("OVSDB has no Open_vSwitch row (run 'ovs-vsctl init')")
        return rows[0]

    def _bridge_row(self, name: str) -> Any:
        for row in self._idl.tables["Bridge"].rows.values():
            if row.name == name:
                return row
        return None

    def _port_row(self, name: str) -> Any:
        for row in self._idl.tables["Port"].rows.values():
            if row.name == name:
                return row
        return None

    def _ensure_bridge(self, spec: BridgeSpec) -> Dict[str, Any]:
        if not spec.controllers:
            raise OvsdbError(f"bridge {spec.name}: at least one controller target is required")
        dpid = f"{spec.dpid:016x}"

        def build(txn: Transaction) -> Dict[str, Any]:
            tables = self._idl.tables
            # the switch's certificate lands with (or before) the ssl: targets that need it
            ssl_changed = spec.ssl is not None and self._ensure_ssl(txn, spec.ssl)
            br = self._bridge_row(spec.name)
            if br is None:
                ctrls = []
                for target in spec.controllers:
                    c = txn.insert(tables["Controller"])
                    c.target = target
                    ctrls.append(c)
                iface = txn.insert(tables["Interface"])
                iface.name = spec.name
                iface.type = "internal"
                port = txn.insert(tables["Port"])
                port.name = spec.name
                port.interfaces = [iface]
                br = txn.insert(tables["Bridge"])
                br.name = spec.name
                br.ports = [port]
                br.controller = ctrls
                br.datapath_type = spec.datapath_type
                br.fail_mode = [spec.fail_mode]
                br.protocols = list(spec.protocols)
                br.other_config = {"datapath-id": dpid}
                self._root().addvalue("bridges", br.uuid)
                return {"created": True, "changed": []}
            changed = ["ssl"] if ssl_changed else []
            if br.datapath_type != spec.datapath_type:
                br.datapath_type = spec.datapath_type
                changed.append("datapath_type")
            if list(br.fail_mode) != [spec.fail_mode]:
                br.fail_mode = [spec.fail_mode]
                changed.append("fail_mode")
            if sorted(br.protocols) != sorted(spec.protocols):
                br.protocols = list(spec.protocols)
                changed.append("protocols")
            if br.other_config.get("datapath-id") != dpid:
                br.setkey("other_config", "datapath-id", dpid)
                changed.append("other_config:datapath-id")
            if self._replace_controllers(txn, br, spec.controllers):
                changed.append("controller")
            return {"created": False, "changed": changed}

        result = self._transact(build, f"ensure bridge {spec.name}", wait_applied=True)
        if result["created"]:
            log.info("created bridge {bridge} ({dptype}, dpid {dpid}, controllers {ctrl})",
                     bridge=spec.name, dptype=spec.datapath_type, dpid=dpid,
                     ctrl=",".join(spec.controllers))
        elif result["changed"]:
            log.info("bridge {bridge} existed; corrected {changed}", bridge=spec.name,
                     changed=", ".join(result["changed"]))
        return result

    def _ensure_ssl(self, txn: Transaction, ssl: SslSpec) -> bool:
        """Point ``Open_vSwitch.ssl`` at these files; True if anything was written.

        The row is the switch's (one per OVS, like ``ovs-vsctl set-ssl``): an existing
        one is corrected in place, so other tools' view of it stays one row."""
        root = self._root()
        want = {"private_key": ssl.private_key, "certificate": ssl.certificate,
                "ca_cert": ssl.ca_cert}
        rows = list(root.ssl)
        row = rows[0] if rows else None
        if row is None:
            row = txn.insert(self._idl.tables["SSL"])
            for column, value in want.items():
                setattr(row, column, value)
            row.bootstrap_ca_cert = False
            root.ssl = [row]
            return True
        changed = False
        for column, value in want.items():
            if getattr(row, column) != value:
                setattr(row, column, value)
                changed = True
        if row.bootstrap_ca_cert:  # we hold the CA: never trust whatever the peer sends
            row.bootstrap_ca_cert = False
            changed = True
        return changed

    def _get_ssl(self) -> Optional[Dict[str, str]]:
        self._sync()
        rows = list(self._root().ssl)
        if not rows:
            return None
        return {"private_key": rows[0].private_key, "certificate": rows[0].certificate,
                "ca_cert": rows[0].ca_cert}

    def _replace_controllers(self, txn: Transaction, br: Any, targets: Sequence[str]) -> bool:
        current = {c.target: c for c in br.controller}
        if sorted(current) == sorted(targets):
            return False
        if not current:
            log.warn("bridge {bridge} had no controller: setting one now makes OVS flush "
                     "its flows once", bridge=br.name)
        br.verify("controller")
        rows = []
        for target in targets:
            row = current.get(target)
            if row is None:
                row = txn.insert(self._idl.tables["Controller"])
                row.target = target
            rows.append(row)
        br.controller = rows
        return True

    def _set_controllers(self, bridge: str, targets: List[str]) -> bool:
        if not targets:
            raise OvsdbError(f"bridge {bridge}: refusing to remove every controller "
                             "(OVS would flush all flows)")

        def build(txn: Transaction) -> bool:
            br = self._bridge_row(bridge)
            if br is None:
                raise OvsdbError(f"bridge {bridge} does not exist")
            return self._replace_controllers(txn, br, targets)

        return self._transact(build, f"set controllers of {bridge}")

    def _get_bridge(self, bridge: str) -> Optional[Dict[str, Any]]:
        self._sync()
        br = self._bridge_row(bridge)
        if br is None:
            return None
        return {
            "name": br.name,
            "datapath_type": br.datapath_type,
            "fail_mode": (list(br.fail_mode) or [None])[0],
            "protocols": sorted(br.protocols),
            "other_config": dict(br.other_config),
            "controllers": sorted(c.target for c in br.controller),
            "ports": sorted(p.name for p in br.ports),
            "datapath_id": (list(br.datapath_id) or [None])[0],
        }

    def _ensure_port(self, bridge: str, name: str, type: str, options: Dict[str, str],
                     external_ids: Dict[str, str], iface_external_ids: Dict[str, str],
                     wait_applied: bool) -> PortInfo:
        def build(txn: Transaction) -> None:
            br = self._bridge_row(bridge)
            if br is None:
                raise OvsdbError(f"bridge {bridge} does not exist")
            port = self._port_row(name)
            if port is not None and port not in list(br.ports):
                owner = self._owner(port)
                raise OvsdbError(f"port {name} already exists on bridge {owner}, not {bridge}")
            if port is None:
                iface = txn.insert(self._idl.tables["Interface"])
                iface.name = name
                if type:
                    iface.type = type
                if options:
                    iface.options = options
                if iface_external_ids:
                    iface.external_ids = iface_external_ids
                port = txn.insert(self._idl.tables["Port"])
                port.name = name
                port.interfaces = [iface]
                if external_ids:
                    port.external_ids = external_ids
                br.addvalue("ports", port.uuid)
                return
            ifaces = list(port.interfaces)
            iface = next((i for i in ifaces if i.name == name), ifaces[0] if ifaces else None)
            if iface is None:
                raise OvsdbError(f"port {name} has no interface")
            if iface.type != type:
                iface.type = type
            if dict(iface.options) != options:
                iface.options = options
            for key, value in iface_external_ids.items():
                if iface.external_ids.get(key) != value:
                    iface.setkey("external_ids", key, value)
            for key, value in external_ids.items():
                if port.external_ids.get(key) != value:
                    port.setkey("external_ids", key, value)

        self._transact(build, f"add port {name} to {bridge}", wait_applied=wait_applied)
        self._sync()
        info = self._find_port(name)
        if info is None:
            raise OvsdbError(f"port {name} vanished right after it was added to {bridge}")
        return info[1]

    def _owner(self, port: Any) -> Optional[str]:
        for br in self._idl.tables["Bridge"].rows.values():
            if port in list(br.ports):
                return br.name
        return None

    def _delete_port(self, bridge: str, name: str, wait_applied: bool) -> bool:
        def build(txn: Transaction) -> bool:
            br = self._bridge_row(bridge)
            port = self._port_row(name)
            if br is None or port is None or port not in list(br.ports):
                return False
            br.delvalue("ports", port.uuid)
            for iface in list(port.interfaces):
                iface.delete()
            port.delete()
            return True

        return self._transact(build, f"delete port {name} from {bridge}",
                              wait_applied=wait_applied)

    def _port_info(self, port: Any) -> PortInfo:
        ifaces = list(port.interfaces)
        iface = next((i for i in ifaces if i.name == port.name), ifaces[0] if ifaces else None)
        ofport = None
        err = None
        itype = ""
        options: Dict[str, str] = {}
        if iface is not None:
            ofport = (list(iface.ofport) or [None])[0]
            if ofport is not None and ofport < 0:
                ofport = None
            err = (list(iface.error) or [None])[0]
            itype = iface.type
            options = dict(iface.options)
        return PortInfo(name=port.name, type=itype, ofport=ofport,
                        external_ids=dict(port.external_ids), options=options, error=err)

    def _list_ports(self, bridge: str) -> List[PortInfo]:
        self._sync()
        br = self._bridge_row(bridge)
        if br is None:
            return []
        return sorted((self._port_info(p) for p in br.ports if p.name != bridge),
                      key=lambda p: p.name)

    def _find_port(self, name: str) -> Optional[tuple]:
        self._sync()
        port = self._port_row(name)
        if port is None:
            return None
        return (self._owner(port), self._port_info(port))


def _strerror(err: Any) -> str:
    if isinstance(err, int) and err > 0:
        import os
        return os.strerror(err)
    return str(err)

