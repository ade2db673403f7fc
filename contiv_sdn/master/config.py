"""What a netmaster was started with (its flags), as the semantics see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import FrozenSet

DEFAULT_FWD_MODE = "bridge"
DEFAULT_ARP_MODE = "proxy"
DEFAULT_VLANS = "1-4094"
DEFAULT_VXLANS = "1-10000"
DEFAULT_PVT_SUBNET = "172.19.0.0/16"
DEFAULT_INFRA = "default"
CLUSTER_MODES = ("docker", "kubernetes", "swarm-mode")


@dataclass(frozen=True)
class MasterConfig:
    """The global object's initial values and the cluster mode.

    ``explicit`` names the settings given on the command line: on a restart
    only those are pushed into an existing global object, so a setting
    changed through the API is not silently reverted by a default.
    """

    fwd_mode: str = DEFAULT_FWD_MODE
    arp_mode: str = DEFAULT_ARP_MODE
    vlans: str = DEFAULT_VLANS
    vxlans: str = DEFAULT_VXLANS
    pvt_subnet: str = DEFAULT_PVT_SUBNET
    infra: str = DEFAULT_INFRA
    cluster_mode: str = "docker"
    explicit: FrozenSet[str] = field(default_factory=frozenset)
    version: str = "0.1.0"

    def global_object(self) -> dict:
        """The global object a first start creates (model field names)."""
        return {
            "key": "global", "name": "global", "arpMode": self.arp_mode, "fwdMode": self.fwd_mode,
            "networkInfraType": self.infra, "pvtSubnet": self.pvt_subnet, "vlans": self.vlans,
            "vxlans": self.vxlans,
        }

    #: model field name of each setting, for pushing explicit flags
    FIELDS = {"fwd_mode": "fwdMode", "arp_mode": "arpMode", "vlans": "vlans",
              "vxlans": "vxlans", "pvt_subnet": "pvtSubnet", "infra": "networkInfraType"}
