"""Command-line options of ``twistd netplugin`` and their defaults.

Defaults that depend on the machine (host name, VTEP address, OVSDB socket) are
resolved here, once, before the reactor runs, so the service itself only sees
final values.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import List

from twisted.python import usage

from contiv_sdn.ops.jsonlog import LOG_JSON_HELP
from contiv_sdn.ops.listen import METRICS_HELP, metrics_endpoint

DEFAULT_NETMASTER = "http://127.0.0.1:9999"
DEFAULT_CONTROLLER = "tcp:127.0.0.1:6653"
DEFAULT_REDIS = "unix:///var/lib/contiv-sdn/netmaster/redis.sock"
DEFAULT_SOCKET = "/run/contiv/netplugin.sock"
DEFAULT_STATE_DIR = "/var/lib/contiv-sdn/netplugin"


def default_ovs_db() -> str:
    rundir = os.environ.get("OVS_RUNDIR") or "/var/run/openvswitch"
    return f"unix:{os.path.join(rundir, 'db.sock')}"


def _check_controller(target: str) -> str:
    kind, _, rest = target.partition(":")
    if kind not in ("tcp", "ssl", "unix") or not rest:
        raise usage.UsageError(f"--controller {target!r}: expected tcp:IP:PORT (or ssl:/unix:)")
    if kind in ("tcp", "ssl"):
        host, _, port = rest.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
            if not 0 < int(port) < 65536:
                raise ValueError
        except ValueError:
            raise usage.UsageError(f"--controller {target!r}: expected {kind}:IP:PORT "
                                   "(an IP address, not a name: OVS does not resolve)") from None
    return target


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("The contiv-sdn host agent: registers this host, sets up br-int over OVSDB with "
                "the netmaster(s) as OpenFlow controllers, and plumbs container endpoints "
                "(local API on a UNIX socket).")

    optParameters = [
        ["host", None, None, "this host's name (default: the hostname)"],
        ["vtep-ip", None, None, "VXLAN tunnel endpoint address (default: source address of "
                                "the default route)"],
        ["netmaster", None, DEFAULT_NETMASTER, "netmaster URL, or several comma-separated "
                                               "(URL1,URL2: tried in turn when one is down)"],
        ["netmaster-user", None, None, "the netmaster user (role node) this agent logs in as "
                                       "(default: the host name, --host)"],
        ["netmaster-password-file", None, None, "file holding that user's password (first "
                                                "line); turns the login on (a netmaster with "
                                                "--auth)"],
        ["netmaster-ca", None, None, "PEM CA bundle that verifies an https --netmaster "
                                     "(default: the system's trust store)"],
        ["redis", None, DEFAULT_REDIS, "Redis URL the Docker driver reads Contiv's state from "
                                       "(redis://host:port[/db] or unix:///path); netplugin "
                                       "never writes it: a read-only user or replica will do"],
        ["ofp-tls-cert", None, None, "PEM certificate of this host's switch (signed by the CA "
                                     "netmaster's --ofp-tls-ca names): set as OVS's SSL "
                                     "record; tcp: controllers become ssl:"],
        ["ofp-tls-key", None, None, "PEM private key of --ofp-tls-cert"],
        ["ofp-tls-ca", None, None, "PEM CA certificate that netmaster's OpenFlow certificate "
                                   "must chain to"],
        ["ovs-db", None, None, "OVSDB socket (default: unix:$OVS_RUNDIR/db.sock or "
                               "unix:/var/run/openvswitch/db.sock)"],
        ["datapath-type", None, "system", "br-int datapath: system (kernel) or netdev "
                                          "(userspace)"],
        ["bridge", None, "br-int", "integration bridge name"],
        ["uplink", None, None, "interface added to the bridge as the VLAN trunk (optional)"],
        ["underlay-mtu", None, 1500, "MTU of the underlay (container MTU is derived)", int],
        ["socket", None, DEFAULT_SOCKET, "the local API's UNIX socket (mode 0600)"],
        ["state-dir", None, DEFAULT_STATE_DIR, "directory for the agent's state"],
        ["refresh", None, 30.0, "seconds between host registrations with the netmaster "
                                "(the host is listed live for 3 of them)", float],
        ["reconcile-interval", None, 60.0, "seconds between endpoint reconciles "
                                           "(0 = only at start)", float],
        ["dns-listen", None, None, "serve DNS service discovery (UDP+TCP) on these addresses, "
                                   "IP:port[,IP:port...]; askers are identified by source "
                                   "address; also turns on the serving path (containers' DNS to any "
                                   "resolver is answered here per tenant, see "
                                   "contiv_sdn/agent/dnsport.py) (default: no DNS server)"],
        ["dns-upstream", None, None, "resolvers for names that are not Contiv's, "
                                     "IP[:port][,...] (default: the nameservers of "
                                     "/etc/resolv.conf)"],
        ["dns-netns", None, "contiv-dns", "network namespace of the DNS serving path (made if "
                                          "missing, kept across restarts so they replace no flow)"],
        ["dns-domain", None, "", "optional domain suffix of Contiv's names (e.g. contiv.local: "
                                 "db.contiv.local, web.contiv-net.contiv.local)"],
        ["dns-ttl", None, 1, "TTL of Contiv's answers in seconds (short: answers follow "
                             "endpoints and groups)", int],
        ["docker-plugin", None, None, "serve Docker's network+IPAM driver 'netplugin' on this "
                                      "socket (e.g. /run/docker/plugins/netplugin.sock)"],
        ["docker", None, "unix:///var/run/docker.sock", "the Docker engine whose networks "
                                                       "follow Contiv (with --docker-plugin)"],
        ["metrics-listen", None, "none", METRICS_HELP],
        ["log-json", None, None, LOG_JSON_HELP],
    ]

    optFlags = [
        ["host-access", None, "give this host access to the default tenant's containers and "
                              "VIPs: an OVS internal port contivh0 with an address from "
                              "172.19.0.0/16 and routes to the tenant's VXLAN subnets (see "
                              "contiv_sdn/pipeline/hostaccess.py)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["controllers"] = []

    def opt_controller(self, target: str) -> None:
        """OpenFlow controller target tcp:IP:PORT (repeatable or comma-separated: every
        netmaster; default tcp:127.0.0.1:6653)."""
        for one in target.split(","):
            self["controllers"].append(_check_controller(one.strip()))

    def postOptions(self) -> None:
        self["metrics-endpoint"] = metrics_endpoint(self["metrics-listen"])
        if not self["controllers"]:
            self["controllers"] = [DEFAULT_CONTROLLER]
        # one target once, order kept
        seen: List[str] = []
        for c in self["controllers"]:
            if c not in seen:
                seen.append(c)
        self["controllers"] = seen
        if self["datapath-type"] not in ("system", "netdev"):
            raise usage.UsageError("--datapath-type must be system or netdev")
        if not self["host"]:
            self["host"] = socket.gethostname()
        if not self["ovs-db"]:
            self["ovs-db"] = default_ovs_db()
        if not (576 <= self["underlay-mtu"] <= 65535):
            raise usage.UsageError("--underlay-mtu must be between 576 and 65535")
        if self["vtep-ip"]:
            try:
                ipaddress.IPv4Address(self["vtep-ip"])
            except ValueError:
                raise usage.UsageError(f"--vtep-ip {self['vtep-ip']!r} is not an IPv4 "
                                       "address") from None
        else:
            from contiv_sdn.agent.plumbing import default_route_source
            src = default_route_source()
            if not src:
                raise usage.UsageError("no default route to take the VTEP address from: "
                                       "pass --vtep-ip")
            self["vtep-ip"] = src
        if not 0 < self["refresh"] <= 86400:
            raise usage.UsageError("--refresh must be more than 0 and at most 86400 seconds")
        if len(self["bridge"]) > 15:
            raise usage.UsageError("--bridge: at most 15 characters (it is also an interface)")
        self._dns_options()
        self._netmaster_login()
        self._ofp_tls()

    def _ofp_tls(self) -> None:
        """--ofp-tls-*: all three or none; with them every controller is ``ssl:`` (a
        ``tcp:`` one is turned into ``ssl:`` at the same address), without them an
        ``ssl:`` controller is refused (OVS would have no certificate to offer)."""
        names = ("ofp-tls-cert", "ofp-tls-key", "ofp-tls-ca")
        given = [n for n in names if self[n]]
        self["ofp-tls"] = None
        if not given:
            if any(c.startswith("ssl:") for c in self["controllers"]):
                raise usage.UsageError("an ssl: --controller needs --ofp-tls-cert, "
                                       "--ofp-tls-key and --ofp-tls-ca (the switch's "
                                       "certificate and the CA of netmaster's)")
            return
        if len(given) != len(names):
            missing = ", ".join(f"--{n}" for n in names if not self[n])
            raise usage.UsageError(f"OpenFlow TLS needs --ofp-tls-cert, --ofp-tls-key and "
                                   f"--ofp-tls-ca together; missing {missing}")
        for n in names:
            if not os.access(self[n], os.R_OK):
                raise usage.UsageError(f"--{n}: cannot read {self[n]}")
        # OVS opens them itself, maybe from another working directory
        self["ofp-tls"] = {n: os.path.abspath(self[n]) for n in names}
        targets: List[str] = []
        for c in self["controllers"]:
            kind, _, rest = c.partition(":")
            t = f"ssl:{rest}" if kind == "tcp" else c
            if t not in targets:
                targets.append(t)
        self["controllers"] = targets

    def _netmaster_login(self) -> None:
        """--netmaster-*: the files are read and the credential tried now, so a wrong
        one stops twistd with what to fix (see contiv_sdn.agent.netmaster)."""
        from contiv_sdn.agent.netmaster import check_credentials
        self["netmaster-user"] = self["netmaster-user"] or self["host"]
        try:
            check_credentials(self["netmaster"], self["netmaster-user"],
                              self["netmaster-password-file"], self["netmaster-ca"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def _dns_options(self) -> None:
        """--dns-*: parsed here, so a wrong address stops twistd before it starts."""
        from contiv_sdn.dns.service import parse_listen
        from contiv_sdn.dns.upstream import parse_upstream, resolv_conf_upstreams
        listen = [a.strip() for a in (self["dns-listen"] or "").split(",") if a.strip()]
        try:
            for a in listen:
                parse_listen(a)
            ups = ([parse_upstream(u) for u in self["dns-upstream"].split(",") if u.strip()]
                   if self["dns-upstream"] else resolv_conf_upstreams())
        except ValueError as e:
            raise usage.UsageError(f"--dns-listen/--dns-upstream: {e}") from None
        if not 0 <= self["dns-ttl"] <= 86400:
            raise usage.UsageError("--dns-ttl must be between 0 and 86400 seconds")
        self["dns-listen-addrs"] = listen
        self["dns-upstreams"] = ups
