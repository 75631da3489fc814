"""testbed.allocator: a worker keeps freed memory instead of returning it to the kernel."""

import platform
import subprocess
import sys
import textwrap

import pytest

# A fresh interpreter allocates 20 MiB, touches it, frees it, and prints how much of it is still
# resident (from /proc/self/statm): glibc serves such a block with mmap and unmaps it on free,
# unless the thresholds are fixed.
PROBE = textwrap.dedent("""
    import os, sys
    from testbed.allocator import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
    before = rss()
    block = bytearray(20 << 20)  # zeroed, so every page is touched
    del block
    print(rss() - before)
""")


def resident_after_free(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_blocks_stay_in_the_process_once_the_thresholds_are_fixed():
    assert resident_after_free("default") < 4 << 20  # returned to the kernel
    assert resident_after_free("keep") > 16 << 20  # kept for the next cohort
