"""Keep a CPU training process's resident memory close to what it actually holds.

glibc raises its mmap threshold dynamically once large blocks are freed, after which the ~10-30 MB
activation tensors of every step come from the heap and are kept by the process when freed: a CPU run
of ViNy on Pets then grows to ~2.3 GB although it holds ~1 GB. Fixing the threshold (mallopt
M_MMAP_THRESHOLD) makes large tensors plain mmaps that go back to the OS when freed; measured peak on
the Pets-sized run: 2.35 GB -> 1.76 GB (docs/performance.md). A no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1024 * 1024

_done = False


def return_large_blocks_to_os() -> bool:
    """Set glibc's mmap threshold once per process; True if it took effect."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError):
        _done = False
    return _done
