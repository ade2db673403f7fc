"""Docker integration: the libnetwork remote network + IPAM driver ``netplugin``.

Served from inside the netplugin agent on ``/run/docker/plugins/netplugin.sock``
(:func:`drivers.docker.service.make_docker_plugin_service`), it turns Docker's
endpoint calls into netmaster allocations and agent plumbing, and keeps the
host's Docker networks in step with Contiv's networks and endpoint groups.
"""
