"""Where the Kubernetes API server is and how to log in to it.

Two sources, as client-go has them:

* a kubeconfig file (``--kubeconfig``): its ``current-context`` names a cluster
  (``server``, ``certificate-authority[-data]``, ``insecure-skip-tls-verify``) and a
  user (``token``, ``tokenFile``, ``client-certificate[-data]``/``client-key[-data]``,
  ``username``/``password``); relative paths are relative to the file;
* in-cluster (the netmaster run as a pod): ``KUBERNETES_SERVICE_HOST``/``_PORT``, the
  service account's token and CA at ``/var/run/secrets/kubernetes.io/serviceaccount``.
  The token file is re-read at every (re)connection: bound tokens are rotated by the
  kubelet.

The file is YAML (JSON is YAML too); it is decoded through a declared shape, so a
wrong type is refused with Go's text naming the field.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.shapes import BOOL, STR, ListOf, Struct, loads

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_MAX_FILE = 4 << 20

_CLUSTER = Struct("Cluster", [
    ("server", STR), ("certificate-authority", STR), ("certificate-authority-data", STR),
    ("insecure-skip-tls-verify", BOOL), ("tls-server-name", STR),
])
_USER = Struct("AuthInfo", [
    ("token", STR), ("tokenFile", STR), ("client-certificate", STR),
    ("client-certificate-data", STR), ("client-key", STR), ("client-key-data", STR),
    ("username", STR), ("password", STR),
])
_CONTEXT = Struct("Context", [("cluster", STR), ("user", STR), ("namespace", STR)])
KUBECONFIG = Struct("Config", [
    ("current-context", STR),
    ("clusters", ListOf(Struct("NamedCluster", [("name", STR), ("cluster", _CLUSTER)]))),
    ("users", ListOf(Struct("NamedAuthInfo", [("name", STR), ("user", _USER)]))),
    ("contexts", ListOf(Struct("NamedContext", [("name", STR), ("context", _CONTEXT)]))),
])


class KubeConfigError(Exception):
    """A kubeconfig (or in-cluster set-up) that cannot be used; the text says why and
    what to do."""


@dataclass
class KubeConfig:
    """One API server and the credentials for it."""

    server: str
    ca_pem: Optional[bytes] = None
    insecure: bool = False
    tls_server_name: str = ""
    token: str = ""
    token_file: str = ""
    client_cert_pem: Optional[bytes] = None
    client_key_pem: Optional[bytes] = None
    username: str = ""
    password: str = ""
    #: where it came from, for messages
    source: str = ""

    def bearer(self) -> str:
        """The bearer token now (a token file is re-read: it may have been rotated)."""
        if self.token:
            return self.token
        if self.token_file:
            try:
                with open(self.token_file, "rb") as f:
                    return f.read(64 << 10).decode("ascii", "replace").strip()
            except OSError as e:
                raise KubeConfigError(f"cannot read the Kubernetes token file "
                                      f"{self.token_file}: {e.strerror}") from None
        return ""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        raise KubeConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > _MAX_FILE:
        raise KubeConfigError(f"{what} {path} is larger than {_MAX_FILE >> 20} MiB")
    return data


def _b64(text: str, field: str, source: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise KubeConfigError(f"{source}: {field} is not base64") from None


def _parse(data: bytes, path: str) -> Dict[str, Any]:
    text = data.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            return KUBECONFIG.load(data)
        except DecodeError as e:
            raise KubeConfigError(f"{path} is not a kubeconfig: {e}") from None
    try:
        import yaml
    except ImportError:  # PyYAML absent: only JSON kubeconfigs can be read
        raise KubeConfigError(f"{path} is YAML and PyYAML is not installed: install it "
                              f"(pip install PyYAML) or give a JSON kubeconfig") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise KubeConfigError(f"{path} is not valid YAML: {e}") from None
    try:
        # YAML may hold what JSON cannot (dates, NaN): through JSON's rules first
        import json
        return KUBECONFIG.coerce(loads(json.dumps(doc, default=str)))
    except (DecodeError, ValueError) as e:
        raise KubeConfigError(f"{path} is not a kubeconfig: {e}") from None


def load_kubeconfig(path: str, context: str = "") -> KubeConfig:
    """The API server and credentials of ``context`` (default: the file's current one)."""
    doc = _parse(_read(path, "the kubeconfig"), path)
    base = os.path.dirname(os.path.abspath(path))
    name = context or doc["current-context"]
    contexts = {c["name"]: c["context"] for c in doc["contexts"]}
    if not name:
        if len(contexts) != 1:
            raise KubeConfigError(f"{path} has no current-context: set one (kubectl config "
                                  f"use-context NAME --kubeconfig {path})")
        name = next(iter(contexts))
    if name not in contexts:
        raise KubeConfigError(f"{path}: context {name!r} is not in the file (contexts: "
                              f"{', '.join(sorted(contexts)) or 'none'})")
    ctx = contexts[name]
    clusters = {c["name"]: c["cluster"] for c in doc["clusters"]}
    users = {u["name"]: u["user"] for u in doc["users"]}
    if ctx["cluster"] not in clusters:
        raise KubeConfigError(f"{path}: context {name!r} names cluster {ctx['cluster']!r}, "
                              f"which is not in the file")
    cluster = clusters[ctx["cluster"]]
    user = users.get(ctx["user"], _USER.zero())
    if not cluster["server"].startswith(("http://", "https://")):
        raise KubeConfigError(f"{path}: cluster {ctx['cluster']!r} has server "
                              f"{cluster['server']!r}, not an http(s) URL")

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base, p)

    src = f"kubeconfig {path}"
    cfg = KubeConfig(server=cluster["server"].rstrip("/"), source=src,
                     insecure=cluster["insecure-skip-tls-verify"],
                     tls_server_name=cluster["tls-server-name"],
                     token=user["token"], username=user["username"],
                     password=user["password"])
    if cluster["certificate-authority-data"]:
        cfg.ca_pem = _b64(cluster["certificate-authority-data"],
                          "certificate-authority-data", src)
    elif cluster["certificate-authority"]:
        cfg.ca_pem = _read(rel(cluster["certificate-authority"]), "the cluster CA")
    if user["tokenFile"] and not cfg.token:
        cfg.token_file = rel(user["tokenFile"])
    if user["client-certificate-data"]:
        cfg.client_cert_pem = _b64(user["client-certificate-data"], "client-certificate-data",
                                   src)
    elif user["client-certificate"]:
        cfg.client_cert_pem = _read(rel(user["client-certificate"]), "the client certificate")
    if user["client-key-data"]:
        cfg.client_key_pem = _b64(user["client-key-data"], "client-key-data", src)
    elif user["client-key"]:
        cfg.client_key_pem = _read(rel(user["client-key"]), "the client key")
    if (cfg.client_cert_pem is None) != (cfg.client_key_pem is None):
        raise KubeConfigError(f"{path}: user {ctx['user']!r} has a client certificate without "
                              f"its key (or a key without its certificate): give both")
    return cfg


def in_cluster(env: Optional[Dict[str, str]] = None, sa_dir: str = SA_DIR) -> KubeConfig:
    """The API server as a pod sees it (the service account's token and CA)."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host:
        raise KubeConfigError("not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is "
                              "unset): pass --kubeconfig FILE")
    if ":" in host:
        host = f"[{host}]"
    token_file = os.path.join(sa_dir, "token")
    if not os.path.exists(token_file):
        raise KubeConfigError(f"in-cluster: no service account token at {token_file}: mount "
                              f"the service account (automountServiceAccountToken) or pass "
                              f"--kubeconfig FILE")
    ca = os.path.join(sa_dir, "ca.crt")
    return KubeConfig(server=f"https://{host}:{port or 443}", token_file=token_file,
                      ca_pem=_read(ca, "the service account CA") if os.path.exists(ca) else None,
                      source="in-cluster service account")


def resolve(kubeconfig: Optional[str], env: Optional[Dict[str, str]] = None) -> KubeConfig:
    """``--kubeconfig`` if given, else the in-cluster configuration."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig)
    return in_cluster(env)
