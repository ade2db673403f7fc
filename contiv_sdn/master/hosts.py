"""Host registration: the netmaster writes ``state:host[name]`` for the agents.

Hosts read Redis (the Docker driver's subscription) but write only through the
netmaster's API, so there is one writer to authenticate and one place where a
record is checked before the controller sees it.  Contiv's netplugin wrote its
node into etcd itself; ``POST /plugin/registerHost`` is our extension.

The record keeps the fields the agent wrote before (``name``, ``vtepIP``,
``dpid``, ``bridge``, ``tunnelPort``, ``uplinkPort``, ``mtu``, ``refresh``,
``updated``).  ``updated`` is now stamped here with Redis's clock (``TIME``), as
netmaster records are, so :func:`is_live` no
longer depends on the host's clock agreeing with Redis's.

A refresh (same record, later ``updated``) is one write, as before, so it costs
the controller exactly what the agent's own write cost: one change notification
for one host key.  A registration whose ``dpid`` or ``vtepIP`` is held by
another *live* host is refused: the controller maps a switch to the host whose
record carries its dpid and tunnels to the vtepIP, so two live claimants would
send one host's flows to the other.  A stale claimant does not block (its host
is gone; its record stays, see ``registration``'s docstring).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Dict, Optional

from twisted.logger import Logger

from contiv_sdn.master.errors import MasterError
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import loads
from contiv_sdn.store import Store, StoreError, StoreUnavailable
from contiv_sdn.store.keys import hash_of

log = Logger()

# Liveness of registrations (host records, and netmaster records written by
# ``contiv_sdn.master.service``) is one rule: each record carries when it was
# last written (``updated``, Redis's clock) and how often its writer refreshes
# it (``refresh``); it is stale once it missed STALE_AFTER refreshes.  Only
# ``/info`` and the dpid/vtep claim check care: a stale host record is never
# removed (its vtepIP and dpid keep the datapath to that host's endpoints
# working while its netplugin restarts).
HOST_KIND = "host"
#: A registration is stale after this many missed refreshes.
STALE_AFTER = 3
#: The refresh interval assumed for a record that does not say (older writers).
DEFAULT_REFRESH = 30.0


def is_live(record: Any, now: float) -> bool:
    """Whether a registration record was refreshed recently enough.

    ``now`` is Redis's ``TIME`` (the clock netmasters stamp their records
    with).  A record without a usable ``updated`` is stale.
    """
    if not isinstance(record, dict):
        return False
    updated = record.get("updated", record.get("started"))
    refresh = record.get("refresh", DEFAULT_REFRESH)
    if isinstance(updated, bool) or not isinstance(updated, (int, float)):
        return False
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not refresh > 0:
        refresh = DEFAULT_REFRESH
    return now - updated <= STALE_AFTER * refresh

#: A host name: what ``--host`` (default: the hostname) may be.  It is a Redis hash
#: field and appears in log lines and ``/info``: no spaces, quotes or control bytes.
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}")
#: A Linux interface name (IFNAMSIZ - 1 bytes, no '/', ':' or white space).
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,14}")
MIN_MTU, MAX_MTU = 576, 65535
#: Longest refresh interval accepted (a record stays live for 3 of them).
MAX_REFRESH = 86400.0
DEFAULT_TUNNEL_PORT = "vxlan0"


class NotThisHost(MasterError):
    """403: a ``node`` principal (a host agent, see :mod:`contiv_sdn.api.auth`) asked
    for something on another host: registering it, or one of its endpoints."""

    status = 403

    def __init__(self, node: str, what: str):
        super().__init__(f"403 Forbidden: node {node!r} may not {what}: a node may only "
                         f"register host {node} and create, update and delete endpoints "
                         f"on host {node}")


def _quote(text: str) -> str:
    """A client-supplied value for a refusal text: JSON-quoted, bounded."""
    return json.dumps(text[:64] + ("..." if len(text) > 64 else ""))


def _ifname(value: str, field: str, source: str) -> str:
    if not _IFNAME.fullmatch(value) or value in (".", ".."):
        raise MasterError(f"{field} {_quote(value)} is not an interface name (1-15 letters, "
                          f"digits, '.', '-', '_' or '@'; {source})")
    return value


def host_state(req: Dict[str, Any]) -> Dict[str, Any]:
    """The record to store for a decoded ``RegisterHostRequest`` (without ``updated``);
    raises :class:`MasterError` naming the first field that is wrong and the agent
    option it comes from."""
    name = req["name"]
    if not _HOST_NAME.fullmatch(name):
        raise MasterError(f"host name {_quote(name)} is invalid: use 1-253 letters, digits, "
                          "'.', '-' or '_' (the agent's --host)")
    try:
        vtep = ipaddress.IPv4Address(req["vtepIP"])
    except ValueError:
        raise MasterError(f"host {name}: vtepIP {_quote(req['vtepIP'])} is not an IPv4 address "
                          "(the agent's --vtep-ip)") from None
    if vtep.is_unspecified or vtep.is_multicast or vtep == ipaddress.IPv4Address("255.255.255.255"):
        raise MasterError(f"host {name}: vtepIP {vtep} is not a unicast address "
                          "(the agent's --vtep-ip)")
    dpid = req["dpid"]
    if dpid == 0:
        raise MasterError(f"host {name}: dpid 0 is not a datapath id (1 to 2^64-1)")
    mtu = req["mtu"]
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise MasterError(f"host {name}: mtu {mtu} is out of range ({MIN_MTU}-{MAX_MTU}, the "
                          "agent's --underlay-mtu)")
    refresh = req["refresh"]
    if not 0 < refresh <= MAX_REFRESH:
        raise MasterError(f"host {name}: refresh {refresh:g} is out of range (more than 0, at "
                          f"most {MAX_REFRESH:g} seconds; the agent's --refresh)")
    uplink: Optional[str] = req["uplinkPort"] or None
    return {
        "name": name,
        "vtepIP": str(vtep),
        "dpid": dpid,
        "bridge": _ifname(req["bridge"], f"host {name}: bridge", "the agent's --bridge"),
        "tunnelPort": _ifname(req["tunnelPort"] or DEFAULT_TUNNEL_PORT,
                              f"host {name}: tunnelPort", "empty means vxlan0"),
        "uplinkPort": None if uplink is None else _ifname(uplink, f"host {name}: uplinkPort",
                                                          "the agent's --uplink"),
        "mtu": mtu,
        "refresh": refresh,
    }


def _parse(raw: Optional[str]) -> Optional[Dict[str, Any]]:
    """A stored host record, or ``None`` if absent or not a JSON object (a planted
    record is no claim and no previous registration; the controller refuses it)."""
    if raw is None:
        return None
    try:
        record = loads(raw)
    except DecodeError:
        return None
    return record if isinstance(record, dict) else None


def _same(a: Optional[Dict[str, Any]], b: Dict[str, Any]) -> bool:
    """Whether two records differ only in their stamp."""
    if a is None:
        return False
    return {k: v for k, v in a.items() if k != "updated"} == \
        {k: v for k, v in b.items() if k != "updated"}


class Hosts:
    """``registerHost``: check, stamp and store one host's record (one transaction)."""

    def __init__(self, store: Store):
        self.store = store

    async def _check_claims(self, wanted: Dict[str, Any], now: float) -> None:
        """Refuse a dpid or vtepIP that another live host's record carries."""
        name = wanted["name"]
        raw = await self.store.hgetall_raw(hash_of(HOST_KIND))
        for other, text in sorted(raw.items()):
            rec = _parse(text)
            if other == name or rec is None or not is_live(rec, now):
                continue
            if rec.get("dpid") == wanted["dpid"]:
                raise MasterError(f"host {name}: dpid {wanted['dpid']:#x} is registered by "
                                  f"live host {other}; give each host its own --host name")
            if rec.get("vtepIP") == wanted["vtepIP"]:
                raise MasterError(f"host {name}: vtepIP {wanted['vtepIP']} is registered by "
                                  f"live host {other}; give each host its own --vtep-ip")

    async def register(self, req: Dict[str, Any], node: Optional[str] = None) -> Dict[str, Any]:
        """Store (or refresh) the host's record; answers the stored record.

        ``node``: the caller is that host's agent (a ``node`` user), which may
        register only the host of its own name (:class:`NotThisHost` otherwise).

        The claims of other hosts are read (O(hosts)) only when this host's dpid or
        vtepIP is new to its record: a plain refresh reads one record and writes
        one.  The check is a read before the write, not a guard: two hosts that
        first claim the same dpid or vtepIP within one round trip both pass (a
        misconfiguration caught in all but that instant, at no cost to refreshes).
        """
        if node is not None and req["name"] != node:
            raise NotThisHost(node, f"register host {_quote(req['name'])}")
        wanted = host_state(req)
        name = wanted["name"]
        try:
            old = _parse(await self.store.get_raw(HOST_KIND, name))
            now = await self.store.server_time()
            if old is None or (old.get("dpid"), old.get("vtepIP")) != \
                    (wanted["dpid"], wanted["vtepIP"]):
                await self._check_claims(wanted, now)
            record = dict(wanted, updated=round(now, 3))
            await self.store.put_state(HOST_KIND, name, record)
        except StoreUnavailable:
            raise  # not a refusal: the REST layer answers it as "try again" (503)
        except StoreError as e:
            raise MasterError(str(e))
        if old is None:
            log.info("host {name} registered: vtep {vtep}, dpid {dpid:#x}", name=name,
                     vtep=record["vtepIP"], dpid=record["dpid"])
        elif not _same(old, record):
            changed = sorted(k for k in record if k != "updated" and old.get(k) != record[k])
            log.info("host {name} re-registered with a new {what}", name=name,
                     what=", ".join(changed))
        return record
