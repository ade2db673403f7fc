"""The ``global`` object: forwarding/ARP mode, tag ranges, private subnet.

Changes that would strand existing networks (forwarding mode or private
subnet while tags are allocated, a tag range that no longer covers the tags
in use) are refused with Contiv's messages.  Contiv's delete also wiped the
tag allocations even while networks held them; here delete removes the
object only, because the allocations belong to the networks.
"""

from __future__ import annotations

from typing import Optional

from contiv_sdn.master import netutil
from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.handler import Handler, OperContext
from contiv_sdn.master.oper import tag_runs_string
from contiv_sdn.master.work import Work
from contiv_sdn.store import bitmap
from contiv_sdn.store import keys as K

_INFRA = ("default", "aci", "aci-opflex")


def vlan_bounds(g: dict) -> tuple:
    """(lo, hi) VLANs allocatable under the global object (0 and 4095 never are)."""
    r = netutil.parse_tag_ranges(g.get("vlans", ""), "vlan")[0]
    return max(1, r.min), min(4094, r.max)


def vxlan_bounds(g: dict) -> tuple:
    r = netutil.parse_tag_ranges(g.get("vxlans", ""), "vxlan")[0]
    return r.min, r.max


async def tags_in_use(store, kind: str) -> list:
    """[(first, last)] runs of VLANs (kind "vlan") or VNIs in use."""
    data = await store.get_bytes(K.ALLOC_VLAN if kind == "vlan" else K.ALLOC_VXLAN)
    return bitmap.runs(data, 1, (1 << 24) - 1, 1)


class GlobalHandler(Handler):
    modeltype = "global"

    def _check_values(self, g: dict) -> None:
        if g.get("networkInfraType") and g["networkInfraType"] not in _INFRA:
            raise MasterError("invalid fabric mode")
        if g.get("vlans"):
            netutil.parse_tag_ranges(g["vlans"], "vlan")
        if g.get("vxlans"):
            netutil.parse_tag_ranges(g["vxlans"], "vxlan")

    async def create(self, w: Work, obj: dict) -> dict:
        self._check_values(obj)
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        store = w.view.store
        # any network created meanwhile changes these counts: guard on networks
        await w.objs("network")
        vlans = await tags_in_use(store, "vlan")
        vxlans = await tags_in_use(store, "vxlan")
        n_vlans = sum(b - a + 1 for a, b in vlans)
        n_vxlans = sum(b - a + 1 for a, b in vxlans)

        def existing(label: str) -> MasterError:
            parts = []
            if n_vlans:
                parts.append(f"{n_vlans} vlans")
            if n_vxlans:
                parts.append(f"{n_vxlans} vxlans")
            return MasterError(f"Unable to update {label} due to existing {' and '.join(parts)}")

        if old.get("fwdMode") != new.get("fwdMode"):
            if n_vlans + n_vxlans > 0:
                raise existing("forwarding mode")
            if old.get("fwdMode") == "routing" and await w.objs("Bgp"):
                raise MasterError("please delete existing Bgp configs")
        if old.get("pvtSubnet") != new.get("pvtSubnet"):
            if (old.get("pvtSubnet") or new.get("pvtSubnet") != "172.19.0.0/16") and \
                    n_vlans + n_vxlans > 0:
                raise existing("private subnet")
        if new.get("networkInfraType") and new["networkInfraType"] not in _INFRA:
            raise MasterError("invalid fabric mode")
        if old.get("vlans") != new.get("vlans") and new.get("vlans"):
            if not netutil.covers_in_use(new["vlans"], vlans, "vlan"):
                raise MasterError("cannot update the vlan range due to existing vlans "
                                  + bitmap.range_string(vlans, str))
            netutil.parse_tag_ranges(new["vlans"], "vlan")
        if old.get("vxlans") != new.get("vxlans") and new.get("vxlans"):
            if not netutil.covers_in_use(new["vxlans"], vxlans, "vxlan"):
                raise MasterError("cannot update the vxlan range due to existing vxlans "
                                  + bitmap.range_string(vxlans, str))
            netutil.parse_tag_ranges(new["vxlans"], "vxlan")
        stored = dict(old)
        for f in ("networkInfraType", "vlans", "vxlans", "fwdMode", "arpMode", "pvtSubnet"):
            stored[f] = new.get(f, "")
        return stored

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        n_vlans, vlans = tag_runs_string(await ctx.store.get_bytes(K.ALLOC_VLAN), 1, 4095)
        n_vxlans, vxlans = tag_runs_string(await ctx.store.get_bytes(K.ALLOC_VXLAN), 1,
                                           (1 << 24) - 1)
        try:
            free_start = vxlan_bounds(obj)[0] - 1
        except MasterError:
            free_start = 0
        return {
            "clusterMode": ctx.config.cluster_mode,
            "defaultNetwork": "",
            "freeVXLANsStart": free_start,
            "numNetworks": n_vlans + n_vxlans,
            "vlansInUse": vlans,
            "vxlansInUse": vxlans,
        }
