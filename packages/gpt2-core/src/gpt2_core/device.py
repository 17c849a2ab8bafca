"""Choosing the torch device."""

from __future__ import annotations

import torch

from gpt2_core.errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N, mps or auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available here; use --device cpu")
    return device


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype to run inference in. ``auto``: bfloat16 where ``device`` computes in it natively, else float32.

    Natively: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or AMX (there, batch-1 decoding reads
    every weight per token, and the bf16 kernels stream half the bytes: ~1.8x fp32's speed on a Zen 5 CPU;
    litgpt defaults to bf16 for inference too). Elsewhere bf16 would be emulated and slower.
    """
    if name != "auto":
        if name not in DTYPES:
            raise UserError(f"--dtype: unknown dtype {name!r} (use auto, float32, bfloat16 or float16)")
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def cpu_capabilities() -> dict[str, object]:
    """This CPU's instruction-set features as torch reports them (``avx512_bf16``, ``amx_bf16``, ...)."""
    return torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}


def _cpu_has_native_bf16() -> bool:
    caps = cpu_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
