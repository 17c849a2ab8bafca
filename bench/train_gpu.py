"""GPU training throughput: ``gpt2 train``'s step vs transformers, gpt2-xl on one GPU, and FP8.

    python bench/train_gpu.py [--model gpt2] [--micro-batches 16,32,64] [--seq-len 1024] [--steps 20]
        [--warmup 5] [--no-hf] [--xl-micro-batches 8,16] [--fp8] [--curve-steps 300 --data-dir DIR]

Ours: the model, optimizer, speed-ups and step function exactly as ``gpt2 train`` builds them
(``build_model`` with the vocab padded to 50304, ``parallelize``: torch.compile, ``build_optimizer``: fused
AdamW, ``TrainStep`` with bf16 autocast, TF32). Theirs: transformers ``GPT2LMHeadModel`` with
``attn_implementation="sdpa"``, bf16 autocast, torch.compile and the same AdamW settings and batch. Each
figure is timed over ``--steps`` steps after ``--warmup`` (which absorbs compilation); MFU is against the
device's dense bf16 peak (``gpt2_train.mfu``). ``--fp8`` adds float8 (torchao) figures for 124M and xl,
and, with ``--data-dir``, bf16 vs fp8 loss curves from the same start over ``--curve-steps`` steps.
Runs on CUDA only (``--device cpu --model nano --no-compile`` is a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from gpt2_core import GPT, get_preset

sys.path.insert(0, str(Path(__file__).parent))
from _hf_compare import hf_twin, machine  # noqa: E402
from train_throughput import RandomTokens  # noqa: E402


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()


def timed(
    step: Callable[[], torch.Tensor],
    steps: int,
    warmup: int,
    device: torch.device,
    losses: list[float] | None = None,
) -> float:
    """Seconds per step, after ``warmup`` untimed steps; one host read-back at the end, as a logged step.

    ``losses``, when given, receives the loss of every step, warm-up included (read back after timing).
    """
    kept = []
    for _ in range(warmup):
        kept.append(step())
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
        kept.append(loss)
    float(loss)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / steps
    if losses is not None:
        losses.extend(float(x) for x in kept)
    return sec


def bind(step: Callable, source: RandomTokens) -> Callable[[], torch.Tensor]:
    """A zero-argument step on ``source`` at a fixed learning rate, for ``timed``."""
    return lambda: step(source, 6e-4).loss


def ours_step(args: argparse.Namespace, model_name: str, micro: int, device: torch.device, **flags: object):
    """(step function, model) built the way gpt2 train builds them."""
    from gpt2_train import accel
    from gpt2_train.config import TrainConfig
    from gpt2_train.distributed import DistEnv
    from gpt2_train.optimizers import build_optimizer
    from gpt2_train.parallel import parallelize
    from gpt2_train.precision import autocast_dtype
    from gpt2_train.pretrain import build_model
    from gpt2_train.step import TrainStep
    from gpt2_train.trainer import setup_device

    cfg = TrainConfig(
        model=model_name,
        micro_batch=micro,
        seq_len=args.seq_len,
        total_batch_tokens=micro * args.seq_len,
        max_steps=1,
        compile=args.compile,
        **flags,  # type: ignore[arg-type]
    )
    accel.check(cfg, device)
    setup_device(device)  # TF32 on CUDA; on CPU, the allocator keeps freed memory
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    autocast = autocast_dtype(cfg.precision, device)
    wrapped = parallelize(model, cfg, DistEnv(device=device), autocast=autocast)
    step = TrainStep(
        wrapped,
        build_optimizer(model, cfg, device),
        grad_accum=1,
        grad_clip=cfg.grad_clip,
        device=device,
        autocast_dtype=autocast,
    )
    return step, model


def hf_step(micro: int, args: argparse.Namespace, device: torch.device, source=None):
    """transformers' GPT-2 of the same shape (its own 50257-row vocab), sdpa attention, bf16 autocast,
    compile, the same AdamW settings; on ``source`` (random tokens by default)."""
    torch.manual_seed(0)
    theirs = hf_twin(GPT(get_preset(args.model))).to(device).train()
    theirs.config._attn_implementation = "sdpa"
    params = [p for p in theirs.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=6e-4,
        betas=(0.9, 0.95),
        eps=1e-8,
        fused=device.type == "cuda",
    )
    fwd = torch.compile(theirs) if args.compile and device.type == "cuda" else theirs
    source = source or RandomTokens(micro, args.seq_len, 50257)

    def step() -> torch.Tensor:
        x, y = source.next_batch()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = fwd(input_ids=x, labels=x).loss  # HF shifts labels itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def throughput(
    model: torch.nn.Module, micro: int, sec: float, seq_len: int, device
) -> dict[str, float | None]:
    """tokens/s, MFU (a fraction of the device's dense bf16 peak; None where the peak is unknown) and the
    peak GPU memory in GiB since the last ``free()`` (None off CUDA) of a step of ``micro x seq_len``
    tokens taking ``sec`` seconds."""
    from gpt2_train.mfu import flops_per_token, peak_flops

    tps = micro * seq_len / sec
    peak, _ = peak_flops(device)
    return {
        "tokens_per_s": tps,
        "mfu": tps * flops_per_token(model, seq_len) / peak if peak else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def report(
    label: str, model: torch.nn.Module, micro: int, sec: float, args: argparse.Namespace, device
) -> float:
    fig = throughput(model, micro, sec, args.seq_len, device)
    mfu = f"{100 * fig['mfu']:5.1f}%" if fig["mfu"] is not None else "  n/a"
    mem = f"{fig['peak_mem_gib']:6.1f} GiB" if fig["peak_mem_gib"] is not None else ""
    print(
        f"  {label:34s} micro {micro:3d}: {fig['tokens_per_s']:12,.0f} tokens/s  MFU {mfu}  peak mem {mem}",
        flush=True,
    )
    return fig["tokens_per_s"]


def measure_ours(
    label: str, model_name: str, micro: int, args: argparse.Namespace, device, **flags: object
) -> float:
    """Build ours as gpt2 train does, time it on random tokens, print and return tokens/s."""
    free()
    step, model = ours_step(args, model_name, micro, device, **flags)
    source = RandomTokens(micro, args.seq_len, model.config.vocab_size)
    return report(
        label, model, micro, timed(bind(step, source), args.steps, args.warmup, device), args, device
    )


def loss_curves(args: argparse.Namespace, device: torch.device) -> None:
    """bf16 and fp8 from the same initial weights on the same batches: losses every 25 steps."""
    from gpt2_data.loader import ShardLoader

    curves = {}
    for fp8 in (False, True):
        free()
        step, _ = ours_step(args, args.model, args.curve_micro, device, fp8=fp8)
        source = ShardLoader(args.data_dir, batch_size=args.curve_micro, seq_len=args.seq_len, seed=0)
        losses = []
        for i in range(args.curve_steps):
            lr = 6e-4 * min(1.0, (i + 1) / 50)
            result = step(source, lr)
            if (i + 1) % 25 == 0:
                losses.append(float(result.loss))
        curves["fp8" if fp8 else "bf16"] = losses
    print("  step    bf16     fp8")
    for i, (a, b) in enumerate(zip(curves["bf16"], curves["fp8"])):
        print(f"  {25 * (i + 1):4d}  {a:6.3f}  {b:6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--micro-batches", default="16,32,64")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--no-hf", dest="hf", action="store_false", help="skip the transformers comparison")
    ap.add_argument("--xl-micro-batches", default="8,16", help="gpt2-xl micro batches ('' to skip)")
    ap.add_argument("--fp8", action="store_true", help="also measure float8 (torchao) for 124M and xl")
    ap.add_argument("--data-dir", help="prepared shards for the bf16 vs fp8 loss curves")
    ap.add_argument("--curve-steps", type=int, default=300)
    ap.add_argument("--curve-micro", type=int, default=32)
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "bench/train_gpu.py needs a CUDA GPU (for a smoke test: --device cpu --model nano --no-compile)"
        )
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    print(f"machine: {machine()}", flush=True)

    print(f"{args.model}, seq {args.seq_len}: ours vs transformers")
    for micro in [int(b) for b in args.micro_batches.split(",") if b]:
        ours = measure_ours("ours", args.model, micro, args, device)
        if args.fp8:
            measure_ours("ours --fp8", args.model, micro, args, device, fp8=True)
        if args.hf:
            free()
            with torch.device("meta"):
                shape = GPT(get_preset(args.model))  # transformers' model: the unpadded vocab
            sec = timed(hf_step(micro, args, device), args.steps, args.warmup, device)
            theirs = report("transformers (sdpa, bf16, compile)", shape, micro, sec, args, device)
            print(f"  {'ratio ours/transformers':34s} micro {micro:3d}: {ours / theirs:.2f}x", flush=True)

    for micro in [int(b) for b in args.xl_micro_batches.split(",") if b]:
        print(f"gpt2-xl, seq {args.seq_len}, micro {micro}")
        for flags in ({"activation_checkpointing": False}, {"activation_checkpointing": True}) + (
            ({"activation_checkpointing": True, "fp8": True},) if args.fp8 else ()
        ):
            label = "xl " + (" ".join(f"--{k.replace('_', '-')}" for k, v in flags.items() if v) or "(plain)")
            try:
                measure_ours(label, "gpt2-xl", micro, args, device, **flags)
            except torch.OutOfMemoryError:
                print(f"  {label:34s} micro {micro:3d}: out of memory", flush=True)

    if args.fp8 and args.data_dir:
        print(f"loss curves {args.model}, micro {args.curve_micro}: bf16 vs fp8")
        loss_curves(args, device)


if __name__ == "__main__":
    main()
