#!/usr/bin/env bash
# Installs what contiv-sdn needs on a Debian machine, only what is missing:
# Debian packages (redis-server, openvswitch-switch, iproute2, ...) and a venv
# with the project installed in editable mode.  The Vagrantfile runs this too.
# gcc + libc6-dev: contiv-cni's C shim (python -m drivers.cni.launcher --native DEST).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PKGS=(redis-server openvswitch-switch iproute2 gcc libc6-dev ethtool procps docker.io podman containernetworking-plugins busybox-static tcpdump dnsmasq-base dnsperf chromium chromium-driver)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install: missing Debian packages: ${missing[*]} (run as root or apt-get install them)" >&2
    exit 1
  fi
  echo "install: apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  # The packaged OVS service is not used: every OVS we run is private to a lab host.
  systemctl disable --now openvswitch-switch docker.socket docker containerd >/dev/null 2>&1 || true
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "install: creating venv $VENV"
  python3 -m venv "$VENV"
fi
echo "install: pip install -e ."
"$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat 2>&1 \
  | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import contiv_sdn, twisted, txredisapi, klein, os_ken, pyroute2, ovs, treq, yaml, hypothesis, dns.message, prometheus_client, openapi_spec_validator, selenium" \
  || { echo "install: the venv is broken; run 'make clean install'" >&2; exit 1; }
echo "install: done"
