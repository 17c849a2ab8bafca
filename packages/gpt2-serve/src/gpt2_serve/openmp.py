"""The OpenMP threads of the thread that loaded the model, handed back before the decoding thread runs.

Torch's CPU kernels run on OpenMP, and GNU OpenMP (libgomp, what torch's Linux wheels bundle) keeps a pool of
worker threads for each thread that has run a parallel region. The server loads its model on one thread and
decodes on another (``gpt2_serve.engine``): while the loading thread's pool exists, the decoding thread's
steps ran 20% or more slower on a 2-core CPU, and not when the loading thread had never run a parallel region
(BENCHMARKS.md, "the loading thread's OpenMP threads handed back"). OpenMP 5.0's
``omp_pause_resource_all(omp_pause_hard)`` frees the calling thread's pool in libgomp (it is re-made if that
thread computes again), which gives the decoding thread the speed of a lone one.

Only libgomp is paused: in LLVM's and Intel's runtimes a hard pause shuts down the whole runtime, which other
threads may be using. Elsewhere (another runtime, not Linux) nothing is done.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

OMP_PAUSE_HARD = 2
"""``omp_pause_hard`` of OpenMP 5.0's ``omp_pause_resource_t``."""


def loaded_libgomp() -> str | None:
    """The path of the libgomp torch runs on, from ``/proc/self/maps``: the copy inside torch's package when
    there is one (another wheel may bring its own), else the one loaded; None without any."""
    import torch

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = []
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)  # address, perms, offset, device, inode[, path]
        if len(parts) == 6 and os.path.basename(parts[5]).startswith("libgomp") and parts[5] not in found:
            found.append(parts[5])
    package = os.path.dirname(os.path.dirname(os.path.realpath(torch.__file__)))
    ours = [p for p in found if os.path.realpath(p).startswith(os.path.join(package, "torch"))]
    return (ours or found or [None])[0]


def release_openmp_threads() -> bool:
    """Free the calling thread's OpenMP worker threads (libgomp only); True when they were freed."""
    path = loaded_libgomp()
    if path is None:
        return False
    try:
        return ctypes.CDLL(path).omp_pause_resource_all(OMP_PAUSE_HARD) == 0
    except (OSError, AttributeError):  # not loadable, or a libgomp older than OpenMP 5.0 (GCC 9)
        return False


__all__ = ["loaded_libgomp", "release_openmp_threads"]
