"""How Contiv networks and endpoint groups are named in Docker, and how pools are identified.

The seed's README is the contract: a network is ``contiv-net``, an endpoint
group ``web`` in it is ``web.contiv-net``, and ``/<tenant>`` is appended for any
tenant but ``default`` (``web.contiv-net/blue``).  Contiv later switched to
``<group>`` alone; we keep the seed's form, which also cannot collide between
two groups of the same name in different networks.

Contiv names may contain dots (``a.b`` is a valid network name), so a Docker
name cannot always be parsed back unambiguously.  The driver therefore never
relies on parsing: every Docker network we create carries its placement in its
IPAM options and labels (:func:`placement_labels`), and the IPAM pool id
carries it too (:class:`PoolRef`).  :func:`parse_docker_name` exists only as
the last fallback for networks created by hand, and says when it had to guess.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

DEFAULT_TENANT = "default"

#: Docker labels on networks we manage (placement + "managed by us").
LABEL_MANAGED = "io.contiv.managed"
LABEL_TENANT = "io.contiv.tenant"
LABEL_NETWORK = "io.contiv.network"
LABEL_GROUP = "io.contiv.net-group"


@dataclass(frozen=True, order=True)
class Placement:
    """Where an endpoint lands: tenant, network and (optional) endpoint group."""

    tenant: str
    network: str
    group: str = ""

    @property
    def network_key(self) -> str:
        """The Redis/netmaster key of the network, ``tenant:network``."""
        return f"{self.tenant}:{self.network}"

    @property
    def group_key(self) -> str:
        return f"{self.tenant}:{self.group}" if self.group else ""

    @property
    def docker_name(self) -> str:
        return docker_network_name(self.tenant, self.network, self.group)

    @property
    def key(self) -> str:
        """``tenant:network:group`` (``:`` cannot occur in names); see :meth:`from_key`."""
        return f"{self.tenant}:{self.network}:{self.group}"

    @classmethod
    def from_key(cls, key: str) -> "Placement":
        tenant, network, group = key.split(":", 2)
        return cls(tenant, network, group)


def docker_network_name(tenant: str, network: str, group: str = "") -> str:
    """``contiv-net``, ``web.contiv-net``, ``contiv-net/blue``, ``web.contiv-net/blue``."""
    name = f"{group}.{network}" if group else network
    if tenant and tenant != DEFAULT_TENANT:
        name = f"{name}/{tenant}"
    return name


def parse_docker_name(name: str, known_networks: Optional[set] = None) -> Placement:
    """Best-effort inverse of :func:`docker_network_name` for hand-made networks.

    With ``known_networks`` (a set of ``tenant:network`` keys) a dotted name is
    split where the network part exists; without it the first dot splits group
    from network, as Contiv's parser did.
    """
    base, _, tenant = name.partition("/")
    tenant = tenant or DEFAULT_TENANT
    if known_networks is not None:
        if f"{tenant}:{base}" in known_networks:
            return Placement(tenant, base, "")
        parts = base.split(".")
        for i in range(1, len(parts)):
            group, network = ".".join(parts[:i]), ".".join(parts[i:])
            if f"{tenant}:{network}" in known_networks:
                return Placement(tenant, network, group)
    group, dot, network = base.partition(".")
    if not dot:
        return Placement(tenant, base, "")
    return Placement(tenant, network, group)


def placement_labels(p: Placement) -> Dict[str, str]:
    labels = {LABEL_MANAGED: "true", LABEL_TENANT: p.tenant, LABEL_NETWORK: p.network}
    if p.group:
        labels[LABEL_GROUP] = p.group
    return labels


def placement_from_options(options: Optional[dict]) -> Optional[Placement]:
    """Placement from IPAM/driver options ``{tenant, network[, group]}`` (Contiv's keys)."""
    if not isinstance(options, dict):
        return None
    network = options.get("network")
    if not isinstance(network, str) or not network:
        return None
    tenant = options.get("tenant")
    group = options.get("group") or ""
    if not isinstance(tenant, str) or not tenant:
        tenant = DEFAULT_TENANT
    if not isinstance(group, str):
        return None
    return Placement(tenant, network, group)


def placement_from_labels(labels: Optional[dict]) -> Optional[Placement]:
    if not isinstance(labels, dict) or not labels.get(LABEL_NETWORK):
        return None
    return Placement(labels.get(LABEL_TENANT) or DEFAULT_TENANT, labels[LABEL_NETWORK],
                     labels.get(LABEL_GROUP) or "")


@dataclass(frozen=True)
class PoolRef:
    """An IPAM pool id: placement + the pool CIDR, ``tenant:network:group|cidr[|role]``.

    ``:`` cannot occur in Contiv names, so this parses back unambiguously
    (Contiv's ``net:epg.tenant|cidr`` could not, with dotted names).  ``role`` is
    set for swarm-scoped networks only: ``manager`` for the pool the swarm
    manager asked for in the global address space (it allocates every task's
    address), ``worker`` for the pool a node asked for when a task landed there
    (its address requests name the address the manager already holds).
    """

    placement: Placement
    pool: str
    role: str = ""

    def encode(self) -> str:
        p = self.placement
        tail = f"|{self.role}" if self.role else ""
        return f"{p.tenant}:{p.network}:{p.group}|{self.pool}{tail}"

    @classmethod
    def decode(cls, pool_id: str) -> "PoolRef":
        """Raise ValueError with a clear text when ``pool_id`` is not one of ours."""
        head, bar, rest = pool_id.partition("|")
        pool, _, role = rest.partition("|")
        parts = head.split(":")
        if not bar or len(parts) != 3 or not parts[0] or not parts[1] \
                or role not in ("", SWARM_MANAGER, SWARM_WORKER):
            raise ValueError(f"pool id {pool_id!r} was not issued by netplugin "
                             "(expected tenant:network:group|subnet)")
        ipaddress.ip_network(pool, strict=False)
        return cls(Placement(parts[0], parts[1], parts[2]), pool, role)


#: PoolRef roles of swarm-scoped networks (see :class:`PoolRef`).
SWARM_MANAGER = "manager"
SWARM_WORKER = "worker"


def subnet_of(contiv_subnet: str) -> Tuple[str, int]:
    """``("20.1.1.0/24", 24)`` from a Contiv subnet, also its range form ``a-b/len``."""
    addr, _, plen = contiv_subnet.partition("/")
    first = addr.split("-", 1)[0]
    net = ipaddress.ip_network(f"{first}/{plen}", strict=False)
    return str(net), net.prefixlen


