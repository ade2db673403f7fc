"""Address and tag arithmetic with Contiv's exact messages (``utils/netutils``).

Pure functions, so the semantics modules stay readable and this part is
testable on its own.  Where Contiv computes something odd (hostIDs of a
gateway below the subnet wrap around as uint32), we compute the same thing,
because the message text is part of the contract.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import List, Optional, Tuple

from contiv_sdn.master.errors import MasterError
from contiv_sdn.model.addressing import endpoint_mac


def ip2int(ip: str) -> int:
    """Dotted quad → int (fast path: inputs passed the model's IPv4 regex)."""
    try:
        a, b, c, d = ip.split(".")
        n = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
        if 0 <= n <= 0xFFFFFFFF and all(0 <= int(x) <= 255 for x in (a, b, c, d)):
            return n
    except ValueError:
        pass
    return int(ipaddress.IPv4Address(ip))


def int2ip(n: int) -> str:
    return str(ipaddress.IPv4Address(n & 0xFFFFFFFF))


def mac_of(ip: str) -> str:
    """Endpoint MAC: the one rule of :func:`contiv_sdn.model.addressing.endpoint_mac`."""
    return endpoint_mac(ip)


def parse_cidr(cidr: str) -> Tuple[str, int]:
    """``"a.b.c.d[-e.f.g.h]/len"`` → (address part, len)."""
    if "/" not in cidr:
        raise MasterError("invalid cidr format")
    addr, _, length = cidr.partition("/")
    try:
        n = int(length)
    except ValueError:
        raise MasterError("invalid mask in gateway/mask specification ")
    return addr, n


@dataclass(frozen=True)
class Subnet:
    """An IPv4 network subnet as Contiv stores it: network address, length, range."""

    network: int  # network address as int
    length: int
    range_lo: int  # first address of the configured range (int)
    range_hi: int  # last address of the configured range (int)
    is_range: bool

    @property
    def size(self) -> int:
        return 1 << (32 - self.length)

    @property
    def last_index(self) -> int:
        return self.size - 1

    @property
    def address(self) -> str:
        return int2ip(self.network)

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.length}"

    @property
    def alloc_lo(self) -> int:
        """Lowest host index handed out (never the network address)."""
        lo = self.range_lo - self.network if self.is_range else 1
        return max(1, lo)

    @property
    def alloc_hi(self) -> int:
        """Highest host index handed out (never the broadcast address)."""
        hi = self.range_hi - self.network if self.is_range else self.last_index - 1
        return min(self.last_index - 1, hi)

    def index(self, ip: str) -> int:
        """Contiv's ``GetIPNumber``: host index of ``ip`` or its exact error."""
        try:
            n = ip2int(ip)
        except ValueError:
            raise MasterError(f"invalid ip address {ip}") from None
        host_id = (n - self.network) & 0xFFFFFFFF
        if host_id >= self.size:
            raise MasterError(f"hostIP {ip} is exceeding beyond subnet {self.address}/{self.length}, "
                              f"hostID {host_id}")
        return host_id

    def ip(self, index: int) -> str:
        return int2ip(self.network + index)


def _first_in_range(addr: str) -> str:
    return addr.split("-")[0] if "-" in addr else addr


def _subnet_bounds(addr: str, length: int) -> Tuple[int, int]:
    base = ip2int(_first_in_range(addr))
    mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    return base & mask, (base & mask) | (~mask & 0xFFFFFFFF)


def _last_in_range(addr: str, length: int) -> int:
    if "-" in addr:
        return ip2int(addr.split("-")[1])
    return _subnet_bounds(addr, length)[1]


def validate_range(addr: str, length: int) -> None:
    """``ValidateNetworkRangeParams``: the range lies in its subnet, 8 <= len <= 32."""
    rmin, rmax = ip2int(_first_in_range(addr)), _last_in_range(addr, length)
    first, last = _subnet_bounds(addr, length)
    if rmin < first or rmax > last or rmin > rmax:
        raise MasterError("Network subnet format not valid")
    if length > 32 or length < 8:
        raise MasterError(f"subnet length {length} not supported")


def parse_subnet(cidr: str) -> Subnet:
    """A network's ``subnet`` field (plain CIDR or ``a-b/len``), validated like Contiv."""
    addr, length = parse_cidr(cidr)
    validate_range(addr, length)
    first, _ = _subnet_bounds(addr, length)
    is_range = "-" in addr
    lo = ip2int(_first_in_range(addr)) if is_range else first
    hi = _last_in_range(addr, length)
    return Subnet(first, length, lo, hi, is_range)


def subnet_from_state(network: str, length: int, ip_range: str) -> Subnet:
    """Rebuild a :class:`Subnet` from the stored network state."""
    base = ip2int(network)
    if ip_range:
        a, b = ip_range.split("-")
        return Subnet(base, length, ip2int(a), ip2int(b), True)
    return Subnet(base, length, base, base + (1 << (32 - length)) - 1, False)


@functools.lru_cache(maxsize=65536)
def _overlap_bounds(cidr: str) -> Tuple[int, int]:
    addr, length = parse_cidr(cidr)
    return ip2int(_first_in_range(addr)), _last_in_range(addr, length)


def overlapping(new: str, existing: str) -> bool:
    """``IsOverlappingSubnet`` (range-aware, start = first address as written)."""
    a0, a1 = _overlap_bounds(new)
    b0, b1 = _overlap_bounds(existing)
    return b0 <= a0 <= b1 or b0 <= a1 <= b1 or a0 <= b0 <= a1 or a0 <= b1 <= a1


def overlapping_v6(new: str, existing: str) -> bool:
    a = ipaddress.IPv6Network(new, strict=False)
    b = ipaddress.IPv6Network(existing, strict=False)
    return a.overlaps(b)


@dataclass(frozen=True)
class V6Subnet:
    network: ipaddress.IPv6Network

    @property
    def groups(self) -> List[int]:
        n = int(self.network.network_address)
        return [(n >> (16 * (7 - i))) & 0xFFFF for i in range(8)]

    @property
    def max_host(self) -> int:
        """Host ids handed out: 1 .. min(2**(128-len) - 2, 2**48) (Lua doubles are exact there)."""
        return max(0, min((1 << (128 - self.network.prefixlen)) - 2, 1 << 48))

    def host_id(self, ip: str) -> int:
        try:
            addr = ipaddress.IPv6Address(ip)
        except ValueError:
            raise MasterError(f"invalid ip address {ip}") from None
        if addr not in self.network:
            raise MasterError(f"hostIP {ip} is exceeding beyond subnet {self.network}")
        return int(addr) - int(self.network.network_address)

    def ip(self, host_id: int) -> str:
        return str(self.network.network_address + host_id)


def parse_v6(cidr: str) -> Optional[V6Subnet]:
    if not cidr:
        return None
    net = ipaddress.IPv6Network(cidr, strict=False)
    if net.prefixlen < 16:
        raise MasterError(f"subnet length {net.prefixlen} not supported")
    return V6Subnet(net)


@dataclass(frozen=True)
class TagRange:
    min: int
    max: int


def parse_tag_ranges(ranges: str, tag_type: str) -> List[TagRange]:
    """``ParseTagRanges`` with its messages (``1-4094``, one range for vxlan)."""
    if ranges == "":
        return [TagRange(0, 0)]
    parts = ranges.split(",")
    if len(parts) > 1 and tag_type == "vxlan":
        raise MasterError("do not support more than 2 vxlan tag ranges")
    out = []
    for part in parts:
        part = part.strip(" ")
        nums = part.split("-")
        if len(nums) > 2:
            raise MasterError(f"invalid tags {part}, correct '10-50,70-100'")
        try:
            lo = int(nums[0])
        except ValueError as e:
            raise MasterError(f"invalid integer 0 conversion error '{e}'")
        try:
            hi = int(nums[1]) if len(nums) > 1 else lo
        except ValueError as e:
            raise MasterError(f"invalid integer 0 conversion error '{e}'")
        if lo > hi:
            raise MasterError(f"invalid range {part}, min is greater than max")
        if lo < 1:
            raise MasterError(f"invalid range {part}, values less than 1")
        if tag_type == "vlan" and hi > 4095:
            raise MasterError(f"invalid range {part}, vlan values exceed 4095 max allowed")
        if tag_type == "vxlan" and hi > 65535:
            raise MasterError(f"invalid range {part}, vlan values exceed 65535 max allowed")
        if tag_type == "vxlan" and hi - lo > 16000:
            raise MasterError(f"does not allow vxlan range to exceed 16000 range {part}")
        out.append(TagRange(lo, hi))
    return out


def covers_in_use(ranges: str, used: List[Tuple[int, int]], tag_type: str) -> bool:
    """``CheckInBitRange``: the new range still covers min..max of the tags in use."""
    if not used:
        return True
    try:
        r = parse_tag_ranges(ranges, tag_type)
    except MasterError:
        return False
    return not (r[0].min > used[0][0] or r[0].max < used[-1][1])
