"""Kubernetes NodePort on the hosts' underlay addresses (issue 12 item 3).

A NodePort Service answers at ``<host's VTEP address>:<nodePort>`` on every host,
from another host and from anything on the underlay.  The path, and why:

* **In the host's own network namespace, by the kernel's NAT**: the underlay's
  packets reach a host on its VTEP address (the lab's ``br-ul`` internal port, a
  real host's uplink), i.e. in the host's netns, not on br-int: OVS sees them
  only as VXLAN.  Putting them on br-int would mean steering the host's own
  address through OVS (the uplink moved into the bridge, ARP for the VTEP
  answered by flows, the VXLAN port's traffic kept apart): a rebuild of the
  underlay for one feature.  Host access (``--host-access``, ``hostport.py``)
  already gives the host a leg in the default tenant's VRF (``contivh0``) whose
  packets pass the service stage like a container's, so NodePort is two NAT rules
  in front of it:

  - ``prerouting`` (and ``output``, for the host itself): ``daddr = VTEP,
    <proto> dport = nodePort`` -> DNAT to ``clusterIP:port``; br-int's service
    stage then load-balances to a pod exactly as for a pod client (select
    group, conntrack, policy after NAT, ClientIP affinity);
  - ``postrouting``: what was DNAT'ed to the VTEP and leaves by ``contivh0`` is
    masqueraded to the host's ``contivh0`` address, so the pod's reply comes back
    to this host (the only one that holds the connection's NAT), never straight
    to a client on the underlay that br-int cannot reach.

  The pod sees the host's ``172.19.x.y`` as its peer (Kubernetes'
  ``externalTrafficPolicy: Cluster`` does the same SNAT; ``Local`` is not done).
* **Routes**: each clusterIP (/32) via the host-access gateway, added to
  ``hostport``'s route set, so the forwarded packet leaves by ``contivh0`` and
  the reply passes strict reverse-path filtering; IPv4 forwarding is turned on
  in the host's netns (needed to forward underlay -> ``contivh0``).
* **Requires** ``--host-access`` (the route to the VRF) and a Service of the
  default tenant (the only tenant a host reaches); the rules are applied by the
  host-access loop, so they are on exactly when host access is.
* **State**: one nftables table ``ip contiv_nodeport`` owned by the agent,
  replaced atomically (``nft -f``: create, delete and define in one
  transaction) from the ``k8sService`` records in Redis on every host-access
  pass (10 s): level-triggered, idempotent, and an agent restart or a flushed
  ruleset is repaired within one pass; conntrack entries of established
  connections survive a replacement.  Nothing else in the host's ruleset is
  touched.
"""

from __future__ import annotations

import ipaddress
import subprocess
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.internet import threads
from twisted.logger import Logger

from contiv_sdn.model.shapes import BOOL, INT, STR, ListOf, Struct

log = Logger()

#: the nftables table the agent owns (family ip)
TABLE = "contiv_nodeport"
#: the Service types that have node ports
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
_PROTO = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

#: the part of a ``k8sService`` record this reads (``drivers/kubernetes/objects.py``)
SHAPE = Struct("K8sService", [
    ("clusterIP", STR), ("headless", BOOL), ("type", STR),
    ("ports", ListOf(Struct("K8sServicePort", [("port", INT), ("protocol", STR), ("nodePort", INT)])))])

#: (protocol, nodePort, clusterIP, port)
Entry = Tuple[str, int, str, int]


def entries(records: Mapping[str, str]) -> Tuple[List[Entry], List[str]]:
    """The node ports of the raw ``k8sService`` records (key ``ns/name`` -> JSON) and
    the clusterIPs to route: ``(entries sorted, ["cip/32", ...] sorted)``.

    A record that does not decode, a headless Service or one without a clusterIP
    gives nothing (the watcher's records are the API server's, already validated;
    the controller logs a bad one).  Two Services claiming one node port (the API
    server refuses it) keep the first by key, so every host picks the same."""
    out: Dict[Tuple[str, int], Entry] = {}
    routes = set()
    for key in sorted(records):
        try:
            rec = SHAPE.load(records[key])
            cip = str(ipaddress.IPv4Address(rec["clusterIP"] or ""))
        except Exception:  # noqa: BLE001 - a bad record gives no rule
            continue
        if rec["headless"]:
            continue
        routes.add(f"{cip}/32")
        if (rec["type"] or "ClusterIP") not in NODE_PORT_TYPES:
            continue
        for p in rec["ports"] or []:
            proto = _PROTO.get((p["protocol"] or "TCP").upper())
            node_port, port = p["nodePort"] or 0, p["port"] or 0
            if proto and 0 < node_port < 65536 and 0 < port < 65536:
                out.setdefault((proto, node_port), (proto, node_port, cip, port))
    return sorted(out.values()), sorted(routes)


def ruleset(vtep_ip: str, port: str, items: Sequence[Entry]) -> str:
    """The ``nft -f`` script that makes table :data:`TABLE` exactly this (one
    transaction: the table is created if absent, deleted, defined again)."""
    dnat = [f"ip daddr {vtep_ip} {proto} dport {np} dnat to {cip}:{p}" for proto, np, cip, p in items]
    body = "\n".join(f"    {r}" for r in dnat)
    return (f"table ip {TABLE}\ndelete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n"
            f"  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n"
            f"{body}\n  }}\n"
            f"  chain output {{\n    type nat hook output priority -100; policy accept;\n{body}\n  }}\n"
            f"  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    oifname \"{port}\" ct status dnat ct original ip daddr {vtep_ip} masquerade\n  }}\n"
            f"}}\n")


def _run(argv: Sequence[str], text: Optional[str] = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), input=text, capture_output=True, text=True, timeout=15)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def apply(script: str) -> None:
    """Forwarding on and the table replaced (blocking: run in a thread)."""
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1")
    _run(["nft", "-f", "-"], script)


def remove() -> None:
    """Drop the table (blocking); absent is fine."""
    subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True, timeout=15)


class NodePorts:
    """Called by the host-access pass (``HostPort(extra=...)``): reads the Services,
    applies the rules, returns the clusterIP routes for ``hostport`` to keep."""

    def __init__(self, vtep_ip: str, read_services: Callable[[], Any], port: str = "contivh0",
                 apply_fn: Callable[[str], None] = apply) -> None:
        self.vtep_ip, self.port = vtep_ip, port
        self.read_services = read_services
        self.apply_fn = apply_fn
        self.applied: Optional[List[Entry]] = None

    async def sync(self) -> List[str]:
        """One pass; raises on failure (the host-access loop logs it once and retries)."""
        items, routes = entries(await self.read_services())
        await threads.deferToThread(self.apply_fn, ruleset(self.vtep_ip, self.port, items))
        if items != self.applied:
            log.info("nodeport: {n} node port(s) on {vtep}: {ports}", n=len(items), vtep=self.vtep_ip,
                     ports=", ".join(f"{np}/{proto} -> {cip}:{p}" for proto, np, cip, p in items) or "none")
        self.applied = items
        return routes
