"""The controller's OpenFlow channel: one Twisted protocol per switch connection.

Version: **OpenFlow 1.3 only** (HELLO carries a version bitmap with just 1.3).
It is what the agent configures on every ``br-int`` (``protocols=OpenFlow13``),
what ``ovs-ofctl -O OpenFlow13`` and :meth:`Flow.to_ofctl` speak, and it has
everything the pipeline needs: OXM matches with Nicira registers and conntrack
fields, groups, meters, multipart stats, and atomic bundles through the ONF
EXT-230 extension that OVS implements for 1.3 (``ovs-ofctl --bundle`` uses the
same).  OpenFlow 1.4/1.5 would give native bundles but nothing else we use, and
os-ken's 1.4/1.5 Nicira support is less exercised.

What a connection does:

* handshake: HELLO (bitmap) -> FEATURES (dpid) -> PORT_DESC (port name ->
  ofport); then the switch is registered (``registry.switch_up``) and
  :attr:`OpenFlowProtocol.ready` fires;
* liveness: any message from the switch counts as alive; after
  ``echo_interval`` of silence we send ECHO_REQUEST; after ``echo_timeout``
  we drop the connection (this also drops peers that never say HELLO);
  switch echo requests are answered;
* requests whose replies are correlated by xid return Deferreds: multipart
  (flow / group / meter stats, port desc), barrier, bundle control;
* OFPT_ERROR is matched to the message that caused it by xid (pending
  request, open bundle, or a bounded map of recently sent messages) and logged
  with that message decoded; a pending request fails with :class:`OpenFlowError`.
  Its body is read here, not by os-ken: an error too short for its type (an
  experimenter error without its experimenter id, a body without type and
  code) is still an error for that xid, logged in one line, and the connection
  stays (its framing was fine);
* bundles (:class:`Bundle`): open, add, commit; the commit fails with
  :class:`BundleError` naming every rejected message;
* roles (several netmasters, :mod:`contiv_sdn.controller.lease`):
  :meth:`OpenFlowProtocol.request_role` sends OFPT_ROLE_REQUEST with a
  generation id; a connection marked ``fenced`` refuses to open a bundle, commit
  one or send a flow_mod unless the switch confirmed it MASTER (:class:`NotMaster`),
  and a demotion takes effect locally the moment it is asked for, before the
  switch answers;
* anything malformed (bad length, wrong version, unparseable body, message
  before HELLO) is logged and drops *that* connection only.
"""

from __future__ import annotations

import bisect
import struct
import traceback
from array import array
from functools import partial
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from twisted.internet import task
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from contiv_sdn.agent.registration import host_dpid
from contiv_sdn.openflow import codec, validate
from contiv_sdn.openflow.validate import Malformed
from contiv_sdn.ops.listen import endpoint_fields
from contiv_sdn.pipeline.flow import Flow

log = Logger()

OFP_VERSION = ofp.OFP_VERSION
#: Where the netmaster listens for switches (IANA's OpenFlow port), as a Twisted endpoint string.
DEFAULT_ENDPOINT = "tcp:6653"
_HEADER = struct.Struct("!BBHI")
_BUNDLE_CTRL = struct.Struct("!IIIHH")
_ERROR = struct.Struct("!HH")  # type, code (exp_type for OFPET_EXPERIMENTER)
_ERROR_EXPERIMENTER = struct.Struct("!I")
_BUNDLE_ADD = codec._BUNDLE_ADD.pack
HEADER_SIZE = 8
ONF_EXPERIMENTER_ID = codec.ONF_EXPERIMENTER_ID
#: messages without a reply (flow and group mods sent alone) remembered per switch to
#: describe an error about one of them: an error comes before the replies to anything
#: sent after its message, so the last few are enough.  4,096, with every request and
#: echo remembered too, grew to ~0.5 MB per switch over a netmaster's life (300 MB at 500)
MAX_RECENT = 64
DEFAULT_BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
BUNDLE_TIMEOUT_FACTOR = 4


class OpenFlowError(Exception):
    """The switch rejected a message (OFPT_ERROR), with the message it rejected.

    ``type`` and ``code`` are None when the switch's error was too short to say."""

    def __init__(self, type_: Optional[int], code: Optional[int], xid: int, failed: str = "",
                 dpid: Optional[int] = None):
        self.type, self.code, self.xid, self.failed, self.dpid = type_, code, xid, failed, dpid
        super().__init__(f"{error_name(type_, code)} for xid {xid}"
                         + (f" on {dpid_str(dpid)}" if dpid is not None else "")
                         + (f": {failed}" if failed else ""))


class BundleError(OpenFlowError):
    """A bundle was not committed; ``errors`` holds what the switch said about each message."""

    def __init__(self, reason: str, errors: Sequence[OpenFlowError] = (), dpid: Optional[int] = None):
        self.reason = reason
        self.errors = list(errors)
        Exception.__init__(self, f"bundle on {dpid_str(dpid)} not committed: {reason}"
                           + "".join(f"\n  - {e}" for e in self.errors))
        self.dpid = dpid


class SwitchDisconnected(Exception):
    """The connection closed before the switch answered."""


class NotMaster(Exception):
    """This netmaster is not the switch's MASTER (another one is): it does not write."""


#: role numbers (OFPCR_ROLE_*) -> the names OVS's ``ovs-vsctl list controller`` shows
ROLE_NAMES = {ofp.OFPCR_ROLE_NOCHANGE: "nochange", ofp.OFPCR_ROLE_EQUAL: "other",
              ofp.OFPCR_ROLE_MASTER: "master", ofp.OFPCR_ROLE_SLAVE: "slave"}
_ROLE = struct.Struct("!I4xQ")


class ProtocolViolation(Exception):
    """The peer sent something that is not OpenFlow 1.3 as we speak it."""


def hello_bytes(xid: int) -> bytes:
    """HELLO with a version-bitmap element offering 1.3 only.

    os-ken parses hello elements but cannot serialize them, so the element is
    packed here with os-ken's own layout constants (the tests parse it back with os-ken).
    """
    elem = struct.pack(ofp.OFP_HELLO_ELEM_VERSIONBITMAP_HEADER_PACK_STR, ofp.OFPHET_VERSIONBITMAP,
                       ofp.OFP_HELLO_ELEM_VERSIONBITMAP_HEADER_SIZE + 4) + struct.pack("!I", 1 << OFP_VERSION)
    return _HEADER.pack(OFP_VERSION, ofp.OFPT_HELLO, HEADER_SIZE + len(elem), xid) + elem


def dpid_str(dpid: Optional[int]) -> str:
    return "switch ?" if dpid is None else f"dpid {dpid:016x}"


# ---------------------------------------------------------------------------
# error names
# ---------------------------------------------------------------------------

_CODE_PREFIX = {
    ofp.OFPET_HELLO_FAILED: "OFPHFC_", ofp.OFPET_BAD_REQUEST: "OFPBRC_",
    ofp.OFPET_BAD_ACTION: "OFPBAC_", ofp.OFPET_BAD_INSTRUCTION: "OFPBIC_",
    ofp.OFPET_BAD_MATCH: "OFPBMC_", ofp.OFPET_FLOW_MOD_FAILED: "OFPFMFC_",
    ofp.OFPET_GROUP_MOD_FAILED: "OFPGMFC_", ofp.OFPET_PORT_MOD_FAILED: "OFPPMFC_",
    ofp.OFPET_TABLE_MOD_FAILED: "OFPTMFC_", ofp.OFPET_QUEUE_OP_FAILED: "OFPQOFC_",
    ofp.OFPET_SWITCH_CONFIG_FAILED: "OFPSCFC_", ofp.OFPET_ROLE_REQUEST_FAILED: "OFPRRFC_",
    ofp.OFPET_METER_MOD_FAILED: "OFPMMFC_", ofp.OFPET_TABLE_FEATURES_FAILED: "OFPTFFC_",
}
_TYPE_NAMES = {v: k for k, v in vars(ofp).items() if k.startswith("OFPET_") and isinstance(v, int)}
_CODE_NAMES: Dict[tuple, str] = {}
for _t, _prefix in _CODE_PREFIX.items():
    for _k, _v in vars(ofp).items():
        if _k.startswith(_prefix) and isinstance(_v, int):
            _CODE_NAMES.setdefault((_t, _v), _k)
_ONF_ERR_NAMES = {v: k for k, v in vars(ofp).items() if k.startswith("ONFERR_ET_") and isinstance(v, int)}


def error_name(type_: Optional[int], code: Optional[int]) -> str:
    """``OFPET_BAD_ACTION/OFPBAC_BAD_OUT_PORT`` (experimenter errors: the ONF name of exp_type)."""
    if type_ is None:
        return "OFPT_ERROR without type and code"
    if type_ == ofp.OFPET_EXPERIMENTER:
        return f"OFPET_EXPERIMENTER/{_ONF_ERR_NAMES.get(code, code)}"
    return f"{_TYPE_NAMES.get(type_, type_)}/{_CODE_NAMES.get((type_, code), code)}"


class ErrorBody(NamedTuple):
    """An OFPT_ERROR as we read it: type and code (None if absent), the bytes of the
    rejected message, and what was malformed about it ("" if nothing)."""

    type: Optional[int]
    code: Optional[int]
    data: bytes
    malformed: str


def parse_error(data: bytes) -> ErrorBody:
    """Read an OFPT_ERROR (whole message, header included) without os-ken.

    os-ken raises on an experimenter error shorter than 16 bytes (and would log a
    traceback); the fields are few enough to read directly, and what is missing is
    reported instead of raised: an error is an error even when badly formed.
    """
    body = data[HEADER_SIZE:]
    if len(body) < _ERROR.size:
        return ErrorBody(None, None, b"", f"body of {len(body)} bytes, shorter than type and code")
    type_, code = _ERROR.unpack_from(body)
    if type_ != ofp.OFPET_EXPERIMENTER:
        return ErrorBody(type_, code, bytes(body[_ERROR.size:]), "")
    rest = _ERROR.size + _ERROR_EXPERIMENTER.size
    if len(body) < rest:
        return ErrorBody(type_, code, b"", f"experimenter error of {len(body)} bytes, without its "
                                           f"experimenter id")
    return ErrorBody(type_, code, bytes(body[rest:]), "")


def describe_message(data: bytes) -> str:
    """A readable one-liner of a message *we* sent (never feed it switch-provided bytes)."""
    try:
        msg = codec.parse_message(bytes(data))
        if isinstance(msg, parser.OFPFlowMod):
            return _describe_flow_mod(msg)
        return str(msg)[:400]
    except Exception:
        return _summarize(data)


def _summarize(data: bytes) -> str:
    if len(data) >= HEADER_SIZE:
        v, t, ln, xid = _HEADER.unpack_from(data)
        return f"message type {t} len {ln} xid {xid} (first bytes {bytes(data[:64]).hex()})"
    return f"bytes {bytes(data[:64]).hex()}"


def _describe_flow_mod(msg: Any) -> str:
    try:
        cmd = {0: "ADD", 1: "MODIFY", 2: "MODIFY_STRICT", 3: "DELETE", 4: "DELETE_STRICT"}.get(
            msg.command, msg.command)
        f = codec.flow_from_stats(msg)
        return f"flow_mod {cmd} {f.to_ofctl()}"
    except Exception:
        return str(msg)[:400]


# ---------------------------------------------------------------------------
# requests and bundles
# ---------------------------------------------------------------------------

_MP_FLAGS = struct.Struct("!H")  # a multipart reply's flags, after its type (offset 10)


class _Request:
    __slots__ = ("deferred", "parts", "what", "mp_type", "raw")

    def __init__(self, what: str, mp_type: Optional[int] = None, raw: bool = False):
        self.deferred: Deferred = Deferred()
        self.parts: List[Any] = []
        self.what = what
        self.mp_type = mp_type
        #: multipart bodies kept as checked bytes, not parsed by os-ken (flow reads)
        self.raw = raw


class Bundle:
    """An ONF (EXT-230) bundle on one switch: everything added is applied atomically, or nothing.

    Messages are buffered and written in batches (:meth:`flush`).  Before the
    commit we ask for a barrier: OVS checks each message when it is *added* and,
    if it rejects one, still commits the others; so a commit is only sent once
    the barrier proves no add was rejected, otherwise the bundle is discarded.
    """

    def __init__(self, switch: "OpenFlowProtocol", bundle_id: int, flags: int):
        self.switch = switch
        self.id = bundle_id
        self.flags = flags
        self.errors: List[OpenFlowError] = []
        # ascending, unless the xid counter wrapped inside this bundle; 4 bytes each, not
        # an int object each: 500 switches' catch-up bundles hold millions at once
        self._xids = array("I")
        self._wrapped = False
        self._items: List[Any] = []
        self._out: List[bytes] = []
        self.count = 0
        self.closed = False
        self._open_failure: Optional[Failure] = None
        self._open_d = switch._bundle_ctrl(self, ofp.ONF_BCT_OPEN_REQUEST)
        self._open_d.addErrback(self._open_failed)

    def _open_failed_later(self, f: Failure) -> Failure:
        if self._open_failure is None:
            return f
        return None  # the open failure is what we report; this one is a consequence

    def _open_failed(self, f: Failure) -> None:
        # kept for commit(); a bundle nobody commits must not leave an unhandled error
        self._open_failure = f

    def add(self, inner: bytes, item: Any = None) -> None:
        """Add one encoded message (its xid must come from ``switch.next_xid()``)."""
        if self.closed:
            raise RuntimeError("bundle already committed or discarded")
        xid = int.from_bytes(inner[4:8], "big")
        if self._xids and xid < self._xids[-1]:
            self._wrapped = True
        self._xids.append(xid)
        self._items.append(item)
        self._out.append(codec.encode_bundle_add(inner, self.id, self.flags))
        self.count += 1

    def add_encoded(self, xid: int, inner: bytes, item: Any = None) -> None:
        """:meth:`add` for the hot path: the caller passes the xid it encoded ``inner`` with."""
        xids = self._xids
        if xids and xid < xids[-1]:
            self._wrapped = True
        xids.append(xid)
        self._items.append(item)
        self._out.append(_BUNDLE_ADD(OFP_VERSION, ofp.OFPT_EXPERIMENTER, codec.BUNDLE_ADD_HEADER + len(inner),
                                     xid, ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_ADD_MESSAGE, self.id,
                                     self.flags))
        self._out.append(inner)
        self.count += 1

    def add_flow_mod(self, flow: Flow, command: int) -> None:
        xid = self.switch.next_xid()
        self.add(codec.encode_flow_mod(flow, command, xid), flow)

    def flush(self) -> None:
        if self._out:
            self.switch.send(b"".join(self._out))
            self._out = []

    def _index(self, xid: int) -> int:
        xids = self._xids
        if self._wrapped:
            try:
                return xids.index(xid)
            except ValueError:
                return -1
        i = bisect.bisect_left(xids, xid)
        return i if i < len(xids) and xids[i] == xid else -1

    def owns(self, xid: int) -> bool:
        return self._index(xid) >= 0

    def item_for(self, xid: int) -> Any:
        i = self._index(xid)
        return self._items[i] if i >= 0 else None

    async def commit(self) -> int:
        """Commit; returns the number of messages applied, or raises :class:`BundleError`."""
        self.flush()
        try:
            barrier = self.switch.barrier()  # sent now: no extra round trip behind the OPEN reply
            barrier.addErrback(self._open_failed_later)
            # one wait, not two: the switch answers in order, so the OPEN's reply (or
            # error) came before the barrier's; each wait resumes this whole stack of
            # coroutines, at 500 switches a change's 500 resumes
            await barrier
            if not self._open_d.called:  # a switch answering out of order
                await self._open_d
            if self._open_failure is not None:
                self._open_failure.raiseException()
        except OpenFlowError as e:
            self._finish()
            raise BundleError(f"open failed: {e}", self.errors, self.switch.dpid) from e
        except BaseException:
            self._finish()
            raise
        if self.errors:
            await self._discard_quietly()
            raise BundleError(f"{len(self.errors)} of {self.count} messages rejected",
                              self.errors, self.switch.dpid)
        if not self.switch.writable:  # demoted while the bundle was written: never commit it
            await self._discard_quietly()
            # (not check_writable() again: MASTER may be confirmed while the discard is
            # answered, and a commit then finds no bundle: at 1000x20k 262 commits were
            # answered "no such bundle" after a lapse, each dropping a belief)
            raise NotMaster(f"{self.switch._who()}: demoted while bundle {self.id} was written; "
                            f"discarded, nothing committed")
        try:
            await self.switch._bundle_ctrl(self, ofp.ONF_BCT_COMMIT_REQUEST)
        except OpenFlowError as e:
            raise BundleError(f"commit failed: {error_name(e.type, e.code)}", self.errors,
                              self.switch.dpid) from e
        finally:
            self._finish()
        return self.count

    async def discard(self) -> None:
        await self._discard_quietly()

    async def _discard_quietly(self) -> None:
        try:
            if self.switch.connected:
                await self.switch._bundle_ctrl(self, ofp.ONF_BCT_DISCARD_REQUEST)
        except Exception as e:  # the bundle dies with the connection anyway
            log.debug("bundle discard failed: {e}", e=e)
        finally:
            self._finish()

    def _finish(self) -> None:
        self.closed = True
        self.switch._bundles.pop(self.id, None)


# ---------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------

class OpenFlowProtocol(Protocol):
    """One switch connection.  The registry hands this object out as "the switch"."""

    def __init__(self, factory: "OpenFlowFactory"):
        self.factory = factory
        self.registry = factory.registry
        self.clock: IReactorTime = factory.clock
        self.datapath = codec.Datapath()
        self.dpid: Optional[int] = None
        self.ports: Dict[str, int] = {}
        #: port number -> name: what a port status needs to know of the port it replaces
        #: (os-ken's port objects were ~0.5 KiB each, one per endpoint at a cluster)
        self.port_names: Dict[int, str] = {}
        self.n_tables = 0
        self.ready: Deferred = Deferred()
        self.connected = False
        self.up = False
        self.peer = ""
        self._state = "hello"
        self._buf = bytearray()
        self._dead = False
        self._xid = 0
        self._pending: Dict[int, _Request] = {}
        self._recent: Dict[int, bytes] = {}
        self._bundles: Dict[int, Bundle] = {}
        self._bundle_seq = 0
        self._last_rx = 0.0
        self._echo_loop: Optional[task.LoopingCall] = None
        self.rx_messages = 0
        #: the role the switch confirmed (OFPCR_ROLE_*); a new connection is EQUAL in OVS
        self.role = ofp.OFPCR_ROLE_EQUAL
        #: the role last asked for (None: never asked)
        self.role_wanted: Optional[int] = None
        #: writes need a confirmed MASTER role (set by a controller that runs the lease)
        self.fenced = False
        self._role_seq = 0
        #: dropped at FEATURES: its certificate does not name the datapath it announced
        self.identity_refused = False

    # -- connection ------------------------------------------------------
    def connectionMade(self) -> None:
        self.connected = True
        self.factory.connections.append(self)
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        self._last_rx = self.clock.seconds()
        xid = self.next_xid()
        self.send(hello_bytes(xid))
        loop = task.LoopingCall(self._liveness)
        loop.clock = self.clock
        self._echo_loop = loop
        loop.start(self.factory.echo_interval, now=False)

    def connectionLost(self, reason: Failure = None) -> None:
        self.connected = False
        self._dead = True
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        if self._echo_loop is not None and self._echo_loop.running:
            self._echo_loop.stop()
        pending, self._pending = self._pending, {}
        for req in pending.values():
            req.deferred.errback(SwitchDisconnected(f"{self._who()} disconnected during {req.what}"))
        self._bundles.clear()
        if not self.ready.called:
            self.ready.errback(SwitchDisconnected(f"{self._who()} disconnected during handshake"))
            self.ready.addErrback(lambda f: None)
        if self.up:
            self.up = False
            log.info("{who} disconnected", who=self._who())
            self.registry.switch_down(self)

    def close(self, why: str) -> None:
        """Drop this connection (and only it), saying why in the log."""
        if self._dead:
            return
        self._dead = True
        log.warn("{who}: closing connection: {why}", who=self._who(), why=why)
        if self.transport is not None:
            self.transport.abortConnection()

    def _who(self) -> str:
        return f"{dpid_str(self.dpid)} ({self.peer})" if self.dpid is not None else f"switch at {self.peer}"

    def __repr__(self) -> str:
        return f"<OpenFlowProtocol {self._who()}>"

    @property
    def host(self) -> Optional[str]:
        return self.registry.host_of(self.dpid) if self.dpid is not None else None

    # -- roles ---------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """Whether this connection may change the switch's flows now."""
        return not self.fenced or (self.role == ofp.OFPCR_ROLE_MASTER
                                   and self.role_wanted == ofp.OFPCR_ROLE_MASTER)

    def check_writable(self) -> None:
        if not self.writable:
            raise NotMaster(f"{self._who()}: not MASTER (role {ROLE_NAMES.get(self.role, self.role)}); "
                            f"another netmaster programs this switch")

    def request_role(self, role: int, generation: int) -> Deferred:
        """OFPT_ROLE_REQUEST; fires with ``(role, generation_id)`` of the reply.

        A request for anything but MASTER takes effect here at once (no write is
        sent after it, whatever the switch answers); MASTER counts only once the
        switch confirmed it, and only if it is still what we want by then."""
        self.role_wanted = role
        if role != ofp.OFPCR_ROLE_MASTER:
            self.role = role
        self._role_seq += 1
        seq = self._role_seq
        d = self.request(parser.OFPRoleRequest(self.datapath, role, generation & 0xFFFFFFFFFFFFFFFF),
                         "role request")

        def answered(reply: Tuple[int, int]) -> Tuple[int, int]:
            if seq == self._role_seq:  # a newer request decides
                self.role = reply[0]
            return reply

        return d.addCallback(answered)

    def _on_role_reply(self, xid: int, data: bytes) -> None:
        validate.check_fixed(data, ofp.OFP_ROLE_REQUEST_SIZE, "role reply")
        role, generation = _ROLE.unpack_from(data, HEADER_SIZE)
        self._reply(xid, (role, generation))

    # -- liveness ----------------------------------------------------------
    def _liveness(self) -> None:
        idle = self.clock.seconds() - self._last_rx
        # a switch answers our echo only after the messages queued before it: while a
        # bundle is in flight (maybe 100k+ messages) give it more time before calling it dead
        timeout = self.factory.echo_timeout * (BUNDLE_TIMEOUT_FACTOR if self._bundles else 1)
        if idle >= timeout:
            self.close(f"no message for {idle:.1f}s (echo timeout)")
        elif idle >= self.factory.echo_interval and self._state != "hello":
            self.send_msg(parser.OFPEchoRequest(self.datapath, data=b""), remember=False)

    # -- sending -----------------------------------------------------------
    def next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF or 1
        return self._xid

    def send(self, data: bytes) -> None:
        """Write already-encoded bytes (one or several messages)."""
        if self._dead or self.transport is None:
            raise SwitchDisconnected(f"{self._who()} is not connected")
        self.transport.write(data)

    def send_msg(self, msg: Any, xid: Optional[int] = None, remember: bool = True) -> int:
        """Encode an os-ken message with a fresh xid, remember it for error reports
        (not an echo every few seconds: nobody asks what it was), send it."""
        xid = self.next_xid() if xid is None else xid
        data = codec.serialize(msg, xid)
        if remember:
            self._remember(xid, data)
        self.send(data)
        return xid

    def _remember(self, xid: int, data: bytes) -> None:
        recent = self._recent
        recent[xid] = data
        if len(recent) > MAX_RECENT:
            del recent[next(iter(recent))]

    def request(self, msg: Any, what: str = "", mp_type: Optional[int] = None, raw: bool = False) -> Deferred:
        """Send a request and return a Deferred of its reply (all parts, for multipart;
        with ``raw``, each reply's checked body bytes instead of parsed parts)."""
        return self._request_encoded(partial(codec.serialize, msg), what or type(msg).__name__, mp_type, raw)

    def _request_encoded(self, encode: Callable[[int], bytes], what: str, mp_type: Optional[int] = None,
                         raw: bool = False) -> Deferred:
        """:meth:`request` of the message ``encode(xid)`` gives: an os-ken message's
        serialization, or one we pack ourselves (barriers and bundle controls, three per
        switch per change)."""
        if self._dead:
            return fail(SwitchDisconnected(f"{self._who()} is not connected"))
        xid = self.next_xid()
        data = encode(xid)
        req = _Request(what, mp_type, raw)
        self._pending[xid] = req  # (an error names it by ``what``: its bytes are not kept)
        try:
            self.send(data)
        except Exception:
            self._pending.pop(xid, None)
            raise
        return req.deferred

    def send_checked(self, msg: Any) -> Deferred:
        """Send a message that has no reply (flow/group/meter mod); fire once a barrier
        proves the switch accepted it, or fail with :class:`OpenFlowError` if it did not.

        ``msg`` is an os-ken message, or already-encoded bytes (their xid is used).
        """
        if self._dead:
            return fail(SwitchDisconnected(f"{self._who()} is not connected"))
        if not self.writable:
            return fail(NotMaster(f"{self._who()}: not MASTER; another netmaster programs this switch"))
        if isinstance(msg, (bytes, bytearray)):
            data = bytes(msg)
            xid = int.from_bytes(data[4:8], "big")
        else:
            xid = self.next_xid()
            data = codec.serialize(msg, xid)
        req = _Request(f"message type {data[1]}")
        self._pending[xid] = req
        self._remember(xid, data)
        self.send(data)

        def confirmed(_: Any) -> None:
            if self._pending.pop(xid, None) is req:
                req.deferred.callback(xid)

        self.barrier().addCallbacks(confirmed, lambda f: None)
        return req.deferred

    def barrier(self) -> Deferred:
        """Fires when the switch has processed everything sent before it."""
        return self._request_encoded(codec.encode_barrier, "barrier")

    def multipart(self, msg: Any) -> Deferred:
        """A multipart request; fires with the concatenated bodies of all replies."""
        return self.request(msg, type(msg).__name__, msg.cls_stats_type)

    def flow_stats(self, cookie: int = 0, cookie_mask: int = 0, table_id: int = ofp.OFPTT_ALL,
                   match: Any = None) -> Deferred:
        return self.multipart(parser.OFPFlowStatsRequest(
            self.datapath, 0, table_id, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, cookie_mask,
            match if match is not None else parser.OFPMatch()))

    def read_flows(self, cookie: int = 0, cookie_mask: int = 0) -> Deferred:
        """The switch's flows (those whose cookie matches under mask) as canonical :class:`Flow` s."""
        return self.read_flows_raw(cookie, cookie_mask).addCallback(lambda bodies: list(codec.flows_from_raw(bodies)))

    def read_flows_raw(self, cookie: int = 0, cookie_mask: int = 0) -> Deferred:
        """The flow-stats reply bodies as checked bytes, for :func:`codec.flows_from_raw`.

        A read-back of 30k flows parsed by os-ken costs ~1 s on the reactor (~56 us a
        flow); most entries are byte-equal across switches (a remote endpoint's flows)
        and across reads, so the caller decodes them through a cache, in slices."""
        msg = parser.OFPFlowStatsRequest(self.datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         cookie, cookie_mask, parser.OFPMatch())
        return self.request(msg, "OFPFlowStatsRequest", msg.cls_stats_type, raw=True)

    def flow_count(self, cookie: int = 0, cookie_mask: int = 0, table_id: int = ofp.OFPTT_ALL,
                   match: Optional[Dict[str, Any]] = None) -> Deferred:
        """How many flows match ``cookie`` under ``cookie_mask`` (OFPMP_AGGREGATE): the
        cheap audit's first question, a 24-byte answer instead of every flow.  ``match``
        (os-ken OXM names, e.g. ``{"in_port": 5}``) counts only the flows at least as
        specific as it (OpenFlow's non-strict match)."""
        req = parser.OFPAggregateStatsRequest(self.datapath, 0, table_id, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                              cookie, cookie_mask, parser.OFPMatch(**(match or {})))
        return self.multipart(req).addCallback(lambda parts: sum(p.flow_count for p in parts))

    def group_stats(self) -> Deferred:
        return self.multipart(parser.OFPGroupStatsRequest(self.datapath, 0, ofp.OFPG_ALL))

    def group_desc(self) -> Deferred:
        return self.multipart(parser.OFPGroupDescStatsRequest(self.datapath, 0))

    def meter_stats(self) -> Deferred:
        return self.multipart(parser.OFPMeterStatsRequest(self.datapath, 0, ofp.OFPM_ALL))

    def meter_config(self) -> Deferred:
        return self.multipart(parser.OFPMeterConfigStatsRequest(self.datapath, 0, ofp.OFPM_ALL))

    def port_desc(self) -> Deferred:
        return self.multipart(parser.OFPPortDescStatsRequest(self.datapath, 0))

    def bundle(self, flags: int = DEFAULT_BUNDLE_FLAGS) -> Bundle:
        """Open a bundle (the OPEN request is sent now; :meth:`Bundle.commit` waits for it)."""
        if self._dead:
            raise SwitchDisconnected(f"{self._who()} is not connected")
        self.check_writable()
        self._bundle_seq = (self._bundle_seq + 1) & 0xFFFFFFFF or 1
        b = Bundle(self, self._bundle_seq, flags)
        self._bundles[b.id] = b
        return b

    def _bundle_ctrl(self, bundle: Bundle, type_: int) -> Deferred:
        return self._request_encoded(partial(codec.encode_bundle_ctrl, bundle.id, type_, bundle.flags),
                                     f"bundle {bundle.id} control {type_}")

    # -- receiving ---------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._dead:
            return
        self._last_rx = self.clock.seconds()
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        try:
            while n - pos >= HEADER_SIZE and not self._dead:
                version, mtype, length, xid = _HEADER.unpack_from(buf, pos)
                if length < HEADER_SIZE:
                    raise ProtocolViolation(f"message length {length} < 8")
                if version != OFP_VERSION and not (self._state == "hello" and mtype == ofp.OFPT_HELLO):
                    raise ProtocolViolation(f"version {version} message (type {mtype}); "
                                            f"we speak OpenFlow 1.3 (4)")
                if n - pos < length:
                    break
                msg = bytes(buf[pos:pos + length])
                pos += length
                self.rx_messages += 1
                self._dispatch(version, mtype, xid, msg)
        except (ProtocolViolation, Malformed) as e:
            self.close(f"protocol violation: {e}")
            return
        except Exception as e:  # a parser choked on hostile bytes: this connection only
            log.debug("{who}: message handling failed:\n{tb}", who=self._who(), tb=traceback.format_exc())
            self.close(f"malformed message ({type(e).__name__}: {e})")
            return
        if pos:
            del buf[:pos]

    def _parse(self, version: int, mtype: int, xid: int, data: bytes) -> Any:
        msg = parser.msg_parser(self.datapath, version, mtype, len(data), xid, data)
        if msg is None:
            raise ProtocolViolation(f"unparseable message type {mtype}")
        return msg

    def _dispatch(self, version: int, mtype: int, xid: int, data: bytes) -> None:
        if self._state == "hello":
            if mtype != ofp.OFPT_HELLO:
                raise ProtocolViolation(f"message type {mtype} before HELLO")
            self._on_hello(version, data)
            return
        if mtype == ofp.OFPT_PACKET_IN:
            handler = self.factory.on_packet_in
            if handler is not None and self.up:
                validate.check_packet_in(data)
                msg = codec.parse_packet_in(data)
                try:
                    handler(self, msg)
                except Exception:
                    log.failure("{who}: packet-in handler failed", who=self._who())
            return
        if mtype == ofp.OFPT_ECHO_REQUEST:
            self.send(_HEADER.pack(OFP_VERSION, ofp.OFPT_ECHO_REPLY, len(data), xid) + data[8:])
            return
        if mtype == ofp.OFPT_ECHO_REPLY:
            return
        if mtype == ofp.OFPT_ERROR:
            self._on_error(parse_error(data), xid)
            return
        if mtype == ofp.OFPT_MULTIPART_REPLY:
            self._on_multipart(version, mtype, xid, data)
            return
        if mtype == ofp.OFPT_BARRIER_REPLY:
            # only a barrier's: completing another request (a PORT_DESC, a flow-mod's
            # confirmation) with it would hand that request's reader a None
            req = self._pending.get(xid)
            if req is not None and req.what != "barrier":
                raise ProtocolViolation(f"barrier reply to a {req.what}")
            self._reply(xid, None)
            return
        if mtype == ofp.OFPT_EXPERIMENTER:
            self._on_experimenter(xid, data)
            return
        if mtype == ofp.OFPT_FEATURES_REPLY:
            validate.check_fixed(data, ofp.OFP_SWITCH_FEATURES_SIZE, "features reply")
            self._on_features(self._parse(version, mtype, xid, data))
            return
        if mtype == ofp.OFPT_PORT_STATUS:
            validate.check_fixed(data, ofp.OFP_PORT_STATUS_SIZE, "port status")
            self._on_port_status(self._parse(version, mtype, xid, data))
            return
        if mtype == ofp.OFPT_ROLE_REPLY:
            self._on_role_reply(xid, data)
            return
        if mtype == ofp.OFPT_HELLO:
            raise ProtocolViolation("second HELLO")
        # FLOW_REMOVED, ... : nothing here asks for them
        log.debug("{who}: ignoring message type {t}", who=self._who(), t=mtype)

    def _reply(self, xid: int, body: Any) -> None:
        req = self._pending.pop(xid, None)
        if req is None:
            log.debug("{who}: reply for unknown xid {xid}", who=self._who(), xid=xid)
            return
        req.deferred.callback(body)

    # -- handshake ---------------------------------------------------------
    def _on_hello(self, version: int, data: bytes) -> None:
        bitmap_ok = None
        pos = HEADER_SIZE
        while pos + 4 <= len(data):
            etype, elen = struct.unpack_from("!HH", data, pos)
            if elen < 4 or pos + elen > len(data):
                raise ProtocolViolation("bad HELLO element")
            if etype == ofp.OFPHET_VERSIONBITMAP:
                words = data[pos + 4:pos + elen]
                bitmap_ok = len(words) >= 4 and bool(int.from_bytes(words[0:4], "big") & (1 << OFP_VERSION))
            pos += (elen + 7) // 8 * 8
        ok = bitmap_ok if bitmap_ok is not None else version >= OFP_VERSION
        if not ok:
            err = parser.OFPErrorMsg(self.datapath, ofp.OFPET_HELLO_FAILED, ofp.OFPHFC_INCOMPATIBLE,
                                     b"we speak OpenFlow 1.3 only")
            try:
                self.send_msg(err)
            finally:
                raise ProtocolViolation(f"no common OpenFlow version (peer {version})")
        self._state = "features"
        self.request(parser.OFPFeaturesRequest(self.datapath), "features").addErrback(self._handshake_failed)

    def _on_features(self, msg: Any) -> None:
        req = self._pending.get(msg.xid)
        if req is not None and req.what != "features":
            # another request's xid: taking it would drop that request unanswered
            raise ProtocolViolation(f"features reply to a {req.what}")
        if self._state != "features" or req is None:
            log.debug("{who}: unsolicited FEATURES_REPLY", who=self._who())
            return
        del self._pending[msg.xid]
        why = self._identity_refusal(msg.datapath_id)
        if why is not None:
            self._refuse_identity(why)
            return
        self.dpid = msg.datapath_id
        self.datapath.id = msg.datapath_id
        self.n_tables = msg.n_tables
        self._state = "ports"
        req.deferred.callback(msg)
        self.port_desc().addCallbacks(self._on_port_desc, self._handshake_failed)

    def _identity_refusal(self, dpid: int) -> Optional[str]:
        """Why this switch may not be datapath ``dpid``, or None.

        On a TLS listener (the wrapping factory sets ``refusals``) every certificate of
        the CA passed the handshake; without this any of them could claim any dpid and
        take over another host's flows.  A switch's certificate names its host (CN or
        a DNS name: the lab's ``switch-<host>``, netplugin's ``--host``), and a host's
        datapath id is :func:`host_dpid` of its name; a name that is the dpid itself
        (hex, as ``ovs-vsctl get bridge br-int datapath_id`` prints it) also counts."""
        if getattr(self.factory, "refusals", None) is None:
            return None  # plain TCP: nothing certified
        get = getattr(self.transport, "getPeerCertificate", None)
        cert = get() if get is not None else None
        if cert is None:
            return "presented no certificate"
        names = certificate_names(cert.to_cryptography())
        if any(name_is_dpid(n, dpid) for n in names):
            return None
        return (f"announces datapath {dpid_str(dpid)} but its certificate names "
                f"{', '.join(names[:4]) or 'nothing'}, not that datapath's host")

    def _refuse_identity(self, why: str) -> None:
        """Drop the switch; the refusal is said once per address (OVS retries)."""
        self._dead = True
        self.identity_refused = True
        peer = self.transport.getPeer() if self.transport is not None else None
        self.factory.refusals.refuse_identity(getattr(peer, "host", "?"),
                                              getattr(peer, "port", "?"), why)
        if self.transport is not None:
            self.transport.abortConnection()

    def _on_port_desc(self, ports: List[Any]) -> None:
        self.ports = {_port_name(p): p.port_no for p in ports}
        self.port_names = {no: name for name, no in self.ports.items()}
        self._state = "up"
        self.up = True
        log.info("{who} connected: {n} ports", who=self._who(), n=len(self.ports))
        self.registry.switch_up(self)
        if not self.ready.called:
            self.ready.callback(self)

    def _handshake_failed(self, f: Failure) -> None:
        if not f.check(SwitchDisconnected):
            self.close(f"handshake failed: {f.getErrorMessage()}")

    def _on_port_status(self, msg: Any) -> None:
        p = msg.desc
        name = _port_name(p)
        before = dict(self.ports)
        if msg.reason == ofp.OFPPR_DELETE:
            self.port_names.pop(p.port_no, None)
            if self.ports.get(name) == p.port_no:
                del self.ports[name]
        else:
            old = self.port_names.get(p.port_no)
            if old is not None and old != name:
                self.ports.pop(old, None)
            self.port_names[p.port_no] = name
            self.ports[name] = p.port_no
        if self.up and self.ports != before:
            # the difference, not the whole map (at 20k endpoints the map is long)
            gone = sorted(set(before) - set(self.ports))
            came = sorted(f"{n}={self.ports[n]}" for n in self.ports if before.get(n) != self.ports[n])
            log.info("{who}: ports changed: +[{came}] -[{gone}]", who=self._who(),
                     came=", ".join(came), gone=", ".join(gone))
            self.registry.ports_changed(self)

    # -- replies -----------------------------------------------------------
    def _on_experimenter(self, xid: int, data: bytes) -> None:
        # only bundle control replies are expected; parsed here, not by os-ken (whose
        # property walk loops forever on a zero-length property)
        if xid not in self._pending:
            log.debug("{who}: unsolicited experimenter message", who=self._who())
            return
        validate.check_fixed(data, 24, "bundle control reply")
        exp, exp_type, bundle_id, type_, flags = _BUNDLE_CTRL.unpack_from(data, HEADER_SIZE)
        if exp != ONF_EXPERIMENTER_ID or exp_type != ofp.ONF_ET_BUNDLE_CONTROL:
            raise ProtocolViolation(f"experimenter reply {exp:#x}/{exp_type} to a bundle request")
        self._reply(xid, (bundle_id, type_, flags))

    def _on_multipart(self, version: int, mtype: int, xid: int, data: bytes) -> None:
        req = self._pending.get(xid)
        if req is None:
            log.debug("{who}: multipart reply for unknown xid {xid}", who=self._who(), xid=xid)
            return
        if req.mp_type is None or validate.multipart_type(data) != req.mp_type:
            raise ProtocolViolation(f"multipart reply type {validate.multipart_type(data)} "
                                    f"to a {req.what}")
        validate.check_multipart_reply(data)
        if req.raw:
            req.parts.append(data)
            more = _MP_FLAGS.unpack_from(data, 10)[0] & ofp.OFPMPF_REPLY_MORE
        else:
            msg = self._parse(version, mtype, xid, data)
            body = msg.body
            if isinstance(body, list):
                req.parts.extend(body)
            else:
                req.parts.append(body)
            more = msg.flags & ofp.OFPMPF_REPLY_MORE
        if not more:
            del self._pending[xid]
            req.deferred.callback(req.parts)

    def _on_error(self, msg: ErrorBody, xid: int) -> None:
        code = msg.code
        failed = ""
        bundle = None
        for b in self._bundles.values():
            if b.owns(xid):
                bundle = b
                break
        if bundle is not None:
            item = bundle.item_for(xid)
            failed = (f"flow {item.to_ofctl()}" if isinstance(item, Flow)
                      else repr(item) if item is not None
                      else _summarize(msg.data)) + f" (in bundle {bundle.id})"
        elif xid in self._recent:
            failed = describe_message(self._recent[xid])
        elif xid in self._pending:
            failed = self._pending[xid].what
        elif msg.data:  # switch-provided bytes: summarize, never parse
            failed = _summarize(msg.data)
        err = OpenFlowError(msg.type, code, xid, failed, self.dpid)
        if msg.malformed:
            log.warn("{who}: malformed OFPT_ERROR ({why}), taken as an error for xid {xid}: {err}",
                     who=self._who(), why=msg.malformed, xid=xid, err=err)
        elif bundle is not None and bundle.errors:
            # one line per bundle: a refused bundle answers every message in it (at
            # 500 switches x 20k flows that was 400k error lines, a quarter of the CPU)
            log.debug("{who}: OFPT_ERROR {err}", who=self._who(), err=err)
        else:
            log.error("{who}: OFPT_ERROR {err}", who=self._who(), err=err)
        if bundle is not None:
            bundle.errors.append(err)
            return
        req = self._pending.pop(xid, None)
        if req is not None:
            req.deferred.errback(err)
        else:
            self.factory.errors_seen += 1


def _port_name(p: Any) -> str:
    name = p.name
    if isinstance(name, bytes):
        name = name.rstrip(b"\0").decode("utf-8", "replace")
    return name


class OpenFlowFactory(ServerFactory):
    """Listens for switches; every connection becomes an :class:`OpenFlowProtocol`.

    ``clock`` is injectable so tests drive the echo/liveness timers with
    :class:`twisted.internet.task.Clock`.  ``on_packet_in(switch, msg)`` is the
    application hook for packet-ins (``msg`` is a :class:`codec.PacketIn`: the
    attributes of os-ken's ``OFPPacketIn``, with ``match`` a dict).
    """

    protocol = OpenFlowProtocol

    def __init__(self, registry: Any, clock: Optional[IReactorTime] = None,
                 echo_interval: float = 5.0, echo_timeout: float = 15.0,
                 on_packet_in: Optional[Callable[[OpenFlowProtocol, Any], None]] = None):
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.registry = registry
        self.clock = clock
        self.echo_interval = echo_interval
        self.echo_timeout = echo_timeout
        self.on_packet_in = on_packet_in
        self.errors_seen = 0
        self.connections: List[OpenFlowProtocol] = []
        #: set on a TLS listener (:func:`server_endpoint`): switches' certificates are
        #: checked against the datapath they announce, refusals said once
        self.refusals: Optional[RefusalLog] = None

    def buildProtocol(self, addr: Any) -> OpenFlowProtocol:
        p = self.protocol(self)
        p.factory = self
        return p


# ---------------------------------------------------------------------------
# the listener: plain TCP, or TLS that requires a switch certificate
# ---------------------------------------------------------------------------

#: The field of an ``ssl:`` endpoint string that names the CA switches' certificates
#: must chain to (ours: Twisted's own ``ssl:`` server parser has no client verification).
CLIENT_CA_FIELD = "clientCA"


def escape_endpoint_value(value: str) -> str:
    """A value (a file path) for a Twisted endpoint string: ``:`` and ``=`` and ``\\`` escaped."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def tls_listen_description(plain: str, cert: str, key: str, ca: str) -> str:
    """``tcp:PORT[:interface=IP]`` (or ``tcp6:``) → the same listener as ``ssl:`` with the
    switch-certificate CA: the string :func:`server_endpoint` understands."""
    fields = endpoint_fields(plain)
    if fields[0] not in ("tcp", "tcp6"):
        raise ValueError(f"OpenFlow TLS needs a TCP listener, not {plain!r}")
    def field(f: str) -> str:
        name, eq, value = f.partition("=")
        return f"{name}={escape_endpoint_value(value)}" if eq else escape_endpoint_value(f)

    rest = ":".join(field(f) for f in fields[1:])
    return (f"ssl:{rest}:certKey={escape_endpoint_value(cert)}"
            f":privateKey={escape_endpoint_value(key)}"
            f":{CLIENT_CA_FIELD}={escape_endpoint_value(ca)}")


def _pem_blocks(data: bytes, kind: bytes) -> List[bytes]:
    begin, end = b"-----BEGIN " + kind + b"-----", b"-----END " + kind + b"-----"
    out, pos = [], 0
    while True:
        start = data.find(begin, pos)
        if start < 0:
            return out
        stop = data.find(end, start)
        if stop < 0:
            return out
        out.append(data[start:stop + len(end)] + b"\n")
        pos = stop + len(end)


def switch_tls_options(cert: str, key: str, ca: str) -> Any:
    """Server TLS settings for the OpenFlow listener: our certificate, and a client
    certificate required and verified against ``ca`` (TLS 1.2 at least).

    Raises ValueError naming the file that is unreadable or not what it should be, so
    netmaster refuses to start instead of listening with a half-made TLS.
    """
    from OpenSSL import crypto
    from twisted.internet import ssl

    def read(path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise ValueError(f"OpenFlow TLS {what} {path}: {e.strerror}") from None

    certs = _pem_blocks(read(cert, "certificate"), b"CERTIFICATE")
    cas = _pem_blocks(read(ca, "CA"), b"CERTIFICATE")
    if not certs:
        raise ValueError(f"OpenFlow TLS certificate {cert}: no PEM certificate in it")
    if not cas:
        raise ValueError(f"OpenFlow TLS CA {ca}: no PEM certificate in it")
    try:
        private = crypto.load_privatekey(crypto.FILETYPE_PEM, read(key, "key"))
    except crypto.Error:
        raise ValueError(f"OpenFlow TLS key {key}: not a PEM private key "
                         "(or it is encrypted: give an unencrypted one)") from None
    try:
        chain = [crypto.load_certificate(crypto.FILETYPE_PEM, c) for c in certs]
        trusted = [crypto.load_certificate(crypto.FILETYPE_PEM, c) for c in cas]
    except crypto.Error as e:
        raise ValueError(f"OpenFlow TLS: a certificate in {cert} or {ca} does not parse: "
                         f"{e}") from None
    try:
        options = ssl.CertificateOptions(
            privateKey=private, certificate=chain[0], extraCertChain=chain[1:],
            verify=True, caCerts=trusted, requireCertificate=True,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        options.getContext()  # checks now that the key is the certificate's
        return options
    except Exception as e:  # noqa: BLE001 - OpenSSL's reasons (key does not match, ...)
        raise ValueError(f"OpenFlow TLS: {cert} with {key}: {e}") from None


def _tls_reason(reason: Optional[Failure]) -> str:
    """The short reason a TLS handshake failed (OpenSSL's last reason string)."""
    if reason is None:
        return "connection closed"
    from OpenSSL import SSL
    err = reason.value
    if isinstance(err, SSL.Error) and err.args and isinstance(err.args[0], list) and err.args[0]:
        last = err.args[0][-1]
        if isinstance(last, tuple) and last:
            return str(last[-1]) or "TLS error"
    text = reason.getErrorMessage()
    return text.splitlines()[0][:200] if text else type(err).__name__


class RefusalLog:
    """Says each refused peer (address, reason) once while it lasts: OVS retries every
    few seconds, and a log line per attempt would bury everything else.  A handshake
    that succeeds from that address forgets it, so a later refusal is said again."""

    def __init__(self) -> None:
        self._said: Dict[str, str] = {}
        self.refused = 0

    def refuse(self, host: str, port: Any, why: str) -> None:
        self.refused += 1
        if self._said.get(host) == why:
            return
        self._said[host] = why
        log.warn("OpenFlow: refused switch at {host}:{port}: TLS handshake failed ({why}); "
                 "a switch needs a certificate signed by the --ofp-tls-ca CA "
                 "(netplugin --ofp-tls-cert/--ofp-tls-key)", host=host, port=port, why=why)

    def refuse_identity(self, host: str, port: Any, why: str) -> None:
        """A certified switch that claims a datapath its certificate does not name."""
        self.refused += 1
        if self._said.get(host) == why:
            return
        self._said[host] = why
        log.warn("OpenFlow: refused switch at {host}:{port}: it {why}; a switch's "
                 "certificate must name its host (CN or a DNS name), whose datapath id it "
                 "announces (netplugin --host)", host=host, port=port, why=why)

    def accepted(self, host: str) -> None:
        self._said.pop(host, None)


def certificate_names(cert: Any) -> List[str]:
    """The names a certificate (``cryptography`` x509) gives its holder: CN, DNS SANs."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names += [n for n in san.get_values_for_type(x509.DNSName) if n not in names]
    return names


def name_is_dpid(name: str, dpid: int) -> bool:
    """Whether a certificate's name stands for datapath ``dpid``: the host of that name has
    it (:func:`host_dpid`), or the name is the dpid in hex (``0x``, colons allowed)."""
    if name and host_dpid(name) == dpid:
        return True
    digits = name.lower().removeprefix("0x").replace(":", "")
    if 0 < len(digits) <= 16 and all(c in "0123456789abcdef" for c in digits):
        return int(digits, 16) == dpid
    return False


def _tls_wrapping_factory(contextFactory: Any, factory: "OpenFlowFactory",
                          refusals: RefusalLog) -> Any:
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    class SwitchTLS(TLSMemoryBIOProtocol):
        """TLS around one switch connection; a failed handshake is a refusal."""

        def connectionLost(self, reason: Failure = None) -> None:
            peer = self.transport.getPeer() if self.transport is not None else None
            host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
            if getattr(self.wrappedProtocol, "identity_refused", False):
                pass  # refused after the handshake: said already (RefusalLog.refuse_identity)
            elif self._handshakeDone:
                refusals.accepted(host)
            else:
                refusals.refuse(host, port, _tls_reason(reason))
            super().connectionLost(reason)

    class SwitchTLSFactory(TLSMemoryBIOFactory):
        protocol = SwitchTLS
        noisy = False

    # the switch protocol checks, at FEATURES, that the certificate names the datapath
    factory.refusals = refusals
    return SwitchTLSFactory(contextFactory, False, factory)


def server_endpoint(reactor: Any, description: str,
                    refusals: Optional[RefusalLog] = None) -> Tuple[Any, Callable[[Any], Any]]:
    """The OpenFlow listener for an endpoint string, and how to wrap the factory for it.

    Plain strings go to Twisted's ``serverFromString``.  ``ssl:PORT[:interface=IP]:
    certKey=F:privateKey=F:clientCA=F`` (see :func:`tls_listen_description`) is TLS
    that refuses, at the handshake, a switch without a certificate signed by
    ``clientCA``; each refusal is said once (:class:`RefusalLog`).
    """
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString

    fields = endpoint_fields(description)
    named = {}
    for f in fields[1:]:
        name, eq, value = f.partition("=")
        if eq:
            named[name] = value
    if fields[0] != "ssl" or CLIENT_CA_FIELD not in named:
        return serverFromString(reactor, description), lambda f: f
    positional = [f for f in fields[1:] if "=" not in f]
    port = int(positional[0] if positional else named.get("port", "6653"))
    iface = named.get("interface", "")
    options = switch_tls_options(named.get("certKey") or named.get("privateKey", ""),
                                 named.get("privateKey", ""), named[CLIENT_CA_FIELD])
    if ":" in iface:
        endpoint: Any = TCP6ServerEndpoint(reactor, port, interface=iface)
    else:
        endpoint = TCP4ServerEndpoint(reactor, port, interface=iface)
    refusals = refusals if refusals is not None else RefusalLog()
    return endpoint, lambda f: _tls_wrapping_factory(options, f, refusals)
