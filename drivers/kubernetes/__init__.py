"""The Kubernetes driver of the netmaster (``twistd netmaster --mode kubernetes``).

* :mod:`drivers.kubernetes.config`: where the API server is and how to log in
  (a kubeconfig file, or the pod's service account when run in-cluster);
* :mod:`drivers.kubernetes.client`: list and streaming watch over treq;
* :mod:`drivers.kubernetes.watch`: one reflector per kind (list, watch from the
  list's resourceVersion, resume after a dropped watch, relist on ``410 Gone``);
* :mod:`drivers.kubernetes.reconcile`: Redis converged from what the reflectors
  hold (level-triggered: namespaces and NetworkPolicies mirrored, pods' labels and
  named ports written into their endpoint records);
* :mod:`drivers.kubernetes.service`: the netmaster's child service that runs them
  and creates the default network of pods without a ``io.contiv.network`` label.

The data model written to Redis is described in :mod:`drivers.kubernetes.objects`.

Nothing is imported here: the NetworkPolicy compiler (``contiv_sdn.pipeline.k8s``)
imports :mod:`drivers.kubernetes.netpol`, which is pure, and must not pull in the
watcher's HTTP client (treq and its dependencies) with the package.  The watcher's
names are still reachable as ``drivers.kubernetes.make_watcher`` (loaded on first use).
"""

from typing import Any

__all__ = ["KubernetesWatcher", "make_watcher"]


def __getattr__(name: str) -> Any:
    """``KubernetesWatcher`` / ``make_watcher`` from :mod:`drivers.kubernetes.service`,
    imported only when asked for (PEP 562)."""
    if name in __all__:
        from drivers.kubernetes import service
        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
