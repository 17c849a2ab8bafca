"""Training throughput of ``gpt2 train``'s own step function: tokens/s and MFU, and the device.

    uv run python bench/train_throughput.py [--model tiny] [--micro-batch 16] [--seq-len 128]
        [--grad-accum 2] [--steps 10] [--warmup 2] [--repeats 3] [--device auto] [--compile]
        [--precision auto|bf16|fp32] [--cpu-matmul auto|onednn|torch]

Builds the model, optimizer and step exactly as ``gpt2 train`` does (``gpt2_train.pretrain.build_model``,
``gpt2_train.parallel.parallelize``, ``gpt2_train.optimizers.build_optimizer``, ``gpt2_train.step.TrainStep``:
accumulation, clipping, the guarded AdamW update; the same precision, CPU matmul route and device
set-up) and feeds it random tokens from memory, so the figure is the step alone.
Each repeat times ``--steps`` steps after ``--warmup`` untimed ones; the best and median are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from gpt2_data.batch_source import BatchSource

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402


class RandomTokens(BatchSource):
    """A batch source of random token ids, preallocated so the host does no work per batch."""

    def __init__(self, batch: int, seq: int, vocab: int, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [torch.randint(0, vocab, (batch, seq + 1), generator=g) for _ in range(n)]
        self.i = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b[:, :-1], b[:, 1:]

    def state_dict(self) -> dict:
        return {"i": self.i}

    def load_state_dict(self, state: dict) -> None:
        self.i = state["i"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="gpt2_core model preset")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--cpu-matmul", default="auto", choices=["auto", "onednn", "torch"])
    args = ap.parse_args()

    from gpt2_core.device import pick_device
    from gpt2_train.config import TrainConfig
    from gpt2_train.distributed import DistEnv
    from gpt2_train.mfu import flops_per_token, peak_flops
    from gpt2_train.optimizers import build_optimizer
    from gpt2_train.parallel import parallelize
    from gpt2_train.precision import autocast_dtype
    from gpt2_train.pretrain import build_model
    from gpt2_train.step import TrainStep
    from gpt2_train.trainer import setup_device

    device = pick_device(args.device)
    tokens = args.micro_batch * args.seq_len * args.grad_accum
    cfg = TrainConfig(
        model=args.model,
        micro_batch=args.micro_batch,
        seq_len=args.seq_len,
        total_batch_tokens=tokens,
        max_steps=1,
        compile=args.compile,
        precision=args.precision,
        cpu_matmul=args.cpu_matmul,
    )
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    setup_device(device)
    step_dtype = autocast_dtype(args.precision, device)
    # As the trainer: wrapped once, then the optimizer over the wrapped model's parameters.
    wrapped = parallelize(model, cfg, DistEnv(device=device), autocast=step_dtype)  # prints the matmul route
    opt = build_optimizer(model, cfg, device)
    step = TrainStep(
        wrapped,
        opt,
        grad_accum=args.grad_accum,
        grad_clip=cfg.grad_clip,
        device=device,
        autocast_dtype=step_dtype,
    )
    source = RandomTokens(args.micro_batch, args.seq_len, model.config.vocab_size)
    peak, desc = peak_flops(device, step_dtype)
    fpt = flops_per_token(model, args.seq_len)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step(source, 1e-4)
    sync()
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            result = step(source, 1e-4)
        float(result.loss)  # the one read-back per repeat, as a logged step would do
        sync()
        rates.append(args.steps * tokens / (time.perf_counter() - t0))

    print(f"machine: {machine()}")
    print(f"device:  {desc}")
    print(
        f"model {args.model} ({model.num_params() / 1e6:.1f}M params), {args.micro_batch} x {args.seq_len} x "
        f"{args.grad_accum} accumulation = {tokens:,} tokens/step, {fpt / 1e6:.1f} MFLOP/token, "
        f"precision {args.precision} (autocast: {step_dtype})"
    )
    for name, r in (("best", max(rates)), ("median", statistics.median(rates))):
        mfu = f"{100 * r * fpt / peak:.1f}%" if peak else "n/a"
        print(f"{name:>6}: {r:,.0f} tokens/s   MFU {mfu}")


if __name__ == "__main__":
    main()
