"""The exact validation regexes of Contiv's generated ``contivModel.go``.

They are kept as the raw RE2 text (spec Appendix A) so that a reader can compare
them with the Go source character by character; :mod:`contiv_sdn.model.schema`
compiles them once and always applies them with ``re.fullmatch``, because Go's
``$`` never matches before a trailing newline while Python's does.
"""

from __future__ import annotations

#: DNS-label style names, dots allowed (tenant, network, group, policy, ... names).
#:
#: Deviation from Contiv, on purpose: an ``_`` is accepted *inside* a label.  The
#: seed README (our user's contract) names its policy ``prod_web`` and Contiv's own
#: regex rejects that, so the documented walkthrough failed on Contiv.  Leading or
#: trailing ``_``, and every other character Contiv rejects, are still rejected.
NAME = (
    r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9_\-]*[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9_\-]*[A-Za-z0-9])$"
)
#: NAME with the last label optional, so ``""`` is accepted.
NAME_OPT = (
    r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9_\-]*[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9_\-]*[A-Za-z0-9])?$"
)
#: Configured tags (``cfgdTag``): a NAME, or empty.
TAG = (
    r"^((([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9]))?$"
)

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = _OCTET + r"(\." + _OCTET + r"){3}"

#: An IPv4 address, or empty.
IPV4_OPT = r"^(" + _IPV4 + r")?$"
#: ``network.subnet``: ``a.b.c.d[-e.f.g.h]/len`` with len 1..31 (required).
SUBNET = r"^(" + _IPV4 + r")(\-(" + _IPV4 + r"))?/(3[0-1]|2[0-9]|1[0-9]|[1-9])$"
#: ``endpointGroup.ipPool``: empty, or ``a.b.c.d[-e.f.g.h]``.
IP_POOL = r"^$|^(" + _IPV4 + r")(\-(" + _IPV4 + r"))?$"
#: ``Bgp.routerip``: ``a.b.c.d[-N]/len`` (required).
ROUTER_IP = r"^(" + _IPV4 + r")(\-" + _OCTET + r")?/(3[0-1]|2[0-9]|1[0-9]|[1-9])$"
#: ``rule.fromIpAddress``/``toIpAddress``: empty, or ``a.b.c.d[-N][/len]``.
RULE_IP = r"^((" + _IPV4 + r")(\-" + _OCTET + r")?(/(3[0-1]|2[0-9]|1[0-9]|[1-9]))?)?$"
#: ``global.pvtSubnet``: an IPv4 /16 (required).
PVT_SUBNET = r"^(" + _IPV4 + r")/16$"

_HEX = r"([0-9]|[a-f]|[A-F])"
_IPV6 = (
    r"((" + _HEX + r"{1,4})((\:" + _HEX + r"{1,4}){7}))"
    r"|(((" + _HEX + r"{1,4}\:){0,6}|\:)((\:" + _HEX + r"{1,4}){0,6}|\:))"
)
#: ``network.ipv6Gateway``: a (loosely checked) IPv6 address, or empty.
IPV6_GATEWAY = r"^(" + _IPV6 + r")?$"
#: ``network.ipv6Subnet``: IPv6/len, or empty.  The prefix-length group accepts
#: 1-99, 100-107, 110-117 and 120-127 only (108, 109, 118, 119, 128 are rejected):
#: a quirk of the original that is reproduced on purpose.
IPV6_SUBNET = r"^((" + _IPV6 + r")/(1[0-2][0-7]|[1-9][0-9]|[1-9]))?$"

#: ``netprofile.bandwidth``: ``<n> <unit>`` or ``<n><unit>``, or empty.
BANDWIDTH = (
    r"^([1-9][0-9]* (([kmgKMG{1}]bps)|[kmgKMG{1}]|(kb|Kb|Gb|gb|Mb|mb)))?$"
    r"|^([1-9][0-9]*(((k|m|g|K|G|M)bps)|(k|m|g|K|M|G)|(kb|Kb|Gb|gb|Mb|mb)))?$"
)

YES_NO = r"^(yes|no){1}$"
ACI_GW_NAME = r"^(aciGw)$"
NODE_BINDINGS = (
    r"^$|^(topology/pod-[0-9]{1,4}/node-[0-9]{1,4}){1}"
    r"(,topology/pod-[0-9]{1,4}/node-[0-9]{1,4})*$"
)
PATH_BINDINGS = (
    r"^$|^(topology/pod-[0-9]{1,4}/paths-[0-9]{1,4}/pathep-\[eth[0-9]{1,2}/[0-9]{1,2}\]){1}"
    r"(,topology/pod-[0-9]{1,4}/paths-[0-9]{1,4}/pathep-\[eth[0-9]{1,2}/[0-9]{1,2}\])*$"
)

ARP_MODE = r"^(proxy|flood)?$"
FWD_MODE = r"^(bridge|routing)?$"
GLOBAL_NAME = r"^(global)$"
NETWORK_INFRA_TYPE = r"^(aci|aci-opflex|default)?$"
VLANS = r"^([0-9]{1,4}?-[0-9]{1,4}?)$"
VXLANS = r"^([0-9]{1,8}?-[0-9]{1,8}?)$"

ENCAP = r"^(vlan|vxlan)$"
NW_TYPE = r"^(infra|data)$"

ACTION = r"^(allow|deny)$"
DIRECTION = r"^(in|out)$"
PROTOCOL = r"^(tcp|udp|icmp||[0-9]{1,3}?)$"
