"""Keep freed memory in the process during CPU training instead of handing it back to the OS every step.

glibc serves every allocation over 32 MiB with its own ``mmap`` and unmaps it on ``free``. A training step
allocates and frees the same big tensors (logits, the embedding's gradient, ...) each time, so each step
page-faults them in afresh, as system time. Allocating from the heap and trimming it only past 2 GiB free
makes later steps reuse the pages, for a resident size that grows in the first steps and then stays flat
(BENCHMARKS.md has the figures). CUDA memory is cached by PyTorch's own allocator and needs none of this.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
"""glibc's documented defaults (mallopt(3)), which ``restore_malloc_defaults`` puts back."""


def on_glibc() -> bool:
    """Whether this process runs on glibc (whose malloc ``retain_freed_memory`` tunes)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))  # names glibc's version; raises or is empty elsewhere
    except (AttributeError, ValueError, OSError):
        return False


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory in this process; False (and nothing done) off glibc."""
    if not on_glibc():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # No mmap'd chunks (big tensors come from the heap too), and give the heap's top back only when over
    # 2 GiB free (the largest threshold mallopt takes). Process-wide and for the rest of the process.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def restore_malloc_defaults() -> None:
    """Undo ``retain_freed_memory``: glibc's default mmap and trim settings again (nothing off glibc)."""
    if not on_glibc():
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for param, value in GLIBC_DEFAULTS.items():
        mallopt(param, value)
