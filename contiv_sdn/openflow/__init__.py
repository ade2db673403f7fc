"""The controller's OpenFlow 1.3 side: bytes, connections, switches, flow sync.

* :mod:`.codec`    -- Flow <-> flow_mod bytes (os-ken as the reference, templates for speed),
  flow-stats -> Flow, packet-in decoding;
* :mod:`.validate` -- length checks that keep hostile input away from os-ken's parsers;
* :mod:`.protocol` -- ``OpenFlowProtocol`` / ``OpenFlowFactory``: handshake, liveness,
  requests, errors by xid, bundles;
* :mod:`.registry` -- ``SwitchRegistry``: dpid <-> connection, host <-> dpid, callbacks;
* :mod:`.sync`     -- ``FlowSync``: converge a switch to a desired flow set, atomically;
* :mod:`.testing`  -- ``SwitchLab``: a private OVS connected to our factory, for tests/benchmarks.
"""
