"""The lab's underlay: names, root-namespace bridges, host namespaces and their veths.

Layout (``shared/notes/lab.md``, verified): a root-namespace Linux bridge
``<lp>ul0`` carrying the underlay gateway address, a second one ``<lp>ul1``
(no address) as a VLAN trunk; per host a namespace with ``eth0`` (veth to
``<lp>ul0``, later put on the host's OVS bridge ``br-ul``) and ``eth1`` (veth to
``<lp>ul1``, the agent's VLAN uplink).  All names derive from a link prefix and
a host prefix, so ``down`` can find what a crashed ``up`` left behind, and a
test lab with other prefixes never touches a person's lab.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import List, Optional

from contiv_sdn.lab.ethtool import set_tx_checksum
from contiv_sdn.lab.sh import LabError, ip

IFNAMSIZ = 15


@dataclass(frozen=True)
class Names:
    """Every kernel name the lab uses, from its prefixes."""

    prefix: str = "node"        # hosts: node1..nodeN (also their namespace names)
    link_prefix: str = "ctv"    # root-namespace links

    @property
    def underlay_bridge(self) -> str:
        return f"{self.link_prefix}ul0"

    @property
    def trunk_bridge(self) -> str:
        return f"{self.link_prefix}ul1"

    def host(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def host_underlay_link(self, host: str) -> str:
        return f"{self.link_prefix}{host}-ul"

    def host_trunk_link(self, host: str) -> str:
        return f"{self.link_prefix}{host}-tr"

    def container_netns(self, host: str, name: str) -> str:
        return f"{host}-{name}"

    def dns_netns(self, host: str) -> str:
        """The host's netplugin DNS namespace (``--dns-netns``): made by the lab in the root
        mount namespace so that it outlives netplugin restarts; matches
        :meth:`is_container_netns` (so ``down`` removes it) but no container name
        (those start with a letter or digit)."""
        return f"{host}-_dns"

    def check(self, hosts: int) -> None:
        for name in (self.underlay_bridge, self.host_underlay_link(self.host(hosts)),
                     self.host_trunk_link(self.host(hosts))):
            if len(name) > IFNAMSIZ:
                raise LabError(f"interface name {name!r} is longer than {IFNAMSIZ} characters: "
                               "use a shorter host or link prefix")
        if not re.fullmatch(r"[a-z][a-z0-9]*", self.prefix) or \
                not re.fullmatch(r"[a-z][a-z0-9]*", self.link_prefix):
            raise LabError("prefixes must be lower-case letters and digits, starting with a letter")

    def is_host_netns(self, name: str) -> bool:
        return re.fullmatch(rf"{re.escape(self.prefix)}[0-9]+", name) is not None

    def is_container_netns(self, name: str) -> bool:
        return re.fullmatch(rf"{re.escape(self.prefix)}[0-9]+-[A-Za-z0-9_.-]+", name) is not None

    def is_root_link(self, name: str) -> bool:
        if name in (self.underlay_bridge, self.trunk_bridge):
            return True
        return re.fullmatch(rf"{re.escape(self.link_prefix)}{re.escape(self.prefix)}[0-9]+-(ul|tr)",
                            name) is not None


class Subnet:
    """The underlay subnet: host i gets the i-th address, the root bridge the last usable one."""

    def __init__(self, cidr: str):
        try:
            self.net = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as e:
            raise LabError(f"bad underlay subnet {cidr!r}: {e}") from e
        self.cidr = str(self.net)

    @property
    def prefixlen(self) -> int:
        return self.net.prefixlen

    @property
    def gateway(self) -> str:
        return str(self.net.broadcast_address - 1)

    def host_ip(self, index: int) -> str:
        addr = self.net.network_address + index
        if index < 1 or addr >= self.net.broadcast_address - 1:
            raise LabError(f"subnet {self.cidr} has no room for host {index}")
        return str(addr)


# -- inspection ---------------------------------------------------------------
def list_netns() -> List[str]:
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links(netns: Optional[str] = None) -> List[str]:
    out = ip("-j", "link", "show", netns=netns).stdout
    return [l["ifname"] for l in json.loads(out or "[]")]


def link_exists(name: str, netns: Optional[str] = None) -> bool:
    return ip("link", "show", "dev", name, netns=netns, check=False).returncode == 0


# -- creation -----------------------------------------------------------------
def create_bridges(names: Names, subnet: Subnet, mtu: int) -> None:
    """The root-namespace underlay bridge (gateway address) and the VLAN trunk bridge."""
    for br in (names.underlay_bridge, names.trunk_bridge):
        if not link_exists(br):
            ip("link", "add", br, "mtu", str(mtu), "type", "bridge", "stp_state", "0")
        ip("link", "set", br, "up")
    ip("addr", "replace", f"{subnet.gateway}/{subnet.prefixlen}", "dev", names.underlay_bridge)


def create_netns(name: str) -> None:
    if name in list_netns():
        raise LabError(f"network namespace {name} already exists: run down first")
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def create_host_links(names: Names, host: str, mtu: int) -> None:
    """veth eth0 <-> <lp><host>-ul (underlay) and eth1 <-> <lp><host>-tr (trunk), offload off."""
    for root_side, inner, bridge in (
            (names.host_underlay_link(host), "eth0", names.underlay_bridge),
            (names.host_trunk_link(host), "eth1", names.trunk_bridge)):
        ip("link", "add", root_side, "mtu", str(mtu), "type", "veth",
           "peer", "name", inner, "mtu", str(mtu), "netns", host)
        set_tx_checksum(root_side, False)
        set_tx_checksum(inner, False, netns=host)
        ip("link", "set", root_side, "master", bridge, "up")
        ip("link", "set", inner, "up", netns=host)


# -- removal ------------------------------------------------------------------
def netns_pids(name: str) -> List[int]:
    out = ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def delete_netns(name: str) -> None:
    ip("netns", "delete", name, check=False)


def delete_link(name: str) -> None:
    ip("link", "delete", name, check=False)
