"""The naming rules of service discovery, as a pure function of the stored records.

A :class:`Directory` is built from the ``state:endpoint``, ``state:network`` and
``state:serviceLB`` records (plain dicts, as Redis holds them) and answers one
question: *for this asker, what does this name mean?*  No I/O, no reactor, so
the rules are tested on plain data and a rebuild never blocks a query.

Rules (names are case-insensitive; ``N`` is the asker's network, ``T`` its tenant):

* ``x`` (one label): in ``N``, the serviceLB ``x`` (its VIP), else the endpoint
  group ``x`` (every endpoint of it), else the container ``x``; if ``N`` has none,
  the container ``x`` anywhere in ``T`` (what Contiv answered: its lookups were
  per tenant).
* ``x.n`` where ``n`` is a network of ``T``: the same, within ``n``.  Network and
  container names may contain dots, so every split is tried.
* ``x[.n].<domain>`` when a domain suffix is configured: the same as without it.

A name "looks like ours" (and so gets NXDOMAIN when nothing matches, instead of
being forwarded) when it is one label, ends in ``.n`` for a network ``n`` of
``T``, or ends in the domain suffix.  Everything else is forwarded upstream.
Nothing here ever reads another tenant's records: each tenant has its own
index and the asker's tenant picks it.

Kubernetes Services (``k8sService`` / ``k8sEndpointSlice`` records, the watcher's):
``<svc>.<ns>.svc.<k8s domain>`` (default ``cluster.local``; also without the domain,
and under Contiv's own suffix) is the Service's clusterIP, or for a headless Service
the addresses of its ready endpoints.  These names are cluster-wide, as in
Kubernetes: any asker resolves them (reaching the address is the datapath's and
policy's business).  Short forms (``web``, ``web.ns``) come through the search path
the CNI result gives pods (``<ns>.svc.<domain>``, ``svc.<domain>``, ``<domain>``).
A name under ``.svc.<k8s domain>`` that is no Service is NXDOMAIN.

Priority inside one network is Contiv's (serviceLB, then group, then
container), so a group and a container of the same name do not mix.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple, Union


class Asker(NamedTuple):
    """Who asks: the tenant and the network (name, not key) of the asking endpoint.

    The serving path must hand this to the server; it is never guessed across
    tenants (see :meth:`Directory.asker`).
    """

    tenant: str
    network: str
    ip: str = ""


class Addresses(NamedTuple):
    """What a name resolves to, in the stored order (the server rotates it)."""

    v4: Tuple[str, ...]
    v6: Tuple[str, ...]


class _Missing:
    """The name looks like ours and does not exist: NXDOMAIN."""

    def __repr__(self) -> str:
        return "MISSING"


class _Foreign:
    """The name is not ours: forward it upstream."""

    def __repr__(self) -> str:
        return "FOREIGN"


MISSING = _Missing()
FOREIGN = _Foreign()
Lookup = Union[Addresses, _Missing, _Foreign]


def _addr(value: object, version: int) -> Optional[str]:
    """A stored address (maybe with ``/len``) as canonical text, or None if it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ip = ipaddress.ip_address(value.split("/")[0])
    except ValueError:
        return None
    return str(ip) if ip.version == version else None


def _name(value: object) -> str:
    """A stored name as a lookup key: lower case, Docker's leading ``/`` and any
    final dot removed ("" if the record has none)."""
    if not isinstance(value, str):
        return ""
    return value.strip().lstrip("/").rstrip(".").lower()


@dataclass
class _Bucket:
    v4: List[str] = field(default_factory=list)
    v6: List[str] = field(default_factory=list)

    def add(self, v4: Optional[str], v6: Optional[str]) -> None:
        if v4 and v4 not in self.v4:
            self.v4.append(v4)
        if v6 and v6 not in self.v6:
            self.v6.append(v6)

    def frozen(self) -> Addresses:
        return Addresses(tuple(self.v4), tuple(self.v6))


class _Tenant:
    """One tenant's names: per network (merged by priority) and tenant-wide containers."""

    __slots__ = ("networks", "local", "containers", "by_ip")

    def __init__(self) -> None:
        self.networks: Set[str] = set()
        self.local: Dict[str, Dict[str, Addresses]] = {}
        self.containers: Dict[str, Addresses] = {}
        #: endpoint address (v4 or v6) -> the network it is in (one per tenant:
        #: a tenant's subnets do not overlap)
        self.by_ip: Dict[str, str] = {}


class Directory:
    """An immutable index of every tenant's names (see the module docstring).

    ``endpoints``, ``networks`` and ``services`` are the ``state:endpoint``,
    ``state:network`` and ``state:serviceLB`` hashes (key -> record).  Records
    that are not dicts or lack the fields used here are skipped (the store is
    shared with other writers; a bad record must not take DNS down).
    """

    def __init__(self, endpoints: Mapping[str, object] = (), networks: Mapping[str, object] = (),
                 services: Mapping[str, object] = (), domain: str = "",
                 k8s_services: Mapping[str, object] = (), k8s_slices: Mapping[str, object] = (),
                 k8s_domain: str = "cluster.local") -> None:
        self.domain = _name(domain)
        self.k8s_domain = _name(k8s_domain)
        #: "<svc>.<ns>.svc" -> its addresses (clusterIP, or a headless Service's endpoints)
        self._k8s: Dict[str, Addresses] = {}
        self._tenants: Dict[str, _Tenant] = {}
        #: address -> tenants having an endpoint with it (for unscoped listeners)
        self._ip_tenants: Dict[str, Set[str]] = {}
        self.skipped = 0
        self._build(dict(endpoints or {}), dict(networks or {}), dict(services or {}))
        self._build_k8s(dict(k8s_services or {}), dict(k8s_slices or {}))

    def _build_k8s(self, services: Dict[str, object], slices: Dict[str, object]) -> None:
        #: Kubernetes mode (a Service exists): only then are ``*.svc.<domain>`` names ours
        #: (elsewhere they are forwarded, as any name we do not serve)
        self._k8s_seen = bool(services)
        ready: Dict[Tuple[str, str], _Bucket] = {}
        for key in sorted(slices):
            rec = slices[key]
            if not isinstance(rec, dict) or not isinstance(rec.get("endpoints"), list):
                self.skipped += 1
                continue
            b = ready.setdefault((_name(rec.get("namespace")), _name(rec.get("service"))), _Bucket())
            for ep in rec["endpoints"]:
                for a in (ep.get("addresses") if isinstance(ep, dict) else None) or ():
                    b.add(_addr(a, 4), _addr(a, 6))
        for key in sorted(services):
            rec = services[key]
            if not isinstance(rec, dict):
                self.skipped += 1
                continue
            ns, name = _name(rec.get("namespace")), _name(rec.get("name"))
            if not ns or not name or rec.get("type") == "ExternalName":
                continue
            if rec.get("headless") is True:
                self._k8s[f"{name}.{ns}.svc"] = ready.get((ns, name), _Bucket()).frozen()
                continue
            vip = _addr(rec.get("clusterIP"), 4)
            if vip:
                self._k8s[f"{name}.{ns}.svc"] = Addresses((vip,), ())

    def _tenant(self, name: str) -> _Tenant:
        t = self._tenants.get(name)
        if t is None:
            t = self._tenants[name] = _Tenant()
        return t

    def _build(self, endpoints: Dict[str, object], networks: Dict[str, object],
               services: Dict[str, object]) -> None:
        # (tenant, network) -> {name: bucket}, one dict per priority
        svc: Dict[Tuple[str, str], Dict[str, _Bucket]] = {}
        grp: Dict[Tuple[str, str], Dict[str, _Bucket]] = {}
        ctr: Dict[Tuple[str, str], Dict[str, _Bucket]] = {}
        wide: Dict[str, Dict[str, _Bucket]] = {}
        for key in sorted(networks):
            rec = networks[key]
            if not isinstance(rec, dict) or not isinstance(rec.get("tenant"), str):
                self.skipped += 1
                continue
            net = _name(rec.get("networkName"))
            if net:
                self._tenant(rec["tenant"]).networks.add(net)
        for key in sorted(endpoints):  # sorted: a stable base order to rotate
            rec = endpoints[key]
            if not isinstance(rec, dict) or not isinstance(rec.get("tenant"), str):
                self.skipped += 1
                continue
            tenant = rec["tenant"]
            net = _name(rec.get("networkName"))
            v4, v6 = _addr(rec.get("ipAddress"), 4), _addr(rec.get("ipv6Address"), 6)
            if not net or not (v4 or v6):
                self.skipped += 1
                continue
            t = self._tenant(tenant)
            t.networks.add(net)
            for ip in (v4, v6):
                if ip:
                    t.by_ip[ip] = net
                    self._ip_tenants.setdefault(ip, set()).add(tenant)
            group = _name(rec.get("groupName"))
            if group:
                grp.setdefault((tenant, net), {}).setdefault(group, _Bucket()).add(v4, v6)
            container = _name(rec.get("containerName"))
            if container:
                ctr.setdefault((tenant, net), {}).setdefault(container, _Bucket()).add(v4, v6)
                wide.setdefault(tenant, {}).setdefault(container, _Bucket()).add(v4, v6)
        for key in sorted(services):
            rec = services[key]
            if not isinstance(rec, dict) or not isinstance(rec.get("tenant"), str):
                self.skipped += 1
                continue
            net, name = _name(rec.get("networkName")), _name(rec.get("serviceName"))
            vip = _addr(rec.get("ipAddress"), 4)
            if not net or not name or not vip:
                self.skipped += 1
                continue
            self._tenant(rec["tenant"]).networks.add(net)
            svc.setdefault((rec["tenant"], net), {}).setdefault(name, _Bucket()).add(vip, None)
        for source in (ctr, grp, svc):  # lowest priority first: later ones overwrite
            for (tenant, net), names in source.items():
                local = self._tenant(tenant).local.setdefault(net, {})
                for name, bucket in names.items():
                    local[name] = bucket.frozen()
        for tenant, names in wide.items():
            self._tenants[tenant].containers = {n: b.frozen() for n, b in names.items()}

    # -- who asks ---------------------------------------------------------------------
    def asker(self, ip: str, tenant: Optional[str] = None) -> Optional[Asker]:
        """The endpoint with address ``ip`` — in ``tenant`` if given, else in the one
        tenant that has it.  None if there is none, or (without ``tenant``) if several
        tenants have it: identical subnets are told apart by the serving path (a
        listener per tenant), never by a guess."""
        if tenant is not None:  # the common case, without parsing: the address as stored
            t = self._tenants.get(tenant)
            net = t.by_ip.get(ip) if t is not None else None
            if net is not None:
                return Asker(tenant, net, ip)
        try:
            parsed = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return None
        mapped = getattr(parsed, "ipv4_mapped", None)  # a v4 asker on a dual-stack socket
        ip = str(mapped or parsed)
        if tenant is None:
            tenants = self._ip_tenants.get(ip)
            if not tenants or len(tenants) != 1:
                return None
            (tenant,) = tenants
        t = self._tenants.get(tenant)
        if t is None or ip not in t.by_ip:
            return None
        return Asker(tenant, t.by_ip[ip], ip)

    def _k8s_lookup(self, name: str) -> Optional[Lookup]:
        """A Kubernetes Service name (module docstring), or None: not one of those."""
        for suffix in (self.k8s_domain, self.domain):
            if suffix and name.endswith("." + suffix):
                name = name[: -len(suffix) - 1]
                break
        else:
            if not name.endswith(".svc"):
                return None
        if not name.endswith(".svc") and name != "svc":
            return None
        found = self._k8s.get(name)
        if found is not None:
            return found
        return Addresses((), ()) if name.count(".") < 2 else MISSING  # svc / <ns>.svc exist

    def tenants(self) -> List[str]:
        return sorted(self._tenants)

    # -- what a name means ------------------------------------------------------------
    def lookup(self, asker: Asker, qname: str) -> Lookup:
        """``qname`` (text, any case, final dot optional) as seen by ``asker``."""
        name = qname.rstrip(".").lower() if qname != "." else ""
        if "\\" in name or not name:
            return FOREIGN  # escaped bytes are never one of our names; the root is not ours
        if self._k8s_seen:
            k8s = self._k8s_lookup(name)
            if k8s is not None:
                return k8s
        suffixed = False
        if self.domain:
            if name == self.domain:
                return Addresses((), ())  # the apex exists (no data)
            if name.endswith("." + self.domain):
                name, suffixed = name[: -len(self.domain) - 1], True
        t = self._tenants.get(asker.tenant)
        if t is None:
            return MISSING if suffixed or "." not in name else FOREIGN
        home = t.local.get(_name(asker.network), {})
        found = home.get(name)
        if found is not None:
            return found
        if "." not in name:
            return t.containers.get(name, MISSING)
        ours = suffixed
        labels = name.split(".")
        for i in range(len(labels) - 1, 0, -1):
            net = ".".join(labels[i:])
            if net in t.networks:
                ours = True
                found = t.local.get(net, {}).get(".".join(labels[:i]))
                if found is not None:
                    return found
        return MISSING if ours else FOREIGN


def records_of(kinds: Mapping[str, Mapping[str, object]]) -> Dict[str, Mapping[str, object]]:
    """The kinds a :class:`Directory` reads, from a ``{kind: {key: record}}`` mirror."""
    return {"endpoints": kinds.get("endpoint", {}), "networks": kinds.get("network", {}),
            "services": kinds.get("serviceLB", {}), "k8s_services": kinds.get("k8sService", {}),
            "k8s_slices": kinds.get("k8sEndpointSlice", {})}


KINDS: Tuple[str, ...] = ("endpoint", "network", "serviceLB", "k8sService", "k8sEndpointSlice")
"""The store kinds DNS follows."""


def build(kinds: Mapping[str, Mapping[str, object]], domain: str = "") -> Directory:
    """A :class:`Directory` from a ``{kind: {key: record}}`` mirror."""
    return Directory(domain=domain, **records_of(kinds))


__all__: Iterable[str] = ["Asker", "Addresses", "Directory", "MISSING", "FOREIGN", "KINDS",
                          "build"]
