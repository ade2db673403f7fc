"""The netmaster's C allocator tuning (``contiv_sdn.ops.allocator``).

mallopt is process-wide, so each case runs in a child Python of its own.  What
it buys is measured by ``bench/scale.py`` (RSS per endpoint), not here.
"""

import ctypes.util
import json
import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, TestCase

PROBE = "import json; from contiv_sdn.ops import allocator; print(json.dumps(allocator.tune()))"


def _glibc() -> bool:
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).gnu_get_libc_version)
    except (OSError, AttributeError, TypeError):
        return False


class AllocatorTuningTests(TestCase):
    def setUp(self):
        if not _glibc():
            if os.environ.get("CI"):
                self.fail("CI runs on Debian (glibc): the tuning must apply there")
            raise SkipTest("not glibc: tune() does nothing by design")

    def tune(self, **env):
        full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        full.update(env)
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                             env=full, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def test_both_thresholds_are_set(self):
        self.assertEqual(self.tune(), {"malloc_mmap_threshold": 64 * 1024,
                                       "malloc_trim_threshold": 128 * 1024})

    def test_the_environment_s_own_settings_win(self):
        self.assertEqual(self.tune(MALLOC_MMAP_THRESHOLD_="1048576"),
                         {"malloc_trim_threshold": 128 * 1024})
        self.assertEqual(self.tune(MALLOC_MMAP_THRESHOLD_="1", MALLOC_TRIM_THRESHOLD_="1"), {})

    def test_trim_gives_back_memory_freed_below_a_live_block(self):
        """The trim threshold only returns the top of the heap; trim() returns freed
        pages below a block that stays (the case after a fill)."""
        probe = r"""
import ctypes, json
from contiv_sdn.ops import allocator
allocator.tune()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
chunks = [bytearray(8000) for _ in range(8000)]  # 64 MB from the heap (under the mmap threshold)
pin = bytearray(8000)                             # a live block above them
before = rss()
del chunks
freed = rss()
trimmed = allocator.trim()
after = rss()
print(json.dumps({"before": before, "freed": freed, "after": after, "trimmed": trimmed}))
"""
        full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=full,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        r = json.loads(out.stdout)
        self.assertTrue(r["trimmed"])
        self.assertGreater(r["freed"] - r["after"], 40 << 20, r)  # most of the 64 MB went back
        self.assertGreater(r["freed"], r["before"] - (24 << 20), r)  # ...which free() alone kept

    def test_the_trim_service_exists_on_glibc(self):
        from contiv_sdn.ops import allocator
        svc = allocator.trim_service(5.0)
        self.assertIsNotNone(svc)
        self.assertEqual(svc.step, 5.0)
