"""`make demo`: the seed README's walkthrough on a local two-host lab.

Brings the lab up (hosts ``node1`` and ``node2``: namespaces with their own
OVS, dockerd and netplugin; netmaster with its embedded Redis), runs the
seed's ``netctl`` lines verbatim, ``docker run``s ``web`` on node1 and ``db``
on node2, pings db from web by name (``ping db``: netplugin DNS) over the flows the controller pushed, then the
policy part of the seed, and leaves everything running for the user to
explore.  ``--down`` removes it.

``--secure`` runs the same walkthrough on a ``lab up --secure`` lab: netmaster serves
HTTPS with ``--auth`` (netctl logged in by the lab as admin: the seed's lines run
unchanged), each netplugin and its Docker driver log in as their host's ``node`` user,
switches speak OpenFlow over TLS with their own certificates, Redis needs passwords.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional

from contiv_sdn.lab.core import DEFAULT_ROOT, Lab, LabError

#: where the demo's netmaster serves Prometheus metrics (the README's example port)
METRICS_PORT = 9180

SEED_NET = "netctl net create contiv-net --subnet=20.1.1.0/24 --gateway=20.1.1.254 --pkt-tag=1001"
SEED_POLICY = [
    "netctl policy create prod_web",
    "netctl policy rule-add prod_web 1 -direction=in -protocol=tcp -action=deny",
    "netctl policy rule-add prod_web 2 -direction=in -protocol=tcp -port=80 -action=allow -priority=10",
    "netctl policy rule-add prod_web 3 -direction=in -protocol=tcp -port=443 -action=allow -priority=10",
    "netctl group create contiv-net web -policy=prod_web",
]


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def netctl(line: str, env: Dict[str, str]) -> None:
    """Run one seed line exactly as a user types it, showing it and its output.

    ``env``: the lab's :meth:`~contiv_sdn.lab.core.Lab.netctl_env` (the netmaster's URL;
    with ``--secure`` also the CA that verifies it and the home holding the lab's login),
    so the line needs no flag the seed does not have."""
    print(f"$ {line}", flush=True)
    argv = shlex.split(line)
    exe = os.path.join(os.path.dirname(sys.executable), "netctl")
    proc = subprocess.run([exe, *argv[1:]], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print(out, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo: '{line}' failed (exit {proc.returncode}); the lab is still up: "
                         f"'make demo-down' removes it")


def docker(lab: Lab, host: str, line: str, check: bool = True) -> str:
    """Run a seed ``docker …`` line on a lab host's own engine, showing it as typed there."""
    print(f"{host}$ {line}", flush=True)
    proc = lab.docker(host, *shlex.split(line)[1:], check=False, timeout=120)
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print(out, flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: '{line}' failed on {host}; the lab is still up: "
                         f"'make demo-down' removes it")
    return proc.stdout.strip()


def container_ip(lab: Lab, host: str, name: str) -> str:
    return lab.docker(host, "inspect", "-f",
                      "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name,
                      timeout=30).stdout.strip()


def wait_for_network(lab: Lab, host: str, name: str, timeout: float = 30) -> None:
    """netplugin creates the docker network from the Contiv object; it takes a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = lab.docker(host, "network", "ls", "--format", "{{.Name}}", check=False).stdout
        if name in names.split():
            return
        time.sleep(0.3)
    raise SystemExit(f"demo: docker network {name} did not appear on {host}; see "
                     f"{lab.root}/{host}/netplugin.log")


def http_get(lab: Lab, host: str, client: str, ip: str, port: int) -> str:
    """What ``client`` gets for ``GET /`` on ip:port with a new connection (busybox nc, 3 s)."""
    return lab.docker(host, "exec", client, "sh", "-c",
                      f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}",
                      check=False, timeout=30).stdout


def policy_in_action(lab: Lab, client_host: str, web1_ip: str) -> bool:
    """Serve 80 and 8080 in web1, then show prod_web: db on the other host is served on 80
    (rule 2 allows it) and gets no connection on 8080 (rule 1 denies incoming TCP).

    The rules reach the switches a moment after the REST calls returned, so each
    answer is retried for a few seconds before the demo says the policy failed.
    """
    step("Policy in action: web1 serves ports 80 and 8080; prod_web allows only 80 (and 443)")
    for port in (80, 8080):
        docker(lab, "node1", f"docker exec web1 httpd -p {port} -h /var/www")
    lab.docker("node1", "exec", "web1", "sh", "-c", "echo hello-from-web1 > /var/www/index.html",
               timeout=30)
    shown = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {web1_ip}"
    for port, want in ((80, True), (8080, False)):
        deadline = time.monotonic() + 10
        while True:
            got = "hello-from-web1" in http_get(lab, client_host, "db", web1_ip, port)
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"{client_host}$ docker exec db sh -c \"{shown} {port}\"", flush=True)
        if got:
            print("hello-from-web1", flush=True)
            say(f"port {port}: served (rule 2 allows incoming TCP to 80)" if want else
                f"port {port}: served although rule 1 denies incoming TCP: the policy is NOT "
                "enforced; see 'python -m contiv_sdn.lab status' and the netmaster log")
        else:
            say(f"port {port}: no connection within 3 s (rule 1 denies incoming TCP; the "
                f"switch drops the SYN)" if not want else
                f"port {port}: no answer although rule 2 allows it; see "
                "'python -m contiv_sdn.lab status' and the netmaster log")
        if got != want:
            return False
    docker(lab, "node1", f"docker exec web1 ping -c 1 {container_ip(lab, client_host, 'db')}")
    say("and web1 still reaches out: the replies to its own ping pass (policy is stateful)")
    return True


def up(hosts: int, secure: bool = False) -> int:
    step(f"Bringing up a {hosts}-host lab (namespaces node1..node{hosts}: OVS, dockerd, netplugin each)"
         + ("; secure: HTTPS + logins, OpenFlow over TLS, Redis passwords" if secure else ""))
    lab = Lab(hosts=hosts, root=DEFAULT_ROOT, docker=True, progress=say,
              metrics_port=METRICS_PORT, secure=secure)
    try:
        lab.up()
    except LabError as e:
        print(f"demo: the lab did not come up: {e}\n"
              f"demo: 'make demo-down' removes a previous demo lab", file=sys.stderr)
        return 1
    env = lab.netctl_env()
    node2 = f"node{min(2, hosts)}"

    step("Step 1: create a network")
    netctl(SEED_NET, env)
    netctl("netctl net ls", env)
    for h in ("node1", node2):
        wait_for_network(lab, h, "contiv-net")

    step("Step 2: run containers on two hosts (busybox:local stands in for ubuntu: no registry here)")
    docker(lab, "node1", "docker run -itd --name=web --net=contiv-net busybox:local sh")
    docker(lab, node2, "docker run -itd --name=db --net=contiv-net busybox:local sh")
    web_ip, db_ip = container_ip(lab, "node1", "web"), container_ip(lab, node2, "db")
    say(f"web on node1 has {web_ip}; db on {node2} has {db_ip}")

    step("On node1, ping the container on node2 by name: the seed's `ping db` (the name "
         "resolves through node1's netplugin DNS; VXLAN between the hosts)")
    ok = False
    for _ in range(10):
        if lab.docker("node1", "exec", "web", "ping", "-c", "1", "-W", "1", "db",
                      check=False).returncode == 0:
            ok = True
            break
        time.sleep(1)
    docker(lab, "node1", "docker exec web ping -c 2 db", check=ok)
    if not ok:
        print("demo: web cannot reach db by name; see 'python -m contiv_sdn.lab status' and "
              "the netplugin log of node1", file=sys.stderr)
        return 1
    say(f"db resolved to {db_ip}: no --dns and no resolv.conf edit; Docker's resolver asked, "
        "br-int handed the query to the netplugin's DNS for tenant default")

    step(f"CNI: a podman container on {node2} through contiv-cni, reached from web on node1")
    podman = lab.podman(node2)
    print(f"{node2}$ podman run -d --name=pod --network contiv-net busybox:local sleep 3600",
          flush=True)
    podman.run("run", "-d", "--name=pod", "--network", "contiv-net", "busybox:local",
               "sleep", "3600", timeout=120)
    pod_ip = podman.run("exec", "pod", "ip", "-o", "-4", "addr", "show", "eth0") \
        .stdout.split()[3].split("/")[0]
    say(f"pod on {node2} has {pod_ip}")
    docker(lab, "node1", f"docker exec web ping -c 2 {pod_ip}")

    step("Using policies: the seed's policy, rules and endpoint group")
    for line in SEED_POLICY:
        netctl(line, env)
    netctl("netctl policy rule-ls prod_web", env)
    netctl("netctl group ls", env)
    wait_for_network(lab, "node1", "web.contiv-net")
    docker(lab, "node1", "docker network ls")
    docker(lab, "node1", "docker run -itd --name=web1 --net web.contiv-net busybox:local sh")
    web1_ip = container_ip(lab, "node1", "web1")
    say(f"web1 (group web) on node1 has {web1_ip}")
    if not policy_in_action(lab, node2, web1_ip):
        return 1

    d1 = lab.docker_socket("node1")
    step("The lab is up. Try:")
    exports = "\n".join(f"  export {k}={shlex.quote(v)}" for k, v in env.items())
    print(f"""  source .venv/bin/activate        # netctl and the lab CLI
{exports}
  netctl net ls
  netctl net inspect contiv-net
  python -m contiv_sdn.lab status
  docker -H unix://{d1} ps
  docker -H unix://{d1} exec web ping -c 2 db
  python -m contiv_sdn.lab exec node1 -- ovs-ofctl -O OpenFlow13 dump-flows br-int
  python -m contiv_sdn.lab podman {node2} -- ps
  make demo-down""")
    step("Watch it")
    print(f"  web view of the fabric (live): {lab.web_url}", flush=True)
    print(f"  Prometheus metrics:            {lab.metrics_url}", flush=True)
    return 0


def down() -> int:
    step("Removing the demo lab")
    try:
        lab = Lab.load(DEFAULT_ROOT, progress=say)
    except (LabError, FileNotFoundError):
        lab = Lab(hosts=2, root=DEFAULT_ROOT, progress=say)
    lab.down(all=True)
    say("down")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m contiv_sdn.demo", description=__doc__)
    p.add_argument("--down", action="store_true", help="remove the demo lab")
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--secure", action="store_true",
                   help="the lab with every channel authenticated (lab up --secure)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (network namespaces, OVS); run it with sudo", file=sys.stderr)
        return 1
    return down() if args.down else up(args.hosts, secure=args.secure)


if __name__ == "__main__":
    sys.exit(main())
