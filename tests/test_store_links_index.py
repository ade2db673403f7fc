"""The subnet index a network create screens overlaps with, kept with the
cached network kind and updated per commit: it must answer what the full
walk over the tenant's networks answers, after any sequence of creates and
deletes, whether built at once or updated key by key."""

from __future__ import annotations

import random

from twisted.trial import unittest

from contiv_sdn.master import netutil
from contiv_sdn.master.network import _SubnetIndex


def brute(networks: dict, tenant: str, subnet: str) -> bool:
    return any(o.get("tenantName") == tenant and o.get("subnet")
               and netutil.overlapping(subnet, o["subnet"]) for o in networks.values())


def random_subnet(rng: random.Random) -> str:
    length = rng.choice([8, 16, 20, 24, 24, 24, 28, 30])
    addr = f"10.{rng.randrange(4)}.{rng.randrange(8)}.{rng.randrange(0, 256, 4)}"
    if rng.random() < 0.2:  # a range subnet: a.b.c.d-e.f.g.h/len
        return f"{addr}-10.{rng.randrange(4, 6)}.0.9/{length}"
    return f"{addr}/{length}"


class SubnetIndexTests(unittest.TestCase):
    def test_incremental_index_answers_like_the_full_walk(self):
        rng = random.Random(18)
        networks: dict = {}
        index = _SubnetIndex.build(networks)
        for step in range(1500):
            key = f"t{rng.randrange(3)}:n{rng.randrange(60)}"
            if rng.random() < 0.3:
                networks.pop(key, None)
            else:
                networks[key] = {"tenantName": key.split(":")[0],
                                 "subnet": random_subnet(rng) if rng.random() < 0.9 else ""}
            index.update_keys([key], networks)
            if step % 50 == 0:
                index = _SubnetIndex.build(networks) if rng.random() < 0.5 else index
            for _ in range(5):
                tenant, subnet = f"t{rng.randrange(4)}", random_subnet(rng)
                a0, a1 = netutil._overlap_bounds(subnet)
                self.assertEqual(index.may_overlap(tenant, a0, a1),
                                 brute(networks, tenant, subnet), (tenant, subnet))
