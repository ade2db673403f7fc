"""``twistd netmaster`` command-line options."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Optional

from twisted.python import usage

from contiv_sdn.api.auth import DEFAULT_TOKEN_TTL
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
from contiv_sdn.ops.jsonlog import LOG_JSON_HELP
from contiv_sdn.ops.listen import METRICS_HELP, endpoint_fields, metrics_endpoint

DEFAULT_STATE_DIR = "/var/lib/contiv-sdn/netmaster"
#: Whether a non-loopback ``--listen`` without TLS and ``--auth`` (and without
#: ``--insecure``) is refused at start (the lab and the systemd unit, which listen
#: on every address, pass ``--insecure``).  A switch kept for the tests of both ways.
REFUSE_INSECURE_LISTEN = True
#: Loopback only: a bare ``twistd -n netmaster`` serves this host and nobody else.
DEFAULT_LISTEN = "127.0.0.1:9999"
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


def is_local_endpoint(endpoint: str) -> bool:
    """Whether a listening endpoint is reachable from this host only: a unix
    socket, or tcp/ssl bound to a loopback address.  No ``interface`` means
    every address (not local); ``systemd:`` and others are unknown (not local)."""
    fields = endpoint_fields(endpoint)
    kind = fields[0]
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for f in fields[1:]:
        name, eq, value = f.partition("=")
        if eq and name == "interface":
            try:
                return ipaddress.ip_address(value.strip("[]")).is_loopback
            except ValueError:
                return value == "localhost"
    return False


def _read_file(path: str, flag: str, binary: bool = False):
    try:
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    except OSError as e:
        raise usage.UsageError(f"{flag}: cannot read {path}: {e.strerror}")


class NetmasterOptions(usage.Options):
    synopsis = "[options]"
    longdesc = ("The contiv-sdn netmaster: Contiv-compatible REST API and object semantics on "
                "Redis.  Without --redis it runs a private redis-server in --state-dir.")
    optParameters = [
        ["listen", "l", DEFAULT_LISTEN, "where the REST API listens: a Twisted endpoint "
                                        "string, host:port or :port (the default is loopback "
                                        "only; any other address needs --tls-cert/--tls-key "
                                        "and --auth, or --insecure)"],
        ["tls-cert", None, None, "PEM certificate (chain) of the REST API: serve HTTPS"],
        ["tls-key", None, None, "PEM private key of --tls-cert"],
        ["admin-password-file", None, None, "with --auth and no user yet: the first 'admin' "
                                            "user's password (default: generated into "
                                            "STATE_DIR/admin.password)"],
        ["token-ttl", None, DEFAULT_TOKEN_TTL, "seconds a login token stays valid", float],
        ["login-max-failures", None, 5, "failed logins (per address and per user) before "
                                        "further attempts are delayed", int],
        ["login-lockout", None, 1.0, "first delay after --login-max-failures failed logins "
                                     "(doubling with each further failure, at most 900s)",
         float],
        ["redis", "r", None, "Redis URL: redis://host:port[/db] or unix:///path/to/sock "
                             "(default: an embedded redis-server under --state-dir)"],
        ["state-dir", None, DEFAULT_STATE_DIR, "state directory (embedded Redis data)"],
        ["ofp-listen", None, "tcp:6653", "where the OpenFlow controller listens for the hosts' "
                                         "switches (endpoint string, host:port or :port; "
                                         "'none' disables the controller)"],
        ["ofp-tls-cert", None, None, "PEM certificate of the OpenFlow listener: switches "
                                     "connect over TLS (ssl: controller target); needs "
                                     "--ofp-tls-key and --ofp-tls-ca"],
        ["ofp-tls-key", None, None, "PEM private key of --ofp-tls-cert"],
        ["ofp-tls-ca", None, None, "PEM CA certificate(s): a switch must present a certificate "
                                   "signed by it, or it is refused at the TLS handshake"],
        ["metrics-listen", None, "none", METRICS_HELP],
        ["log-json", None, None, LOG_JSON_HELP],
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
        ["apic-url", None, None, "ACI: the APIC(s) to mirror intent into, comma-separated "
                                 "https://host[:port] (needs --apic-user and "
                                 "--apic-password-file or --apic-cert-key)"],
        ["apic-user", None, "admin", "ACI: APIC user name"],
        ["apic-password-file", None, None, "ACI: file whose first line is the APIC password"],
        ["apic-cert-key", None, None, "ACI: PEM private key of the user's certificate, for "
                                      "signature-based authentication instead of a password"],
        ["apic-cert-name", None, None, "ACI: name of that certificate on the APIC user "
                                       "(uni/userext/user-U/usercert-NAME)"],
        ["kubeconfig", None, None, "--mode kubernetes: the kubeconfig of the API server to "
                                   "watch (default: the pod's service account when run "
                                   "in-cluster, KUBERNETES_SERVICE_HOST)"],
        ["k8s-default-network", None, "default-net", "--mode kubernetes: the network of pods "
                                                     "without an io.contiv.network label "
                                                     "(created at start if missing)"],
        ["k8s-default-subnet", None, "10.244.0.0/16", "--mode kubernetes: the subnet of "
                                                      "--k8s-default-network when it is "
                                                      "created"],
        ["k8s-default-tenant", None, "default", "--mode kubernetes: the tenant of "
                                                "--k8s-default-network"],
        ["apic-audit", None, 30.0, "ACI: seconds between reads of the APIC that find and "
                                   "repair changes made behind our back", float],
    ]

    optFlags = [
        ["auth", None, "require a login (Contiv's auth_proxy protocol: POST "
                       "/api/v1/auth_proxy/login/, then X-Auth-Token) and enforce roles "
                       "(admin: everything, ops: read-only)"],
        ["insecure", None, "allow the REST API on a non-loopback address without TLS and "
                           "--auth (anyone who reaches it can rewrite every network)"],
        ["redis-auth", None, "the embedded redis-server refuses clients without a password "
                             "(ACL users 'netmaster' and read-only 'agent', passwords "
                             "generated into STATE_DIR/redis.auth, 0600)"],
    ]

    def postOptions(self) -> None:
        self["listen-endpoint"] = listen_endpoint(self["listen"])
        if (self["tls-cert"] is None) != (self["tls-key"] is None):
            raise usage.UsageError("--tls-cert and --tls-key go together: give both")
        for name in ("tls-cert", "tls-key", "admin-password-file"):
            if self[name] is not None and not os.access(self[name], os.R_OK):
                raise usage.UsageError(f"--{name}: cannot read {self[name]}")
        tls = self["tls-cert"] is not None or self["listen-endpoint"].startswith("ssl:")
        self["exposed"] = not is_local_endpoint(self["listen-endpoint"])
        self["insecure-listen"] = None
        if self["exposed"] and not (tls and self["auth"]) and not self["insecure"]:
            missing = " and ".join(w for w, ok in (("TLS (--tls-cert/--tls-key)", tls),
                                                   ("--auth", self["auth"])) if not ok)
            why = (f"refusing to serve the REST API on {self['listen']} without {missing}: "
                   f"anyone who reaches it could rewrite every tenant's network.  Listen on "
                   f"127.0.0.1, add {missing}, or pass --insecure to accept the risk")
            if REFUSE_INSECURE_LISTEN:
                raise usage.UsageError(why)
            self["insecure-listen"] = why  # the service logs it as a warning
        if not 1 <= self["token-ttl"] <= 366 * 86400:
            raise usage.UsageError("--token-ttl must be between 1 second and a year")
        if not 1 <= self["login-max-failures"] <= 1000:
            raise usage.UsageError("--login-max-failures must be between 1 and 1000")
        if not 0.05 <= self["login-lockout"] <= 3600:
            raise usage.UsageError("--login-lockout must be between 0.05 and 3600 seconds")
        self["ofp-endpoint"] = (None if self["ofp-listen"] == "none"
                                else listen_endpoint(self["ofp-listen"]))
        self._ofp_tls()
        self["metrics-endpoint"] = metrics_endpoint(self["metrics-listen"])
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
        self["aci"] = self._aci_settings()
        self["kubernetes"] = self._k8s_settings()

    def _ofp_tls(self) -> None:
        """--ofp-tls-*: all three or none; files checked now, so a wrong one stops twistd
        before it starts instead of leaving netmaster without a switch listener."""
        from contiv_sdn.openflow.protocol import switch_tls_options, tls_listen_description
        names = ("ofp-tls-cert", "ofp-tls-key", "ofp-tls-ca")
        given = [n for n in names if self[n]]
        if not given:
            return
        if len(given) != len(names):
            missing = ", ".join(f"--{n}" for n in names if not self[n])
            raise usage.UsageError(f"OpenFlow TLS needs --ofp-tls-cert, --ofp-tls-key and "
                                   f"--ofp-tls-ca together; missing {missing}")
        if self["ofp-endpoint"] is None:
            raise usage.UsageError("--ofp-tls-* with --ofp-listen none: there is no OpenFlow "
                                   "listener to secure (drop one or the other)")
        try:
            switch_tls_options(self["ofp-tls-cert"], self["ofp-tls-key"], self["ofp-tls-ca"])
            self["ofp-endpoint"] = tls_listen_description(
                self["ofp-endpoint"], self["ofp-tls-cert"], self["ofp-tls-key"],
                self["ofp-tls-ca"])
        except ValueError as e:
            raise usage.UsageError(f"{e}") from None

    def _k8s_settings(self) -> Optional[dict]:
        """The Kubernetes watcher's settings with ``--mode kubernetes``, else None."""
        if self["mode"] != "kubernetes":
            if self["kubeconfig"]:
                raise usage.UsageError("--kubeconfig needs --mode kubernetes")
            return None
        if self["kubeconfig"]:
            if not os.access(self["kubeconfig"], os.R_OK):
                raise usage.UsageError(f"--kubeconfig: cannot read {self['kubeconfig']}")
        elif not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise usage.UsageError("--mode kubernetes needs --kubeconfig FILE (the API server "
                                   "to watch), or to run in a pod (KUBERNETES_SERVICE_HOST)")
        try:
            net = ipaddress.ip_network(self["k8s-default-subnet"], strict=False)
        except ValueError:
            net = None
        if net is None or net.version != 4 or net.prefixlen > 30:
            raise usage.UsageError(f"--k8s-default-subnet: {self['k8s-default-subnet']!r} is "
                                   f"not an IPv4 subnet of at least 4 addresses "
                                   f"(e.g. 10.244.0.0/16)")
        for name in ("k8s-default-network", "k8s-default-tenant"):
            if not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?", self[name]):
                raise usage.UsageError(f"--{name}: {self[name]!r} is not a valid name "
                                       f"(letters, digits, '.', '_', '-')")
        return {"kubeconfig": self["kubeconfig"], "default_network": self["k8s-default-network"],
                "default_subnet": str(net), "default_tenant": self["k8s-default-tenant"]}

    def _aci_settings(self) -> Optional[dict]:
        """The ACI reconciler's settings, or None without ``--apic-url``.

        Secrets come from files so they never show in ``ps``.
        """
        if not self["apic-url"]:
            for name in ("apic-password-file", "apic-cert-key", "apic-cert-name"):
                if self[name]:
                    raise usage.UsageError(f"--{name} needs --apic-url (the APIC to talk to)")
            return None
        urls = [u.strip() for u in self["apic-url"].split(",") if u.strip()]
        for u in urls:
            if not re.fullmatch(r"https?://[^/\s]+", u):
                raise usage.UsageError(f"--apic-url: {u!r} is not http(s)://host[:port]")
        if not 1 <= self["apic-audit"] <= 3600:
            raise usage.UsageError("--apic-audit must be a number of seconds between 1 and 3600")
        settings = {"urls": urls, "user": self["apic-user"], "audit": self["apic-audit"]}
        if self["apic-cert-key"]:
            if not self["apic-cert-name"]:
                raise usage.UsageError("--apic-cert-key needs --apic-cert-name (the certificate's "
                                       "name on the APIC user)")
            settings["cert_key"] = _read_file(self["apic-cert-key"], "--apic-cert-key", binary=True)
            settings["cert_name"] = self["apic-cert-name"]
        elif self["apic-password-file"]:
            settings["password"] = _read_file(self["apic-password-file"],
                                              "--apic-password-file").split("\n", 1)[0]
        else:
            raise usage.UsageError("--apic-url needs --apic-password-file or --apic-cert-key "
                                   "to log in")
        return settings

    def config(self) -> MasterConfig:
        given = {
            "fwd_mode": self["fwdmode"], "arp_mode": self["arpmode"], "infra": self["infra"],
            "vlans": self["vlans"], "vxlans": self["vxlans"], "pvt_subnet": self["pvt-subnet"],
        }
        explicit = frozenset(k for k, v in given.items() if v is not None)
        return MasterConfig(cluster_mode=self["mode"], explicit=explicit,
                            **{k: v for k, v in given.items() if v is not None})
