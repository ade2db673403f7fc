"""CNI: the ``contiv-cni`` plugin (kubelet, Mesos, podman) talking to the local netplugin."""
