"""The netmaster's read-only web view of the fabric: static files and a live feed.

What it shows: tenants → networks → groups → endpoints (host, address,
container), each tenant's policies and their rules, and the hosts with their
switch's connection to this netmaster's controller and its flow count.

Why it is built this way:

* The page is three static files (:data:`WEB_DIR`: HTML, CSS, JS, no build
  step) served by the netmaster's own router, so it is behind the same
  authentication as the API: the data routes (:data:`STATE_PATH`,
  :data:`EVENTS_PATH`) go through the router's checks like any other route.
  The page sends the ``X-Auth-Token`` header itself (it asks for a login when
  the feed answers 401), which is why the live feed is read with ``fetch``
  rather than ``EventSource`` (which cannot send headers).
* One state document (:meth:`WebView.state`) is what both the JSON route and
  the event stream send: the page has a single rendering path.
* Live updates are server-sent events.  Intent and endpoints change through
  Redis, so the feed follows the store's change channel (one subscription per
  netmaster, made when the first page connects); the controller's switch
  connections and flow counts are not in Redis, so they are sampled every
  :data:`TICK` seconds while a page is connected.  Either way a new document
  is sent only when it differs from the last one sent (a host's periodic
  refresh changes nothing shown, so it sends nothing).
* The controller is read, never driven: its switch registry and flow syncs are
  sampled on the reactor, like the metrics do.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Set

from twisted.internet import defer, task
from twisted.logger import Logger

from contiv_sdn.master.hosts import is_live

log = Logger()

#: The static files of the page (index.html, app.js, style.css).
WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
#: Where the page is served; its files are relative to it.
WEB_PATH = "/web/"
#: The state document as JSON (one read).
STATE_PATH = "/web/state"
#: The state document as server-sent events (``event: state``), one per change.
EVENTS_PATH = "/web/events"

#: name under WEB_PATH → (file in WEB_DIR, Content-Type)
FILES: Dict[str, tuple] = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}

#: Seconds between samples of the controller's state while a page is connected.
TICK = 2.0
#: Seconds between keep-alive comments on an idle stream (proxies drop silent ones).
HEARTBEAT = 15.0
#: Seconds a burst of store changes is gathered into one new document.
COALESCE = 0.1


class Reply:
    """A non-JSON answer of a route: bytes and their Content-Type."""

    def __init__(self, body: bytes, content_type: str):
        self.body = body
        self.content_type = content_type

    def send(self, request: Any) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", self.content_type.encode())
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.body


#: Returned by a route that keeps its request open (the event stream): the router
#: must neither write nor finish it.
STREAMING = object()


def _rule(r: dict) -> dict:
    keep = ("ruleId", "priority", "direction", "action", "protocol", "port",
            "fromEndpointGroup", "toEndpointGroup", "fromNetwork", "toNetwork",
            "fromIpAddress", "toIpAddress")
    return {k: r.get(k) for k in keep if r.get(k) not in (None, "", 0) or k == "port"}


def _endpoint(e: dict) -> dict:
    return {"id": e.get("id", ""), "container": e.get("containerName") or "",
            "containerID": (e.get("containerID") or "")[:12], "host": e.get("homingHost") or "",
            "ip": e.get("ipAddress") or "", "ipv6": e.get("ipv6Address") or "",
            "mac": e.get("macAddress") or ""}


def _sort_eps(eps: List[dict]) -> List[dict]:
    return sorted(eps, key=lambda e: (e["host"], e["container"], e["ip"], e["id"]))


def _dpid(value: Any) -> Optional[int]:
    if isinstance(value, bool) or value in (None, ""):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).replace(":", ""), 16)
    except ValueError:
        return None


class WebView:
    """The page's routes for one netmaster.

    ``store_of()`` gives the store (``master.store``); ``controller_of()`` the
    OpenFlow controller, or ``None`` when this netmaster runs none (the hosts
    are then shown without switch state)."""

    def __init__(self, store_of: Callable[[], Any], controller_of: Callable[[], Any],
                 reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.reactor = reactor
        self.store_of = store_of
        self.controller_of = controller_of
        self._files: Dict[str, Reply] = {}
        self._clients: Set[Any] = set()
        self._subscription: Any = None
        self._tick: Optional[task.LoopingCall] = None
        self._beat: Optional[task.LoopingCall] = None
        self._pending: Any = None
        self._refreshing = False
        self._again = False
        self._last: Optional[bytes] = None

    # -- static files -----------------------------------------------------------
    def file(self, name: str) -> Reply:
        """The page's file ``name`` (``""`` is the page); read once."""
        if name not in self._files:
            fname, ctype = FILES[name]
            with open(os.path.join(WEB_DIR, fname), "rb") as f:
                self._files[name] = Reply(f.read(), ctype)
        return self._files[name]

    # -- the state document ----------------------------------------------------------
    async def state(self) -> Dict[str, Any]:
        """Everything the page shows, as plain JSON (see the module docstring)."""
        store = self.store_of()
        tenants = await store.list("obj:tenant")
        networks = await store.list("obj:network")
        groups = await store.list("obj:endpointGroup")
        policies = await store.list("obj:policy")
        rules = await store.list("obj:rule")
        endpoints = await store.list("endpoint")
        hosts = await store.list("host")
        now = await store.server_time()

        out: Dict[str, Dict[str, Any]] = {}

        def tenant(name: str) -> Dict[str, Any]:
            if name not in out:
                out[name] = {"name": name, "networks": {}, "policies": {}}
            return out[name]

        for rec in tenants.values():
            tenant(str(rec.get("tenantName") or ""))
        for rec in networks.values():
            t = tenant(str(rec.get("tenantName") or "default"))
            t["networks"][rec.get("networkName", "")] = {
                "name": rec.get("networkName", ""), "encap": rec.get("encap", ""),
                "subnet": rec.get("subnet", ""), "gateway": rec.get("gateway", ""),
                "pktTag": rec.get("pktTag") or 0, "groups": {}, "endpoints": []}
        for rec in groups.values():
            t = tenant(str(rec.get("tenantName") or "default"))
            net = t["networks"].get(rec.get("networkName", ""))
            if net is None:
                continue
            net["groups"][rec.get("groupName", "")] = {
                "name": rec.get("groupName", ""), "policies": sorted(rec.get("policies") or []),
                "endpoints": []}
        for rec in policies.values():
            t = tenant(str(rec.get("tenantName") or "default"))
            t["policies"][rec.get("policyName", "")] = {
                "name": rec.get("policyName", ""), "rules": [], "groups": []}
        for rec in rules.values():
            t = tenant(str(rec.get("tenantName") or "default"))
            pol = t["policies"].get(rec.get("policyName", ""))
            if pol is not None:
                pol["rules"].append(_rule(rec))
        eps_per_host: Dict[str, int] = {}
        for rec in endpoints.values():
            t = out.get(str(rec.get("tenant") or "default"))
            net = t["networks"].get(rec.get("networkName", "")) if t else None
            if net is None:
                continue
            ep = _endpoint(rec)
            eps_per_host[ep["host"]] = eps_per_host.get(ep["host"], 0) + 1
            grp = net["groups"].get(rec.get("groupName") or "")
            (grp["endpoints"] if grp is not None else net["endpoints"]).append(ep)

        doc_tenants = []
        for tname in sorted(out):
            t = out[tname]
            nets = []
            for nname in sorted(t["networks"]):
                net = t["networks"][nname]
                grps = []
                for gname in sorted(net["groups"]):
                    g = net["groups"][gname]
                    g["endpoints"] = _sort_eps(g["endpoints"])
                    for p in g["policies"]:
                        if p in t["policies"]:
                            t["policies"][p]["groups"].append(gname)
                    grps.append(g)
                net["groups"] = grps
                net["endpoints"] = _sort_eps(net["endpoints"])
                nets.append(net)
            pols = []
            for pname in sorted(t["policies"]):
                p = t["policies"][pname]
                p["rules"].sort(key=lambda r: (-(r.get("priority") or 1), str(r.get("ruleId"))))
                p["groups"].sort()
                pols.append(p)
            doc_tenants.append({"name": tname, "networks": nets, "policies": pols})

        return {"tenants": doc_tenants,
                "hosts": self._hosts(hosts, now, eps_per_host),
                "controller": self.controller_of() is not None}

    def _hosts(self, records: Dict[str, dict], now: float,
               eps: Dict[str, int]) -> List[Dict[str, Any]]:
        ctl = self.controller_of()
        reg = getattr(ctl, "registry", None)
        out = []
        seen: Set[int] = set()
        for name in sorted(records):
            rec = records[name]
            dpid = _dpid(rec.get("dpid"))
            h: Dict[str, Any] = {"name": rec.get("name") or name, "vtepIP": rec.get("vtepIP", ""),
                                 "dpid": f"{dpid:016x}" if dpid is not None else "",
                                 "live": is_live(rec, now), "endpoints": eps.get(name, 0),
                                 "switch": "unknown", "flows": None}
            if reg is not None and dpid is not None:
                seen.add(dpid)
                h.update(self._switch(reg, dpid))
            out.append(h)
        if reg is not None:  # connected switches no host has registered (yet)
            for sw in reg.switches():
                dpid = getattr(sw, "dpid", None)
                if dpid is None or dpid in seen:
                    continue
                h = {"name": "", "vtepIP": "", "dpid": f"{dpid:016x}", "live": False,
                     "endpoints": 0}
                h.update(self._switch(reg, dpid))
                out.append(h)
        return out

    @staticmethod
    def _switch(reg: Any, dpid: int) -> Dict[str, Any]:
        if reg.get(dpid) is None:
            return {"switch": "disconnected", "flows": None}
        sync = reg.sync_of(dpid)
        installed = getattr(sync, "installed", None) if sync is not None else None
        return {"switch": "connected", "flows": len(installed) if installed is not None else None}

    # -- the event stream -----------------------------------------------------------
    async def events(self, request: Any) -> Any:
        """Start a stream: the current document at once, then one per change.

        The connection stays open as long as the client does (the API's idle
        timeout is lifted for it); the router gets :data:`STREAMING`.  A client
        that does not accept ``text/event-stream`` gets one event and the end."""
        body = json.dumps(await self.state(), separators=(",", ":")).encode()
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        if b"text/event-stream" not in (request.getHeader(b"accept") or b""):
            # not an event-stream client (curl, a probe): one event and the end, rather
            # than a connection that never finishes
            return Reply(self._event(body), "text/event-stream; charset=utf-8")
        channel = getattr(request, "channel", None)
        if channel is not None and hasattr(channel, "setTimeout"):
            channel.setTimeout(None)
        request.write(b"retry: 2000\n" + self._event(body))
        self._clients.add(request)
        request.notifyFinish().addBoth(lambda _: self._gone(request))
        self._follow()
        if self._last is None:
            self._last = body
        return STREAMING

    @staticmethod
    def _event(body: bytes) -> bytes:
        return b"event: state\ndata: " + body + b"\n\n"

    def _gone(self, request: Any) -> None:
        self._clients.discard(request)
        if not self._clients:
            for loop in (self._tick, self._beat):
                if loop is not None and loop.running:
                    loop.stop()
            self._tick = self._beat = None
            self._last = None

    def _follow(self) -> None:
        """Follow the store's changes (once) and sample the controller (while watched)."""
        store = self.store_of()
        if self._subscription is None and hasattr(store, "subscribe"):
            self._subscription = store.subscribe(lambda *change: self.changed(),
                                                 self.changed)
        if self._tick is None:
            self._tick = task.LoopingCall(self.changed)
            self._tick.clock = self.reactor
            self._tick.start(TICK, now=False)
            self._beat = task.LoopingCall(self._heartbeat)
            self._beat.clock = self.reactor
            self._beat.start(HEARTBEAT, now=False)

    def _heartbeat(self) -> None:
        for request in list(self._clients):
            request.write(b": keep-alive\n\n")

    def changed(self) -> None:
        """Something may have changed: send a new document soon, if it differs."""
        if not self._clients or self._pending is not None:
            return
        self._pending = self.reactor.callLater(COALESCE, self._refresh)

    def _refresh(self) -> None:
        self._pending = None
        if self._refreshing:  # one refresh at a time; a change during it means one more
            self._again = True
            return
        self._refreshing = True
        d = defer.ensureDeferred(self._push())

        def done(_: Any) -> None:
            self._refreshing = False
            if self._again:
                self._again = False
                self.changed()

        d.addErrback(self._refresh_failed)
        d.addBoth(done)

    def _refresh_failed(self, f: Any) -> None:
        from contiv_sdn.store import StoreUnavailable
        if f.check(StoreUnavailable):  # Redis away: the next change or tick tries again
            log.info("web view: no update ({err})", err=f.getErrorMessage())
        else:
            log.failure("web view: building the state document failed", f)

    async def _push(self) -> None:
        if not self._clients:
            return
        body = json.dumps(await self.state(), separators=(",", ":")).encode()
        if body == self._last:
            return
        self._last = body
        event = self._event(body)
        for request in list(self._clients):
            request.write(event)


__all__ = ["WebView", "Reply", "STREAMING", "WEB_PATH", "STATE_PATH", "EVENTS_PATH", "FILES",
           "WEB_DIR"]
