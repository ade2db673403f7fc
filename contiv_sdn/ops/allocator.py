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

The trim threshold only gives back free space at the top of the heap; what a
fill freed below live blocks stays (65 of the heap's 110 MB after the 500x10k
fill, ``mallinfo2``).  :func:`trim` gives back every whole free page wherever it
is (``malloc_trim(0)``); the netmaster runs it every :data:`TRIM_EVERY` seconds
(:func:`trim_service`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from typing import Dict, Optional

from twisted.application.internet import TimerService
from twisted.logger import Logger

log = Logger()

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3

#: blocks this big or bigger are mapped on their own and unmapped when freed
MMAP_THRESHOLD = 64 * 1024
#: free memory this big at the top of the heap is given back at once
TRIM_THRESHOLD = 128 * 1024
#: seconds between two :func:`trim` calls of :func:`trim_service`
TRIM_EVERY = 30.0
#: a trim longer than this is logged (seconds): it holds the reactor
TRIM_SLOW = 0.02


@functools.lru_cache(maxsize=None)  # (find_library runs ldconfig: once per process)
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


def trim() -> bool:
    """Give the heap's whole free pages back to the system (glibc's
    ``malloc_trim(0)``); whether any were.  False elsewhere than glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))


def trim_service(every: float = TRIM_EVERY) -> Optional[TimerService]:
    """A service calling :func:`trim` every ``every`` seconds on the reactor (None:
    not glibc).  A trim walks the heap's free chunks: a few ms for a heap of 100 MB."""
    if _libc() is None:
        return None

    def run() -> None:
        t0 = time.perf_counter()
        trim()
        took = time.perf_counter() - t0
        if took > TRIM_SLOW:
            log.info("giving freed memory back to the system took {ms:.0f} ms", ms=took * 1e3)
    return TimerService(every, run)
