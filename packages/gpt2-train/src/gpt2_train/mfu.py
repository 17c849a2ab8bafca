"""Model FLOPs utilisation: training FLOPs per token, and the peak of the device they run on."""

from __future__ import annotations

import os

import torch
from gpt2_core.device import cpu_capabilities
from gpt2_core.model import GPT

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, matched against the CUDA device name.
CUDA_PEAKS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "A10": 125e12,
    "L4": 121e12,
    "L40": 181e12,
    "4090": 165e12,
    "3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}
PEAK_ENV = "GPT2_PEAK_FLOPS"
"""Set to the device's peak FLOP/s to override the table (and the CPU estimate)."""


def flops_per_token(model: GPT, seq_len: int, head_rows: int | None = None) -> float:
    """Forward + backward FLOPs per trained token: 6N for the weights plus 12 * L * C * T for attention.

    N counts every parameter once (the tied embedding too, since it is also the output matmul), as
    nanoGPT's ``estimate_mfu`` does (PaLM's appendix B). An untied model's token embedding is left out: its
    lookup does no matmul, its head does (nanochat's ``estimate_flops`` leaves it out the same way).
    ``head_rows``: the output layer scores only that many rows (``--train-vocab data``), so only those count
    for the head.
    """
    cfg = model.config
    n = model.num_params()
    if not cfg.tie_word_embeddings:
        n -= model.transformer.wte.weight.numel()
    if head_rows is not None:
        n -= (cfg.padded_vocab_size - head_rows) * cfg.n_embd
    return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * seq_len


def peak_flops(device: torch.device, dtype: torch.dtype | None = None) -> tuple[float, str]:
    """The device's peak FLOP/s and a description (CPU: an estimate from the core count and SIMD width).

    ``dtype`` is the matmul dtype (bf16 under autocast, None for fp32): a CPU's bf16 instructions do more
    FLOPs per cycle than its fp32 ones (CUDA figures are bf16 peaks already).
    """
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]), f"{PEAK_ENV}={os.environ[PEAK_ENV]}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in CUDA_PEAKS.items():
            if key in name:
                return peak, f"{name} (bf16 peak {peak / 1e12:.0f} TFLOP/s)"
        return 0.0, f"{name} (peak unknown: set {PEAK_ENV})"
    if device.type == "cpu":
        cores = torch.get_num_threads()
        flops_per_cycle, ghz = _cpu_features()
        kind = "fp32"
        if dtype == torch.bfloat16:
            caps = cpu_capabilities()
            if caps.get("amx_bf16"):  # AMX tiles: 1024 bf16 FLOPs per cycle per core
                flops_per_cycle, kind = 1024, "bf16 (AMX)"
            elif caps.get("avx512_bf16"):  # a bf16 dot product does two multiply-adds per fp32 lane
                flops_per_cycle, kind = 2 * flops_per_cycle, "bf16"
        peak = cores * ghz * 1e9 * flops_per_cycle
        return (
            peak,
            f"cpu x{cores} threads (estimated {kind} peak {peak / 1e9:.0f} GFLOP/s; set {PEAK_ENV} to correct)",
        )
    return 0.0, f"{device.type} (peak unknown: set {PEAK_ENV})"


def _cpu_features() -> tuple[int, float]:
    """fp32 FLOPs per cycle per core (2 FMA units x SIMD lanes x 2) and the clock in GHz, from /proc/cpuinfo.

    A rough estimate (turbo and AVX-512 down-clocking are ignored); elsewhere AVX2 at 3 GHz is assumed.
    """
    flops, ghz = 32, 3.0
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return flops, ghz
    if " avx512f" in info:
        flops = 64
    for line in info.splitlines():
        if line.startswith("cpu MHz"):
            ghz = float(line.split(":")[1]) / 1000
            break
    return flops, ghz
