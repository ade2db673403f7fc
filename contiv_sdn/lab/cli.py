"""``python -m contiv_sdn.lab``: up / down / status / exec / container add|rm.

A thin shell over :class:`contiv_sdn.lab.core.Lab`; each command finds the lab
again through ``<root>/state.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from contiv_sdn.lab.core import DEFAULT_ROOT, Lab, LabConfig
from contiv_sdn.lab.http import ApiError
from contiv_sdn.lab.sh import LabError


def _say(msg: str) -> None:
    """Progress line; a closed stdout (``| head``) must not abort an up or a down midway."""
    try:
        print(msg, flush=True)
    except (BrokenPipeError, ValueError):
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass


def _parser() -> argparse.ArgumentParser:
    d = LabConfig()
    p = argparse.ArgumentParser(prog="python -m contiv_sdn.lab",
                                description="N simulated hosts (network namespaces with their "
                                            "own OVS) running the contiv-sdn services.")
    p.add_argument("--root", default=DEFAULT_ROOT,
                   help=f"where state, pidfiles and logs live (default {DEFAULT_ROOT}; "
                        "env CONTIV_LAB_ROOT)")
    # --root is also accepted after the command (`down --all --root DIR`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(parent, name: str, **kw) -> argparse.ArgumentParser:
        return parent.add_parser(name, parents=[common], **kw)

    up = add(sub, "up", help="build the hosts and start the services")
    up.add_argument("--hosts", type=int, default=d.hosts, help="number of hosts (node1..nodeN)")
    up.add_argument("--no-services", action="store_true",
                    help="hosts, underlay and OVS only (no redis/netmaster/netplugin)")
    up.add_argument("--prefix", default=d.prefix, help="host name prefix (default node)")
    up.add_argument("--link-prefix", default=d.link_prefix,
                    help="prefix of root-namespace links (default ctv)")
    up.add_argument("--subnet", default=d.subnet, help="underlay subnet (default %(default)s)")
    up.add_argument("--netmaster-port", type=int, default=d.netmaster_port)
    up.add_argument("--ofp-port", type=int, default=d.ofp_port)
    up.add_argument("--mtu", type=int, default=d.mtu, help="underlay MTU")
    up.add_argument("--aci", action="store_true",
                    help="ACI mode: run a stand-in APIC (not an APIC) on loopback and start "
                         "netmaster with --infra aci mirroring intent into it")
    up.add_argument("--apic-port", type=int, default=d.apic_port,
                    help="the stand-in APIC's port on 127.0.0.1 (default %(default)s)")
    up.add_argument("--secure", action="store_true",
                    help="every channel authenticated: the lab makes a CA (<root>/pki/), "
                         "netmaster serves HTTPS with --auth (admin password in "
                         "<root>/admin.password) and --redis-auth, netplugins log in as node "
                         "users, OpenFlow runs over TLS with a certificate per switch")
    up.add_argument("--swarm", action="store_true",
                    help="the hosts' dockerds form a Docker swarm: node1 the manager, the "
                         "others workers joined over the underlay, the managed plugin "
                         "netplugin:swarm on each (prints the DOCKER_HOST to use)")
    up.add_argument("--kubernetes", action="store_true",
                    help="Kubernetes mode: a Kubernetes API server STAND-IN (not "
                         "kube-apiserver) on 127.0.0.1:--kubeapi-port, netmaster --mode "
                         "kubernetes, a kubelet stand-in per host running the pods scheduled "
                         "there (spec.nodeName) through contiv-cni; kubeconfig at "
                         "<root>/kubeconfig")
    up.add_argument("--kubeapi-port", type=int, default=d.kubeapi_port,
                    help="the API server stand-in's port (default %(default)s)")
    up.add_argument("--netmasters", type=int, default=d.netmasters,
                    help="run N netmasters (REST on --netmaster-port+i, OpenFlow on "
                         "--ofp-port+i); one is OpenFlow MASTER of every switch, the others "
                         "stand by; the lab then runs Redis itself (see --redis-sentinel)")
    up.add_argument("--redis-sentinel", action="store_true",
                    help="Redis as a primary, 2 replicas and 3 sentinels (lab processes under "
                         "<root>/redis); every service gets --redis sentinel://...")
    up.add_argument("--host-access", action="store_true",
                    help="each host's own namespace reaches the default tenant's containers "
                         "and VIPs, and containers reach their host (netplugin "
                         "--host-access: port contivh0, 172.19.x.y)")
    up.add_argument("--no-docker", action="store_true",
                    help="no dockerd per host (by default each host runs one, socket "
                         "<root>/<host>/docker.sock, with netplugin as its network driver)")

    down = add(sub, "down", help="remove everything the lab created (idempotent)")
    down.add_argument("--all", action="store_true", help="also remove the root directory")
    down.add_argument("--prefix", default=None,
                      help="host prefix to scan for when there is no state file (default node)")
    down.add_argument("--link-prefix", default=None,
                      help="link prefix to scan for when there is no state file (default ctv)")

    st = add(sub, "status", help="hosts, processes, bridges, flows, containers")
    st.add_argument("--json", action="store_true")

    ex = add(sub, "exec", help="run a command in a host or container namespace")
    ex.add_argument("target", help="node1, node1-web, web, or a pod as namespace/name "
                                   "(--kubernetes)")
    ex.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")

    pm = add(sub, "podman", help="podman on a host, CNI through contiv-cni (network contiv-net)")
    pm.add_argument("host", help="node1 ... nodeN")
    pm.add_argument("argv", nargs=argparse.REMAINDER, help="-- PODMAN ARGS...")

    ct = add(sub, "container", help="container namespaces with netplugin endpoints")
    csub = ct.add_subparsers(dest="ccmd", required=True)
    cadd = add(csub, "add", help="create HOST-NAME with an endpoint in --net")
    cadd.add_argument("host")
    cadd.add_argument("name")
    cadd.add_argument("--net", required=True, help="network name")
    cadd.add_argument("--group", default=None, help="endpoint group")
    cadd.add_argument("--tenant", default="default")
    cadd.add_argument("--ip", default=None, help="requested IPv4 address")
    rm = add(csub, "rm", help="delete the endpoint and the namespace")
    rm.add_argument("host")
    rm.add_argument("name")
    add(csub, "list", help="containers with their addresses")
    return p


def _print_status(st: dict) -> None:
    print(f"lab {st['root']}: {st['phase']}")
    for key, svc in st["services"].items():
        if key.startswith("netplugin:"):
            continue
        url = f"  {st['netmaster_url']}" if key == "netmaster" else ""
        if key == "netmaster" and st.get("secure"):
            url += f" (secure: CA {st['secure']['ca']})"
        print(f"  {key:<10} {'alive' if svc['alive'] else 'DEAD':<6} pid {svc['pid'] or '-'}"
              f"{url}  log {svc['log']}")
    ha = st.get("ha")
    if ha:
        for n in ha["netmasters"]:
            print(f"  {n['key']:<12} {n['role']:<13} {n['url']}  OpenFlow {n['target']}")
        primary = ha.get("redis_primary")
        print(f"  redis      {ha['redis_url']}"
              + (f"  primary port {primary or 'UNKNOWN'}" if "redis_primary" in ha else ""))
    if st.get("swarm"):
        print(f"  swarm      manager {st['swarm']['manager']}  "
              f"DOCKER_HOST={st['swarm']['docker_host']}")
    for h in st["hosts"]:
        np = h.get("netplugin")
        np_s = "" if np is None else f" netplugin {'alive' if np else 'DEAD'}"
        flows = "" if h["br_int_flows"] is None else f" br-int flows {h['br_int_flows']}"
        for target, up in h.get("controllers", {}).items():
            flows += f" controller {target} {'connected' if up else 'NOT connected'}"
        print(f"  {h['name']:<8} {h['vtep_ip']:<15} netns {'yes' if h['netns'] else 'NO'}"
              f" ovs {'alive' if h['ovs'] else 'DEAD'}{np_s}"
              f" bridges [{' '.join(h['bridges'])}]{flows}")
    for c in st["containers"]:
        print(f"  {c['netns']:<16} {c['ip'] or '-':<15} {c['mac'] or '-':<17} "
              f"{c['tenant']}/{c['network']}{'/' + c['group'] if c['group'] else ''}"
              f"{'' if c['alive'] else '  (namespace GONE)'}")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "up":
            lab = Lab(hosts=args.hosts, root=args.root, start_services=not args.no_services,
                      prefix=args.prefix, link_prefix=args.link_prefix, subnet=args.subnet,
                      netmaster_port=args.netmaster_port, ofp_port=args.ofp_port, mtu=args.mtu,
                      docker=not (args.no_docker or args.no_services), progress=_say,
                      aci=args.aci, apic_port=args.apic_port, secure=args.secure,
                      swarm=args.swarm, kubernetes=args.kubernetes,
                      kubeapi_port=args.kubeapi_port, netmasters=args.netmasters,
                      redis_sentinel=args.redis_sentinel, host_access=args.host_access)
            lab.up()
        elif args.cmd == "down":
            try:
                lab = Lab.load(args.root, progress=_say)
            except LabError:
                lab = Lab(hosts=1, root=args.root, prefix=args.prefix or "node",
                          link_prefix=args.link_prefix or "ctv", progress=_say)
            lab.down(all=args.all)
            _say("lab down")
        elif args.cmd == "status":
            st = Lab.load(args.root).status()
            if args.json:
                print(json.dumps(st, indent=1))
            else:
                _print_status(st)
        elif args.cmd == "exec":
            cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not cmd:
                raise LabError("usage: exec TARGET -- CMD [ARGS...]")
            lab = Lab.load(args.root)
            netns = lab.netns_of(args.target)
            env = dict(os.environ)
            env.update(lab.exec_env(args.target))
            sys.stdout.flush()
            os.execvpe("ip", ["ip", "netns", "exec", netns] + cmd, env)
        elif args.cmd == "podman":
            cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not cmd:
                raise LabError("usage: podman HOST -- ARGS (e.g. run -d --network contiv-net "
                               "busybox:local sleep 600)")
            podman = Lab.load(args.root, progress=_say).podman(args.host)
            sys.stdout.flush()
            argv = podman.argv(*cmd)
            os.execvpe(argv[0], argv, podman.env())
        elif args.cmd == "container":
            lab = Lab.load(args.root, progress=_say)
            if args.ccmd == "add":
                c = lab.add_container(args.host, args.name, args.net, group=args.group,
                                      tenant=args.tenant, ip=args.ip)
                print(json.dumps(c.endpoint, indent=1, sort_keys=True))
            elif args.ccmd == "rm":
                lab.remove_container(args.host, args.name)
            else:
                for c in lab.status()["containers"]:
                    print(f"{c['netns']:<16} {c['ip'] or '-':<15} {c['mac'] or '-':<17} "
                          f"{c['tenant']}/{c['network']}")
    except (LabError, ApiError) as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output cut short by the reader; the work is done
        sys.stdout = open(os.devnull, "w")
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130
    return 0
