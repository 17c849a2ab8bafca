"""Keep freed memory in the process during CPU training instead of handing it back to the OS every step.

glibc serves every allocation over 32 MiB with its own ``mmap`` and unmaps it on ``free``. A training step
allocates and frees the same big tensors (logits, the embedding's gradient, ...) each time, so each step
page-faults them in afresh: measured here, a third of a `tiny` CPU run went to system time. Allocating from
the heap and trimming it only past 2 GiB free makes later steps reuse the pages: bf16 steps 1.4x faster for
`tiny` and 1.3x for gpt2 124M, for a resident size that grows in the first steps and then stays flat (+47%
for `tiny`, 1.2 -> 1.8 GiB; +22% for gpt2). CUDA memory is cached by PyTorch's own allocator and needs none
of this.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


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
