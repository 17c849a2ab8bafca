"""The CPU kernels one decode step of gpt2 124M runs, each alone: what bench/engines.py's step times are made of.

    uv run python bench/decode_kernels.py [--threads 2]

For gpt2's matrix shapes (in x out, one row: batch-1 decoding) it times ``F.linear`` in fp32 and bf16 and
``torch.ops.aten._weight_int8pack_mm`` (``--quantize int8``'s kernel: int8 weights, bf16 activations), the
same weight every call (so the smaller block matrices are read from cache; the 50,304-row head is not), and
the attention of one new query over a KV cache (``F.scaled_dot_product_attention``, 12 heads of 64) in bf16
and fp32 at several cache lengths and batch sizes: the figures behind ``gpt2_core.kv_cache.cache_dtype``.
Prints microseconds per call, the mean of 100-200 calls after a warm-up, with the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402


def micros(fn: Callable[[], object], calls: int = 200) -> float:
    for _ in range(calls // 10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print("\n| shape (in x out), 1 row | fp32 F.linear us | bf16 F.linear us | int8pack_mm us |")
    print("|---|---|---|---|")
    for n_in, n_out in [(768, 2304), (768, 3072), (3072, 768), (768, 50304)]:
        calls = 20 if n_out > 10_000 else 200
        row = []
        for dtype in (torch.float32, torch.bfloat16):
            w, x = torch.randn(n_out, n_in, dtype=dtype), torch.randn(1, n_in, dtype=dtype)
            row.append(micros(lambda w=w, x=x: F.linear(x, w), calls))
        w8 = torch.randint(-128, 127, (n_out, n_in), dtype=torch.int8)
        scales, x = torch.rand(n_out, dtype=torch.bfloat16), torch.randn(1, n_in, dtype=torch.bfloat16)
        row.append(micros(lambda x=x, w8=w8, s=scales: torch.ops.aten._weight_int8pack_mm(x, w8, s), calls))
        print(f"| {n_in} x {n_out} | " + " | ".join(f"{t:,.0f}" for t in row) + " |")

    print("\n| attention of 1 new query, batch x cache length | bf16 us | fp32 us | bf16 / fp32 |")
    print("|---|---|---|---|")
    for batch, length in [(1, 150), (1, 600), (1, 1000), (8, 150), (8, 600), (8, 1000)]:
        row = []
        for dtype in (torch.bfloat16, torch.float32):
            q = torch.randn(batch, 12, 1, 64, dtype=dtype)
            k, v = (
                torch.randn(batch, 12, length, 64, dtype=dtype),
                torch.randn(batch, 12, length, 64, dtype=dtype),
            )
            row.append(micros(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v), 100))
        print(f"| {batch} x {length} | {row[0]:,.0f} | {row[1]:,.0f} | {row[0] / row[1]:.1f}x |")
    prompt = []
    for dtype in (torch.bfloat16, torch.float32):
        q = torch.randn(1, 12, 128, 64, dtype=dtype)
        prompt.append(micros(lambda q=q: F.scaled_dot_product_attention(q, q, q, is_causal=True), 50))
    print(
        f"| a 128-token prompt, causal | {prompt[0]:,.0f} | {prompt[1]:,.0f} | {prompt[0] / prompt[1]:.1f}x |"
    )


if __name__ == "__main__":
    main()
