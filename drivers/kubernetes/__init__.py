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
"""

from drivers.kubernetes.service import KubernetesWatcher, make_watcher

__all__ = ["KubernetesWatcher", "make_watcher"]
