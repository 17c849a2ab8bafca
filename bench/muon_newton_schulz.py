"""Muon's Newton-Schulz iteration on tiny's matrices, in bf16 (torch's Muon, always) and in fp32
(``gpt2_train.muon`` in an fp32 run): milliseconds per optimizer step, best of ``--repeats``.

    uv run python bench/muon_newton_schulz.py
    ONEDNN_MAX_CPU_ISA=AVX2 uv run python bench/muon_newton_schulz.py    # a CPU without AVX-512 (emulated)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's defaults (Keller Jordan's)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="gpt2_core preset whose block matrices are iterated")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from gpt2_core.model import GPT
    from gpt2_core.presets import get_preset
    from gpt2_train.muon import newton_schulz
    from gpt2_train.optim import muon_split

    with torch.device("meta"):
        model = GPT(get_preset(args.model))
    matrices = [torch.randn(p.shape) for p in muon_split(model)[0]]
    print(f"machine: {machine()}")
    print(f"{args.model}: {len(matrices)} matrices, shapes {sorted({tuple(m.shape) for m in matrices})}")
    for dtype in (torch.bfloat16, torch.float32):
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            for m in matrices:
                newton_schulz(m, COEFFICIENTS, 5, 1e-7, dtype)
            best = min(best, time.perf_counter() - start)
        print(f"  {str(dtype):15s} {best * 1000:8.1f} ms per optimizer step")


if __name__ == "__main__":
    main()
