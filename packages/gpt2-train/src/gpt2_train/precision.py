"""Mixed precision: which autocast dtype a run uses (``--precision``), and the context that applies it."""

from __future__ import annotations

import contextlib

import torch
from gpt2_core.device import pick_dtype


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device``; None means plain fp32.

    auto: bf16 where the device computes in it natively (a CUDA GPU, or a CPU with AVX512-BF16/AMX, where
    bf16 kernels run faster than fp32 ones: BENCHMARKS.md), fp32 elsewhere.
    """
    if precision == "bf16" or (precision == "auto" and pick_dtype("auto", device) == torch.bfloat16):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a no-op context for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
