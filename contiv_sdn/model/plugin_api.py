"""The netmaster's ``/plugin/*`` calls: request and reply shapes, declared once.

Both ends use these: the netmaster decodes requests with them before any store
work (so a ``Host`` that is an object, an ``EndpointID`` that is a number or NaN
never reaches a record), and the agents decode the replies with them before
acting on one.  Field names and Go type names follow Contiv's ``master`` package
(``CreateEndpointRequest``, ``AddressAllocRequest``...), so a refusal reads as
Contiv's netmaster would word it.
"""

from __future__ import annotations

from contiv_sdn.model.shapes import FLOAT, INT, STR, STR_MAP, UINT64, Struct

ALLOC_ADDRESS = Struct("AddressAllocRequest", [
    ("AddressPool", STR), ("NetworkID", STR), ("PreferredIPv4Address", STR),
])
ALLOC_ADDRESS_REPLY = Struct("AddressAllocResponse", [("NetworkID", STR), ("IPv4Address", STR)])

RELEASE_ADDRESS = Struct("AddressReleaseRequest", [("NetworkID", STR), ("IPv4Address", STR)])

CONFIG_EP = Struct("ConfigEP", [
    ("Container", STR), ("Host", STR), ("IPAddress", STR), ("IPv6Address", STR),
    ("ServiceName", STR), ("IntfName", STR), ("VtepIP", STR), ("ContainerID", STR),
    ("Labels", STR_MAP),
])

CREATE_ENDPOINT = Struct("CreateEndpointRequest", [
    ("TenantName", STR), ("NetworkName", STR), ("ServiceName", STR), ("EndpointID", STR),
    ("EPCommonName", STR), ("ContainerID", STR), ("ConfigEP", CONFIG_EP),
])

DELETE_ENDPOINT = Struct("DeleteEndpointRequest", [
    ("TenantName", STR), ("NetworkName", STR), ("ServiceName", STR), ("EndpointID", STR),
    ("IPv4Address", STR),
])

UPDATE_ENDPOINT = Struct("UpdateEndpointRequest", [
    ("IPAddress", STR), ("ContainerID", STR), ("Labels", STR_MAP), ("Tenant", STR),
    ("Network", STR), ("Event", STR), ("EndpointID", STR), ("EPCommonName", STR),
])
UPDATE_ENDPOINT_REPLY = Struct("UpdateEndpointResponse", [("IPAddress", STR)])

#: The stored endpoint record (``contiv:state:endpoint``), as ``createEndpoint`` and
#: ``deleteEndpoint`` answer it under ``EndpointConfig``.
ENDPOINT_STATE = Struct("CfgEndpointState", [
    ("id", STR), ("tenant", STR), ("network", STR), ("networkName", STR), ("group", STR),
    ("groupName", STR), ("epgId", INT), ("ipAddress", STR), ("ipv6Address", STR),
    ("macAddress", STR), ("homingHost", STR), ("intfName", STR), ("vtepIP", STR),
    ("containerID", STR), ("containerName", STR), ("labels", STR_MAP),
])
ENDPOINT_REPLY = Struct("CreateEndpointResponse", [("EndpointConfig", ENDPOINT_STATE)])

#: ``/plugin/registerHost`` (ours: Contiv's netplugin wrote its node into etcd itself): a
#: host's record as its agent knows it.  The fields are the ``state:host`` record's
#: (what the controller reads: vtepIP, dpid, tunnelPort, uplinkPort), less ``updated``,
#: which the netmaster stamps with Redis's clock; ``refresh`` is how many seconds
#: until the agent's next call (the record is live for 3 of them).
REGISTER_HOST = Struct("RegisterHostRequest", [
    ("name", STR), ("vtepIP", STR), ("dpid", UINT64), ("bridge", STR), ("tunnelPort", STR),
    ("uplinkPort", STR), ("mtu", INT), ("refresh", FLOAT),
])
#: The stored host record, as ``registerHost`` answers it.
HOST_STATE = Struct("HostState", [
    ("name", STR), ("vtepIP", STR), ("dpid", UINT64), ("bridge", STR), ("tunnelPort", STR),
    ("uplinkPort", STR), ("mtu", INT), ("refresh", FLOAT), ("updated", FLOAT),
])

#: ``/plugin/createDocknet`` (ours; Contiv's netplugin wrote ``oper/docknet`` into etcd
#: itself): a swarm manager's plugin reports that the docker network ``DocknetUUID``
#: maps to a Contiv network (``ServiceName`` empty) or endpoint group.
CREATE_DOCKNET = Struct("CreateDocknetRequest", [
    ("TenantName", STR), ("NetworkName", STR), ("ServiceName", STR), ("DocknetUUID", STR),
])
#: ``/plugin/deleteDocknet``: the docker network is gone (swarm's FreeNetwork).
DELETE_DOCKNET = Struct("DeleteDocknetRequest", [("DocknetUUID", STR)])
#: The stored mapping (``contiv:state:docknet``, key ``tenant.network.group``), Contiv's
#: ``DnetOperState``; ``createDocknet`` answers it.
DOCKNET_STATE = Struct("DnetOperState", [
    ("tenantName", STR), ("networkName", STR), ("serviceName", STR), ("docknetUUID", STR),
])

#: Request shape of each ``/plugin/<call>`` route.
REQUESTS = {
    "allocAddress": ALLOC_ADDRESS,
    "releaseAddress": RELEASE_ADDRESS,
    "createEndpoint": CREATE_ENDPOINT,
    "deleteEndpoint": DELETE_ENDPOINT,
    "updateEndpoint": UPDATE_ENDPOINT,
    "registerHost": REGISTER_HOST,
    # swarm mode (issue 17)
    "createDocknet": CREATE_DOCKNET,
    "deleteDocknet": DELETE_DOCKNET,
}

__all__ = ["ALLOC_ADDRESS", "ALLOC_ADDRESS_REPLY", "RELEASE_ADDRESS", "CONFIG_EP",
           "CREATE_ENDPOINT", "DELETE_ENDPOINT", "UPDATE_ENDPOINT", "UPDATE_ENDPOINT_REPLY",
           "ENDPOINT_STATE", "ENDPOINT_REPLY", "REGISTER_HOST", "HOST_STATE", "CREATE_DOCKNET",
           "DELETE_DOCKNET", "DOCKNET_STATE", "REQUESTS"]
