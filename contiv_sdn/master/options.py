"""``twistd netmaster`` command-line options."""

from __future__ import annotations

import re

from twisted.python import usage

from contiv_sdn.master import netutil
from contiv_sdn.master.config import (
    CLUSTER_MODES,
    DEFAULT_ARP_MODE,
    DEFAULT_FWD_MODE,
    DEFAULT_INFRA,
    DEFAULT_PVT_SUBNET,
    DEFAULT_VLANS,
    DEFAULT_VXLANS,
    MasterConfig,
)
from contiv_sdn.master.errors import MasterError

DEFAULT_STATE_DIR = "/var/lib/contiv-sdn/netmaster"
_PVT = re.compile(r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
                  r"(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})/16")
_ENDPOINT_TYPES = ("tcp:", "tcp6:", "unix:", "ssl:", "systemd:", "tls:")


def listen_endpoint(value: str) -> str:
    """``tcp:9999`` (any Twisted endpoint string), ``host:port`` or ``:port`` → endpoint string."""
    if value.startswith(_ENDPOINT_TYPES):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise usage.UsageError(f"--listen: {value!r} is neither host:port nor an endpoint string")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return f"tcp:{port}"
    if ":" in host:
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={host}"


class NetmasterOptions(usage.Options):
    synopsis = "[options]"
    longdesc = ("The contiv-sdn netmaster: Contiv-compatible REST API and object semantics on "
                "Redis.  Without --redis it runs a private redis-server in --state-dir.")
    optParameters = [
        ["listen", "l", "tcp:9999", "where the REST API listens: a Twisted endpoint string, "
                                    "host:port or :port"],
        ["redis", "r", None, "Redis URL: redis://host:port[/db] or unix:///path/to/sock "
                             "(default: an embedded redis-server under --state-dir)"],
        ["state-dir", None, DEFAULT_STATE_DIR, "state directory (embedded Redis data)"],
        ["ofp-listen", None, "tcp:6653", "where the OpenFlow controller listens for the hosts' "
                                         "switches (endpoint string, host:port or :port; "
                                         "'none' disables the controller)"],
        ["fwdmode", None, None, f"forwarding mode, bridge|routing (default {DEFAULT_FWD_MODE})"],
        ["arpmode", None, None, f"ARP mode, proxy|flood (default {DEFAULT_ARP_MODE})"],
        ["infra", None, None, f"network infra type, default|aci|aci-opflex "
                              f"(default {DEFAULT_INFRA})"],
        ["mode", None, "docker", "cluster mode, docker|kubernetes|swarm-mode"],
        ["vlans", None, None, f"VLAN range (default {DEFAULT_VLANS})"],
        ["vxlans", None, None, f"VXLAN range (default {DEFAULT_VXLANS})"],
        ["pvt-subnet", None, None, f"private subnet, a /16 (default {DEFAULT_PVT_SUBNET})"],
        ["refresh", None, 10.0, "seconds between refreshes of this netmaster's record in Redis; "
                                "a record not refreshed for 3 intervals is stale and removed",
         float],
        ["redis-timeout", None, 5.0, "seconds a Redis call may take before the request fails "
                                     "with 'state store unavailable'", float],
        ["redis-restart-backoff", None, 0.5, "seconds before the first restart of an embedded "
                                             "redis-server that exited (doubling on each "
                                             "failure, at most 30)", float],
    ]

    def postOptions(self) -> None:
        self["listen-endpoint"] = listen_endpoint(self["listen"])
        self["ofp-endpoint"] = (None if self["ofp-listen"] == "none"
                                else listen_endpoint(self["ofp-listen"]))
        checks = {
            "fwdmode": ("bridge", "routing"), "arpmode": ("proxy", "flood"),
            "infra": ("default", "aci", "aci-opflex"), "mode": CLUSTER_MODES,
        }
        for name, allowed in checks.items():
            if self[name] is not None and self[name] not in allowed:
                raise usage.UsageError(f"--{name} must be one of {', '.join(allowed)}")
        try:
            if self["vlans"] is not None:
                netutil.parse_tag_ranges(self["vlans"], "vlan")
            if self["vxlans"] is not None:
                netutil.parse_tag_ranges(self["vxlans"], "vxlan")
        except MasterError as e:
            raise usage.UsageError(str(e))
        if self["pvt-subnet"] is not None and not _PVT.fullmatch(self["pvt-subnet"]):
            raise usage.UsageError("--pvt-subnet must be an IPv4 /16")
        for name in ("refresh", "redis-timeout", "redis-restart-backoff"):
            if not 0.05 <= self[name] <= 3600:
                raise usage.UsageError(f"--{name} must be a number of seconds "
                                       f"between 0.05 and 3600")

    def config(self) -> MasterConfig:
        given = {
            "fwd_mode": self["fwdmode"], "arp_mode": self["arpmode"], "infra": self["infra"],
            "vlans": self["vlans"], "vxlans": self["vxlans"], "pvt_subnet": self["pvt-subnet"],
        }
        explicit = frozenset(k for k, v in given.items() if v is not None)
        return MasterConfig(cluster_mode=self["mode"], explicit=explicit,
                            **{k: v for k, v in given.items() if v is not None})
