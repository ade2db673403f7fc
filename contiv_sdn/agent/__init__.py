"""The host agent (``twistd netplugin``).

One module, one job:

``options``       command line and machine-dependent defaults
``service``       :func:`make_service`: the parts assembled as a MultiService
``registration``  the host's record, kept through the netmaster's ``/plugin/registerHost``; :func:`host_dpid`
``ovsdb``         OVSDB through the ``ovs`` IDL, in one worker thread
``bridge``        br-int + controllers + vxlan0 (+ uplink), retried until OVSDB answers
``plumbing``      veth pairs in container namespaces with pyroute2 (address, route, MTU,
                  TX checksum offload off)
``netmaster``     client of the netmaster's /plugin and inspect routes (treq)
``endpoints``     endpoint lifecycle: allocate, plumb, attach; delete; reconcile
``api``           the local HTTP API on a root-only UNIX socket
``client``        a Twisted client for that API
"""
