"""The underlay sniffer must see ARP inside VXLAN and on a VLAN trunk, and nothing else as ARP."""

import struct

from twisted.trial.unittest import TestCase

from contiv_sdn.testing.sniff import _inner_ethertype


def eth(etype, payload=b"\0" * 28, vlan=None):
    hdr = b"\x02" * 6 + b"\x04" * 6
    if vlan is not None:
        hdr += struct.pack("!HH", 0x8100, vlan)
    return hdr + struct.pack("!H", etype) + payload


def vxlan(inner, dport=4789):
    udp = struct.pack("!HHHH", 50000, dport, 8 + 8 + len(inner), 0)
    vx = struct.pack("!II", 0x08000000, 1001 << 8)
    ip = bytes([0x45, 0]) + struct.pack("!H", 20 + len(udp) + len(vx) + len(inner)) + b"\0" * 5 + bytes([17]) + b"\0" * 10
    return eth(0x0800, ip + udp + vx + inner)


class InnerEthertypeTests(TestCase):
    def test_plain_arp(self):
        self.assertEqual(_inner_ethertype(eth(0x0806)), 0x0806)

    def test_arp_on_vlan_trunk(self):
        self.assertEqual(_inner_ethertype(eth(0x0806, vlan=45)), 0x0806)

    def test_arp_inside_vxlan(self):
        self.assertEqual(_inner_ethertype(vxlan(eth(0x0806))), 0x0806)

    def test_ip_inside_vxlan_is_not_arp(self):
        self.assertEqual(_inner_ethertype(vxlan(eth(0x0800))), 0x0800)

    def test_other_udp_is_outer_ip(self):
        self.assertEqual(_inner_ethertype(vxlan(eth(0x0806), dport=53)), 0x0800)

    def test_truncated(self):
        self.assertIsNone(_inner_ethertype(b"\0" * 10))
