"""Which switches are connected, and which host each one belongs to.

The flow compiler thinks in hosts (``state:host`` records ``{name, vtepIP,
dpid}`` in Redis); OpenFlow thinks in datapath ids and connections.  The
registry is the one place that joins the two, so the integrator never has to
walk connections to find "the switch of host X".

A dpid that connects again while an old connection is still registered (the
old one has not timed out yet) replaces it: the old connection is closed, and
its late ``switch_down`` is ignored because it is no longer the registered one.
Callbacks may return a Deferred; their failures are logged, never raised into
the protocol (a buggy callback must not drop switches).

The registry also owns each connection's flow sync (``sync_factory(switch)``,
e.g. :class:`~contiv_sdn.openflow.sync.FlowSync`): it is made when the switch
comes up, before ``on_switch_up`` runs, and dropped with the connection, so a
sync can never outlive its connection or belong to a replaced one.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

Callback = Optional[Callable[[Any], Any]]


def parse_dpid(value: Union[int, str]) -> int:
    """A datapath id from an int, ``"0x1a"``, ``"000000000000001a"`` or ``"00:00:…:1a"``.

    Plain strings are read as hex (that is how OVS prints dpids).
    """
    if isinstance(value, int):
        dpid = value
    else:
        text = str(value).strip().lower()
        if text.startswith("0x"):
            text = text[2:]
        text = text.replace(":", "").replace("-", "")
        if not text:
            raise ValueError(f"empty dpid {value!r}")
        dpid = int(text, 16)
    if not 0 <= dpid < 1 << 64:
        raise ValueError(f"dpid out of range: {value!r}")
    return dpid


class SwitchRegistry:
    """dpid <-> connected switch, host name <-> dpid, and the up/down/ports callbacks."""

    def __init__(self, on_switch_up: Callback = None, on_switch_down: Callback = None,
                 on_ports_changed: Callback = None, sync_factory: Callback = None):
        self.on_switch_up = on_switch_up
        self.on_switch_down = on_switch_down
        self.on_ports_changed = on_ports_changed
        self.sync_factory = sync_factory
        self._switches: Dict[int, Any] = {}
        self._syncs: Dict[int, Any] = {}
        self._dpid_by_host: Dict[str, int] = {}
        self._host_by_dpid: Dict[int, str] = {}

    # -- switches (called by the protocol) ---------------------------------
    def switch_up(self, switch: Any) -> None:
        old = self._switches.get(switch.dpid)
        self._switches[switch.dpid] = switch
        if self.sync_factory is not None:
            self._syncs[switch.dpid] = self.sync_factory(switch)
        if old is not None and old is not switch:
            log.warn("dpid {dpid:016x} reconnected; closing its previous connection", dpid=switch.dpid)
            old.close("replaced by a new connection of the same dpid")
        self._call(self.on_switch_up, switch)

    def switch_down(self, switch: Any) -> None:
        if self._switches.get(switch.dpid) is not switch:
            return
        del self._switches[switch.dpid]
        self._syncs.pop(switch.dpid, None)
        self._call(self.on_switch_down, switch)

    def ports_changed(self, switch: Any) -> None:
        if self._switches.get(switch.dpid) is switch:
            self._call(self.on_ports_changed, switch)

    def _call(self, cb: Callback, switch: Any) -> None:
        if cb is None:
            return
        try:
            r = cb(switch)
        except Exception:
            log.failure("switch registry callback {cb} failed", cb=cb)
            return
        if isinstance(r, Deferred):
            r.addErrback(lambda f: log.failure("switch registry callback {cb} failed", f, cb=cb))

    # -- lookups -------------------------------------------------------------
    def get(self, dpid: int) -> Optional[Any]:
        return self._switches.get(dpid)

    def switches(self) -> List[Any]:
        return list(self._switches.values())

    def sync_of(self, dpid: int) -> Optional[Any]:
        """The flow sync of the connected switch ``dpid`` (None without one)."""
        return self._syncs.get(dpid)

    def syncs(self) -> Dict[int, Any]:
        """dpid -> flow sync of every connected switch that has one."""
        return dict(self._syncs)

    # -- hosts (set by the integrator from state:host records) --------------
    def set_host(self, name: str, dpid: Union[int, str]) -> None:
        d = parse_dpid(dpid)
        old = self._dpid_by_host.pop(name, None)
        if old is not None:
            self._host_by_dpid.pop(old, None)
        prev_host = self._host_by_dpid.get(d)
        if prev_host is not None and prev_host != name:
            self._dpid_by_host.pop(prev_host, None)
        self._dpid_by_host[name] = d
        self._host_by_dpid[d] = name

    def remove_host(self, name: str) -> None:
        d = self._dpid_by_host.pop(name, None)
        if d is not None:
            self._host_by_dpid.pop(d, None)

    def set_hosts(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the whole host map from ``state:host`` records (``name`` and ``dpid`` used)."""
        self._dpid_by_host.clear()
        self._host_by_dpid.clear()
        for r in records:
            if r.get("dpid") in (None, ""):
                continue
            self.set_host(r["name"], r["dpid"])

    def host_of(self, dpid: Optional[int]) -> Optional[str]:
        return self._host_by_dpid.get(dpid) if dpid is not None else None

    def dpid_of(self, host: str) -> Optional[int]:
        return self._dpid_by_host.get(host)

    def switch_for_host(self, host: str) -> Optional[Any]:
        d = self._dpid_by_host.get(host)
        return self._switches.get(d) if d is not None else None

    def hosts(self) -> Dict[str, int]:
        return dict(self._dpid_by_host)
