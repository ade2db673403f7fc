"""Give the C allocator's freed memory back to the system (glibc only).

Why: the netmaster's big transient objects are dicts and byte strings of a run
(per-switch deltas, the notes of what each switch held before, encoded bundles).
glibc serves blocks of 128 KiB and more with ``mmap`` and returns them on
``free``, but after the first such block is freed it raises that threshold (up
to 32 MiB), so the next ones come from the heap, where a long-lived block above
them keeps the freed space from ever going back.  After a fill of 500 switches x
10k endpoints the netmaster's RSS was 83-89 KiB per endpoint; with a fixed
threshold of 64 KiB (``M_MMAP_THRESHOLD``, which also stops the raising) and a
trim threshold of 128 KiB, 59.5-63.9 KiB (``bench/scale.py --size 500x10k``,
same machine, same day; docs/design.md has the runs).

The environment's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
win (glibc reads them at start); elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Dict

from twisted.logger import Logger

log = Logger()

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3

#: blocks this big or bigger are mapped on their own and unmapped when freed
MMAP_THRESHOLD = 64 * 1024
#: free memory this big at the top of the heap is given back at once
TRIM_THRESHOLD = 128 * 1024


def _libc() -> "ctypes.CDLL | None":
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 (glibc only: musl has no mallopt)
        libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> Dict[str, int]:
    """Set the thresholds the environment does not set; what was set, by name."""
    libc = _libc()
    done: Dict[str, int] = {}
    if libc is None:
        return done
    for env, param, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                              ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if env in os.environ:
            continue
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            done[env.strip("_").lower()] = value
        else:
            log.warn("mallopt({p}, {v}) refused; freed memory may stay with the process",
                     p=param, v=value)
    return done
