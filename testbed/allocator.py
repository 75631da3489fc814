"""Keep freed tensor memory in the worker process instead of handing it back to the kernel.

glibc's malloc serves large blocks with mmap and gives the top of the heap back once more than
its trim threshold is free. A fresh worker starts with low, self-adjusting thresholds, so a
node that holds a cohort's received models until their shared evaluation
(:mod:`testbed.shared_evaluation`) frees megabytes at a time, returns them, and faults the
same pages in again for the next cohort, which made a shared evaluation slower than evaluating
each device alone. Fixed thresholds keep the pages (``scripts/bench_fleet.py`` before and after:
docs/ORCHESTRATOR.md, Benchmarks). Only glibc has mallopt; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # blocks below this come from the heap (glibc's own upper bound for its adaptive threshold)
TRIM_THRESHOLD_BYTES = 128 << 20  # free memory the heap keeps before it returns any to the kernel


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False where there is no mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
