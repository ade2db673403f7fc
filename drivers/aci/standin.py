"""A stand-in APIC: the subset of the APIC REST API that contiv-sdn uses, for the lab and tests.

**This is not an APIC.**  No APIC can run here, so the lab and the tests talk to
this Twisted HTTP server instead.  It holds a management information tree
(MIT) of the classes in :data:`drivers.aci.mo.CLASSES` and answers the calls
the reconciler makes the way an APIC documents them, so the client and the
reconciler are exercised against the same wire format and the same refusals:

* ``POST /api/aaaLogin.json`` with ``{"aaaUser":{"attributes":{"name","pwd"}}}``
  answers ``{"totalCount":"1","imdata":[{"aaaLogin":{"attributes":{"token",
  "refreshTimeoutSeconds","maximumLifetimeSeconds","userName",...}}}]}`` and sets
  the ``APIC-cookie`` cookie; ``?gui-token-request=yes`` also returns
  ``urlToken``, which must then come back in the ``APIC-challenge`` header.
  ``GET|POST /api/aaaRefresh.json`` returns a fresh token (the old one stops
  working), ``POST /api/aaaLogout.json`` ends the session.  A token not refreshed
  within ``refreshTimeoutSeconds`` is refused with ``403`` ``Token was invalid
  (Error: Token timeout)``; a request with no token with ``403`` ``Need a valid
  webtoken cookie (named APIC-cookie) or a signed request with signature in the
  cookie.``  Certificate-signed requests (cookies ``APIC-Certificate-DN``,
  ``APIC-Certificate-Algorithm=v1.0``, ``APIC-Certificate-Fingerprint=fingerprint``,
  ``APIC-Request-Signature`` = base64 RSA-SHA256 over method + path with query +
  body) are checked against public keys given to :meth:`StandinApic.add_cert`.
* ``POST /api/mo/<dn>.json`` (or ``/api/node/mo/...``) with one MO and nested
  ``children``; the URL names the MO or its parent; a child names itself by
  ``dn``, ``rn`` or its naming properties; ``status`` ``created``, ``modified``
  or ``deleted`` (the subtree goes).  A request is checked whole before
  anything is applied, as the APIC applies a request in one transaction.
* ``GET /api/mo/<dn>.json`` and ``GET /api/class/<class>.json`` with
  ``query-target=self|children|subtree``, ``target-subtree-class=a,b``,
  ``query-target-filter`` (``eq``, ``ne``, ``wcard``, ``and``, ``or``, ``not``),
  ``rsp-subtree=no|children|full`` and ``rsp-subtree-class``; an unknown DN is
  ``{"totalCount":"0","imdata":[]}``.  ``DELETE /api/mo/<dn>.json`` too.
* Errors are ``{"totalCount":"1","imdata":[{"error":{"attributes":{"code",
  "text"}}}]}`` with HTTP 400 (403 for authentication).

What was followed (APIC documentation and recorded APIC replies):

* Cisco APIC REST API Configuration Guide, Release 4.2(x) and later, "Using
  the REST API" (aaaLogin/aaaRefresh/aaaLogout, the APIC-cookie, ``status``,
  query parameters, the JSON MO encoding with ``attributes`` before
  ``children``; https://www.cisco.com/c/en/us/td/docs/dcn/aci/apic/all/apic-rest-api-configuration-guide/cisco-apic-rest-api-configuration-guide-42x-and-later/m_using_the_rest_api.html);
  the signature-based authentication chapter of the same guide for the
  certificate cookies;
* the query options as the pyATS REST connector documents them for APIC
  (``query_target``, ``rsp_subtree``, ``target_subtree_class``,
  ``query_target_filter``; pubhub.devnetcloud.com rest-connector user guide);
* error replies recorded from APICs: code ``822`` ``naming property
  ('fvAp.name') is not set.`` (datacenter/acitoolkit#76), code ``121`` ``Prop
  'X' not found in class 'Y' property table``
  (datacenter/ACI-Pre-Upgrade-Validation-Script#108), code ``103`` for creating
  an object that exists with ``status: created`` (datacenter/aci-ansible#179).
  The codes for an unknown class (``122``), a bad property value (``107``, text
  in the APIC's ``unknown property value V, name P, class C [(Dn0)] Dn0=DN``
  form) and a missing parent (``102``) are this stand-in's choices: no recorded
  example was found.

Not modelled: the event websocket (the reconciler repairs drift by periodic
reads), implicit children an APIC creates, faults, HTTPS (the lab uses plain
HTTP on loopback), rate limits.

Run it alone: ``python -m drivers.aci.standin --listen tcp:8080:interface=127.0.0.1
--user admin --password-file FILE [--state FILE]``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sys
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet import defer, reactor as default_reactor, threads
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web import resource, server

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import loads
from drivers.aci.mo import CLASSES, COMMON_PROPS, naming_from_rn, parent_dn, rn_of, split_dn

log = Logger()

NO_TOKEN = ("Need a valid webtoken cookie (named APIC-cookie) or a signed request with "
            "signature in the cookie.")


class ApicError(Exception):
    def __init__(self, code: str, text: str, http: int = 400):
        super().__init__(text)
        self.code, self.text, self.http = code, text, http


class _Session:
    __slots__ = ("user", "token", "expires", "challenge", "created")

    def __init__(self, user: str, token: str, expires: float, challenge: str, created: float):
        self.user, self.token, self.expires = user, token, expires
        self.challenge, self.created = challenge, created


class Mit:
    """The tree: DN -> (class, attributes).  Shared across stand-in restarts when a
    test wants the APIC's configuration to survive one (as a real APIC's does)."""

    def __init__(self) -> None:
        self.mos: Dict[str, Tuple[str, Dict[str, str]]] = {"uni": ("polUni", {})}
        self.children: Dict[str, set] = {"uni": set()}
        self.modts = 0

    def add(self, dn: str, cls: str, attrs: Dict[str, str]) -> None:
        if dn not in self.mos:
            self.children.setdefault(parent_dn(dn), set()).add(dn)
            self.children.setdefault(dn, set())
        self.mos[dn] = (cls, attrs)

    def remove(self, dn: str) -> None:
        if dn not in self.mos or dn == "uni":
            return
        stack = [dn]
        while stack:
            d = stack.pop()
            stack.extend(self.children.pop(d, ()))
            self.mos.pop(d, None)
        self.children.get(parent_dn(dn), set()).discard(dn)

    def subtree(self, dn: str) -> List[str]:
        out, stack = [], [dn]
        while stack:
            d = stack.pop()
            out.append(d)
            stack.extend(sorted(self.children.get(d, ()), reverse=True))
        return out

    def to_json(self) -> str:
        return json.dumps({dn: [c, a] for dn, (c, a) in self.mos.items()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Mit":
        mit = cls()
        for dn, (c, a) in sorted(json.loads(text).items(), key=lambda kv: len(split_dn(kv[0]))):
            if dn != "uni":
                mit.add(dn, c, a)
        return mit


# -- query-target-filter --------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(?P<name>[a-z]+)\(|(?P<close>\))|(?P<comma>,)|"(?P<str>[^"]*)"|'
                    r"(?P<ref>[A-Za-z0-9]+\.[A-Za-z0-9]+))")


def parse_filter(text: str) -> Callable[[str, Dict[str, str]], bool]:
    """A ``query-target-filter`` expression as a predicate on (class, attributes)."""
    pos = 0
    tokens: List[Tuple[str, str]] = []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ApicError("107", f"invalid filter expression at {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        tokens.append((kind, m.group(kind) or ""))
    i = 0

    def expr() -> Callable[[str, Dict[str, str]], bool]:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != "name":
            raise ApicError("107", f"invalid filter expression {text!r}")
        op = tokens[i][1]
        i += 1
        args: List[Any] = []
        while i < len(tokens) and tokens[i][0] != "close":
            kind, val = tokens[i]
            if kind == "comma":
                i += 1
            elif kind == "name":
                args.append(expr())
            else:
                args.append((kind, val))
                i += 1
        i += 1  # ")"
        if op in ("and", "or"):
            if op == "and":
                return lambda c, a: all(f(c, a) for f in args)
            return lambda c, a: any(f(c, a) for f in args)
        if op == "not" and len(args) == 1:
            return lambda c, a: not args[0](c, a)
        if op in ("eq", "ne", "wcard") and len(args) == 2 and args[0][0] == "ref":
            kls, _, prop = args[0][1].partition(".")
            value = args[1][1]
            if op == "eq":
                return lambda c, a: c == kls and a.get(prop) == value
            if op == "ne":
                return lambda c, a: c == kls and a.get(prop) != value
            rx = re.compile(value)
            return lambda c, a: c == kls and rx.search(a.get(prop, "")) is not None
        raise ApicError("107", f"unsupported filter {op}() in {text!r}")

    f = expr()
    return f


class StandinApic:
    """The stand-in's state and request handling (see the module docstring)."""

    def __init__(self, user: str = "admin", password: str = "password",
                 token_timeout: int = 600, mit: Optional[Mit] = None, clock: Any = None,
                 state_file: Optional[str] = None):
        self.users = {user: password}
        self.token_timeout = token_timeout
        self.mit = mit if mit is not None else Mit()
        self.clock = clock or default_reactor
        self.sessions: Dict[str, _Session] = {}
        #: (cert DN) -> RSA public key (``cryptography`` object)
        self.certs: Dict[str, Any] = {}
        #: requests answered, by kind ("login", "refresh", "POST mo", "GET mo", ...)
        self.requests: Counter = Counter()
        self.state_file = state_file
        self._port = None
        self._site: Optional["_Site"] = None
        self._saving = False

    # -- set-up --------------------------------------------------------------
    def add_cert(self, user: str, cert_name: str, public_key: Any) -> str:
        """Register a user certificate; returns its DN (``APIC-Certificate-DN``)."""
        dn = f"uni/userext/user-{user}/usercert-{cert_name}"
        self.certs[dn] = public_key
        return dn

    def expire_tokens(self) -> None:
        """Make every session's token time out now (what an idle client meets)."""
        for s in self.sessions.values():
            s.expires = 0.0

    def resource(self) -> resource.Resource:
        return _Resource(self)

    async def listen(self, endpoint: str = "tcp:0:interface=127.0.0.1") -> int:
        site = _Site(self.resource())
        site.noisy = False
        self._site = site
        self._port = await serverFromString(default_reactor, endpoint).listen(site)
        return self._port.getHost().port

    async def stop(self) -> None:
        """Stop listening and drop every connection (what a restarting APIC does)."""
        if self._port is not None:
            port, self._port = self._port, None
            await port.stopListening()
            for proto in list(self._site.open):
                transport = getattr(proto, "transport", None) or \
                    getattr(getattr(proto, "_channel", None), "transport", None)
                if transport is not None:
                    transport.abortConnection()

    # -- sessions -------------------------------------------------------------
    def _new_session(self, user: str, challenge: bool) -> _Session:
        now = self.clock.seconds()
        s = _Session(user, secrets.token_urlsafe(48), now + self.token_timeout,
                     secrets.token_hex(16) if challenge else "", now)
        self.sessions[s.token] = s
        return s

    def _login_reply(self, s: _Session) -> dict:
        attrs = {"token": s.token, "refreshTimeoutSeconds": str(self.token_timeout),
                 "maximumLifetimeSeconds": "86400", "userName": s.user,
                 "firstLoginTime": str(int(s.created)), "version": "5.2(7f)-standin",
                 "buildTime": "", "node": "topology/pod-1/node-1", "remoteUser": "false",
                 "unixUserId": "15374", "sessionId": s.token[:24], "lastName": "",
                 "firstName": ""}
        if s.challenge:
            attrs["urlToken"] = s.challenge
        return {"totalCount": "1", "imdata": [{"aaaLogin": {"attributes": attrs,
                                                            "children": []}}]}

    def _session_of(self, req: "_Request") -> Optional[_Session]:
        token = req.cookies.get("APIC-cookie")
        if token is None:
            return None
        s = self.sessions.get(token)
        if s is None or s.expires <= self.clock.seconds():
            self.sessions.pop(token, None)
            raise ApicError("403", "Token was invalid (Error: Token timeout)", 403)
        if s.challenge and req.headers.get("apic-challenge") != s.challenge:
            raise ApicError("403", "Token was invalid (Error: Challenge mismatch)", 403)
        return s

    def _authenticate(self, req: "_Request") -> None:
        if self._session_of(req) is not None:
            return
        cert_dn = req.cookies.get("APIC-Certificate-DN")
        if cert_dn:
            self._check_signature(req, cert_dn)
            return
        raise ApicError("403", NO_TOKEN, 403)

    def _check_signature(self, req: "_Request", cert_dn: str) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        key = self.certs.get(cert_dn)
        if key is None or req.cookies.get("APIC-Certificate-Algorithm") != "v1.0" or \
                req.cookies.get("APIC-Certificate-Fingerprint") != "fingerprint":
            raise ApicError("403", f"Signature verification failed: unknown certificate "
                                   f"{cert_dn}", 403)
        try:
            sig = base64.b64decode(req.cookies.get("APIC-Request-Signature", ""))
            key.verify(sig, req.method.encode() + req.raw_path.encode() + req.body,
                       padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise ApicError("403", "Signature verification failed", 403)

    # -- dispatch ---------------------------------------------------------------
    def handle(self, req: "_Request") -> Tuple[int, dict, List[Tuple[str, str]]]:
        """(HTTP status, JSON reply, extra headers) for one request."""
        try:
            return self._handle(req)
        except ApicError as e:
            return e.http, {"totalCount": "1", "imdata": [
                {"error": {"attributes": {"code": e.code, "text": e.text}}}]}, []

    def _handle(self, req: "_Request") -> Tuple[int, dict, List[Tuple[str, str]]]:
        path = req.path
        if path.startswith("/api/node/"):
            path = "/api/" + path[len("/api/node/"):]
        for aaa in ("aaaLogin", "aaaRefresh", "aaaLogout"):
            if path in (f"/api/{aaa}.json", f"/api/mo/{aaa}.json"):
                return getattr(self, "_" + aaa)(req)
        if not path.endswith(".json"):
            raise ApicError("400", "only .json requests are served by this stand-in")
        self._authenticate(req)
        if path.startswith("/api/mo/"):
            dn = path[len("/api/mo/"):-len(".json")]
            if req.method == "POST":
                self.requests["POST mo"] += 1
                self._post(dn, req.body)
                self._save()
                return 200, {"totalCount": "0", "imdata": []}, []
            if req.method == "DELETE":
                self.requests["DELETE mo"] += 1
                self.mit.remove(dn)
                self._save()
                return 200, {"totalCount": "0", "imdata": []}, []
            if req.method == "GET":
                self.requests["GET mo"] += 1
                return 200, self._query([dn] if dn in self.mit.mos else [], req.query), []
        elif path.startswith("/api/class/") and req.method == "GET":
            self.requests["GET class"] += 1
            cls = path[len("/api/class/"):-len(".json")]
            dns = [dn for dn, (c, _) in sorted(self.mit.mos.items()) if c == cls]
            q = dict(req.query)
            q.setdefault("query-target", "self")
            return 200, self._query(dns, q), []
        raise ApicError("400", f"unsupported request {req.method} {req.path}")

    # -- aaa ----------------------------------------------------------------------
    def _aaaLogin(self, req):
        self.requests["login"] += 1
        body = self._json(req.body)
        try:
            attrs = body["aaaUser"]["attributes"]
            name, pwd = attrs["name"], attrs["pwd"]
        except (KeyError, TypeError):
            raise ApicError("400", "aaaLogin needs {\"aaaUser\":{\"attributes\":"
                                   "{\"name\":...,\"pwd\":...}}}")
        if not isinstance(name, str) or self.users.get(name) != pwd:
            raise ApicError("401", "Username or password is incorrect - FAILED local "
                                   "authentication", 401)
        s = self._new_session(name, req.query.get("gui-token-request") == "yes")
        return 200, self._login_reply(s), [("Set-Cookie", f"APIC-cookie={s.token}; path=/; "
                                                         f"HttpOnly")]

    def _aaaRefresh(self, req):
        self.requests["refresh"] += 1
        s = self._session_of(req)
        if s is None:
            raise ApicError("403", NO_TOKEN, 403)
        del self.sessions[s.token]
        s.token = secrets.token_urlsafe(48)
        s.expires = self.clock.seconds() + self.token_timeout
        self.sessions[s.token] = s
        return 200, self._login_reply(s), [("Set-Cookie", f"APIC-cookie={s.token}; path=/; "
                                                         f"HttpOnly")]

    def _aaaLogout(self, req):
        self.requests["logout"] += 1
        token = req.cookies.get("APIC-cookie")
        if token:
            self.sessions.pop(token, None)
        return 200, {"totalCount": "0", "imdata": []}, []

    # -- POST ---------------------------------------------------------------------
    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return loads(body or b"{}")
        except DecodeError as e:
            raise ApicError("400", f"Failed to parse the request body as JSON: {e}")

    def _post(self, url_dn: str, body: bytes) -> None:
        doc = self._json(body)
        if not isinstance(doc, dict) or len(doc) != 1:
            raise ApicError("400", "the request body must be one managed object "
                                   "{\"<class>\":{\"attributes\":{...},\"children\":[...]}}")
        ops: List[Tuple[str, str, str, Dict[str, str]]] = []  # (op, dn, cls, attrs)
        planned: Dict[str, Optional[str]] = {}  # dn -> class, None when deleted
        # the top MO: the URL names it or its parent
        (cls, node), = doc.items()
        stack: List[Tuple[str, Any, Optional[str], Optional[str]]] = [(cls, node, None, url_dn)]
        while stack:
            cls, node, parent, url = stack.pop()
            dn, attrs, status, children = self._node(cls, node, parent, url)
            if status == "deleted":
                ops.append(("delete", dn, cls, attrs))
                for d in self.mit.subtree(dn) if dn in self.mit.mos else [dn]:
                    planned[d] = None
                continue
            if dn == "uni":
                if cls != "polUni":
                    raise ApicError("102", f"uni is a polUni, not a {cls}")
                for child in reversed(children):
                    if not isinstance(child, dict) or len(child) != 1:
                        raise ApicError("400", f"a child of {dn} is not one managed object")
                    (ccls, cnode), = child.items()
                    stack.append((ccls, cnode, dn, None))
                continue
            exists = self._class_at(dn, planned) is not None
            if "created" in status.split(",") and exists and "modified" not in status:
                raise ApicError("103", f"Cannot create {dn}; object already exists.")
            if status == "modified" and not exists:
                raise ApicError("102", f"configured object ((Dn0)) not found Dn0={dn}, ")
            pcls = self._class_at(parent_dn(dn), planned)
            if pcls is None:
                raise ApicError("102", f"configured object ((Dn0)) not found Dn0="
                                       f"{parent_dn(dn)}, ")
            if pcls not in CLASSES[cls].parents:
                raise ApicError("102", f"{cls} cannot be a child of {pcls} (Dn0={dn})")
            ops.append(("set", dn, cls, attrs))
            planned[dn] = cls
            for child in reversed(children):
                if not isinstance(child, dict) or len(child) != 1:
                    raise ApicError("400", f"a child of {dn} is not one managed object")
                (ccls, cnode), = child.items()
                stack.append((ccls, cnode, dn, None))
        for op, dn, cls, attrs in ops:
            if op == "delete":
                self.mit.remove(dn)
                continue
            cur = self.mit.mos.get(dn)
            if cur is None:
                full = {p: "" for p in COMMON_PROPS}
                full.update(CLASSES[cls].props)
                full.update(naming_from_rn(cls, split_dn(dn)[-1]) or {})
            else:
                full = dict(cur[1])
            full.update(attrs)
            self.mit.modts += 1
            self.mit.add(dn, cls, full)

    def _class_at(self, dn: str, planned: Dict[str, Optional[str]]) -> Optional[str]:
        if dn in planned:
            return planned[dn]
        mo = self.mit.mos.get(dn)
        return mo[0] if mo else None

    def _node(self, cls: str, node: Any, parent: Optional[str],
              url: Optional[str]) -> Tuple[str, Dict[str, str], str, list]:
        meta = CLASSES.get(cls)
        if meta is None:
            raise ApicError("122", f"unknown managed object class {cls}")
        if not isinstance(node, dict) or not isinstance(node.get("attributes", {}), dict):
            raise ApicError("400", f"{cls}: expected {{\"attributes\":{{...}},\"children\":[...]}}")
        children = node.get("children") or []
        if not isinstance(children, list):
            raise ApicError("400", f"{cls}: children must be a list")
        raw = node.get("attributes") or {}
        attrs: Dict[str, str] = {}
        for k, v in raw.items():
            if k in ("dn", "rn", "status"):
                continue
            if k not in meta.props and k not in meta.naming and k not in COMMON_PROPS:
                raise ApicError("121", f"Prop '{k}' not found in class '{cls}' property table")
            if not isinstance(v, str):
                raise ApicError("107", f"unknown property value {json.dumps(v)}, name {k}, "
                                       f"class {cls} [(Dn0)] Dn0=, ")
            attrs[k] = v
        status = raw.get("status") or ""
        if not isinstance(status, str) or not set(status.split(",")) <= {
                "", "created", "modified", "deleted"}:
            raise ApicError("107", f"unknown property value {status}, name status, class {cls}")
        # the DN: explicit, from the RN, or from the naming properties
        if isinstance(raw.get("dn"), str) and raw["dn"]:
            dn = raw["dn"]
        else:
            if isinstance(raw.get("rn"), str) and raw["rn"]:
                rn = raw["rn"]
            else:
                for p in meta.naming:
                    if not attrs.get(p):
                        raise ApicError("822", f"naming property ('{cls}.{p}') is not set.")
                rn = rn_of(cls, attrs)
            if parent is not None:
                dn = f"{parent}/{rn}"
            elif url is not None and split_dn(url)[-1] == rn:
                dn = url  # the URL names this MO
            else:
                dn = f"{url}/{rn}" if url else rn  # the URL names its parent
        if parent is not None and parent_dn(dn) != parent:
            raise ApicError("102", f"{dn} is not a child of {parent}")
        if parent is None and url is not None and dn != url and parent_dn(dn) != url:
            raise ApicError("400", f"the URL names {url} but the payload {dn}")
        named = naming_from_rn(cls, split_dn(dn)[-1])
        if named is None:
            raise ApicError("107", f"{dn}: the relative name {split_dn(dn)[-1]!r} is not a "
                                   f"{cls} name (expected {meta.rn})")
        for p, v in named.items():
            if p in attrs and attrs[p] != v:
                raise ApicError("107", f"{cls}.{p} {attrs[p]!r} disagrees with its DN {dn}")
        if status != "deleted":
            for p, allowed in meta.enums.items():
                if p in attrs and attrs[p] not in allowed:
                    raise ApicError("107", f"unknown property value {attrs[p]}, name {p}, "
                                           f"class {cls} [(Dn0)] Dn0={dn}, ")
            self._check_values(cls, dn, attrs)
        return dn, attrs, status, children

    @staticmethod
    def _check_values(cls: str, dn: str, attrs: Dict[str, str]) -> None:
        encap = attrs.get("encap")
        if encap is not None and cls in ("fvRsPathAtt", "fvRsNodeAtt"):
            m = re.fullmatch(r"vlan-(\d+)", encap)
            if m is None or not 1 <= int(m.group(1)) <= 4094:
                raise ApicError("107", f"unknown property value {encap}, name encap, class "
                                       f"{cls} [(Dn0)] Dn0={dn}, ")
        for p in ("dFromPort", "dToPort", "sFromPort", "sToPort"):
            v = attrs.get(p)
            if v is not None and v != "unspecified" and not (v.isdigit() and
                                                             0 <= int(v) <= 65535):
                raise ApicError("107", f"unknown property value {v}, name {p}, class {cls} "
                                       f"[(Dn0)] Dn0={dn}, ")

    # -- GET -------------------------------------------------------------------------
    def _mo_json(self, dn: str, depth: int, child_classes: Optional[set]) -> dict:
        cls, attrs = self.mit.mos[dn]
        out_attrs = dict(attrs)
        out_attrs.update({"dn": dn, "status": "", "childAction": "", "modTs": "never",
                          "uid": "15374", "lcOwn": "local"})
        body: Dict[str, Any] = {"attributes": out_attrs}
        if depth:
            kids = []
            for c in sorted(self.mit.children.get(dn, ())):
                if child_classes and self.mit.mos[c][0] not in child_classes:
                    continue
                kids.append(self._mo_json(c, depth - 1, child_classes))
            if kids:
                body["children"] = kids
        return {cls: body}

    def _query(self, roots: List[str], q: Dict[str, str]) -> dict:
        target = q.get("query-target", "self")
        if target not in ("self", "children", "subtree"):
            raise ApicError("107", f"unknown query-target {target!r}")
        rsp = q.get("rsp-subtree", "no")
        depths = {"no": 0, "children": 1, "full": 10 ** 6}
        if rsp not in depths:
            raise ApicError("107", f"unknown rsp-subtree {rsp!r}")
        classes = {c for c in q.get("target-subtree-class", "").split(",") if c}
        rsp_classes = {c for c in q.get("rsp-subtree-class", "").split(",") if c} or None
        flt = parse_filter(q["query-target-filter"]) if q.get("query-target-filter") else None
        found: List[str] = []
        for root in roots:
            if target == "self":
                cands = [root]
            elif target == "children":
                cands = sorted(self.mit.children.get(root, ()))
            else:
                cands = self.mit.subtree(root)
            for dn in cands:
                cls, attrs = self.mit.mos[dn]
                if classes and cls not in classes:
                    continue
                if flt is not None and not flt(cls, attrs):
                    continue
                found.append(dn)
        imdata = [self._mo_json(dn, depths[rsp], rsp_classes) for dn in found]
        return {"totalCount": str(len(imdata)), "imdata": imdata}

    # -- persistence (the lab's stand-in keeps its configuration across restarts) -----
    def _save(self) -> None:
        if not self.state_file or self._saving:
            return
        self._saving = True
        text = self.mit.to_json()
        path = self.state_file

        def write() -> None:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)

        d = threads.deferToThread(write)

        def done(result):
            self._saving = False
            if self.mit.to_json() != text:
                self._save()
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.error("stand-in APIC: cannot save {path}: {err}",
                                         path=path, err=f.getErrorMessage()))


class _Request:
    __slots__ = ("method", "path", "raw_path", "query", "cookies", "headers", "body")

    def __init__(self, request: server.Request):
        self.method = request.method.decode("ascii", "replace")
        self.raw_path = request.uri.decode("utf-8", "replace")
        parts = urlsplit(self.raw_path)
        self.path = unquote(parts.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.cookies = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                        for k, v in request.received_cookies.items()}
        self.headers = {k.decode().lower(): v[-1].decode("utf-8", "replace")
                        for k, v in request.requestHeaders.getAllRawHeaders()}
        self.body = request.content.read() if request.content is not None else b""


class _Site(server.Site):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.open: set = set()

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        site = self
        made, lost = proto.connectionMade, proto.connectionLost

        def connection_made():
            site.open.add(proto)
            made()

        def connection_lost(reason):
            site.open.discard(proto)
            lost(reason)

        proto.connectionMade, proto.connectionLost = connection_made, connection_lost
        return proto


class _Resource(resource.Resource):
    isLeaf = True

    def __init__(self, apic: StandinApic):
        super().__init__()
        self.apic = apic

    def render(self, request: server.Request) -> bytes:
        status, body, headers = self.apic.handle(_Request(request))
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        for k, v in headers:
            request.setHeader(k.encode(), v.encode())
        return json.dumps(body).encode()


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m drivers.aci.standin``: run a stand-in APIC until killed."""
    import argparse

    from twisted.logger import globalLogBeginner, textFileLogObserver

    p = argparse.ArgumentParser(prog="python -m drivers.aci.standin",
                                description="A stand-in APIC (NOT an APIC) for the lab "
                                            "and tests: the REST subset contiv-sdn uses.")
    p.add_argument("--listen", default="tcp:8080:interface=127.0.0.1",
                   help="Twisted endpoint string (default %(default)s)")
    p.add_argument("--user", default="admin")
    p.add_argument("--password-file", required=True,
                   help="file holding the user's password (first line)")
    p.add_argument("--token-timeout", type=int, default=600,
                   help="seconds a token lives without aaaRefresh")
    p.add_argument("--state", default=None, help="JSON file keeping the MIT across restarts")
    args = p.parse_args(argv)
    try:
        with open(args.password_file) as f:
            password = f.readline().rstrip("\n")
    except OSError as e:
        print(f"cannot read --password-file: {e}", file=sys.stderr)
        return 1
    mit = None
    if args.state and os.path.exists(args.state):
        try:
            with open(args.state) as f:
                mit = Mit.from_json(f.read())
        except (OSError, ValueError) as e:
            print(f"cannot read --state {args.state}: {e}; remove it or fix it",
                  file=sys.stderr)
            return 1
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    apic = StandinApic(args.user, password, args.token_timeout, mit=mit, state_file=args.state)
    failed = []

    def started(port):
        log.info("stand-in APIC (not an APIC) listening on port {port}", port=port)

    def failed_start(f):
        failed.append(f.getErrorMessage())
        print(f"stand-in APIC cannot listen on {args.listen}: {f.getErrorMessage()}",
              file=sys.stderr)
        default_reactor.stop()

    default_reactor.callWhenRunning(
        lambda: defer.ensureDeferred(apic.listen(args.listen)).addCallbacks(started,
                                                                            failed_start))
    default_reactor.run()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
