"""Training step speed: forward + backward + AdamW, gpt2_core.GPT vs transformers GPT2LMHeadModel.

    uv run python bench/train_step.py [--preset gpt2] [--batch 2] [--seq 256] [--repeats 3] [--threads N]
                                      [--precision fp32 auto ...] [--compile none|ours|both]
                                      [--vocab-multiple 64] [--cpu-matmul auto onednn torch]
                                      [--onednn-isa both|native|AVX2]

Same config, same weights, same batch, the same optimizer settings for both (AdamW, lr 6e-4,
betas (0.9, 0.95), weight decay 0.1, fused where torch supports it on the device), the same precision,
in one process with the same threads, alternating; prints the best and the median tokens/s of each and
their ratio, for each precision asked for: by default fp32 (transformers' default) and ``auto`` (what
``gpt2 train`` picks here: bf16 autocast on a GPU or a CPU with AVX512-BF16/AMX, else fp32).
``--compile ours`` is what ``gpt2 train --compile`` does; ``both`` compiles the transformers model too
(the like-for-like figure).

Our model's fp32 CPU products take the route ``gpt2 train --cpu-matmul`` would (``auto`` by default: the
one a timing of its products at batch x seq rows shows faster, measured afresh; ``--cpu-matmul auto onednn
torch`` times each). By default everything runs twice: on this CPU, then in a child process with
``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN limited as on a CPU without AVX-512).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _hf_compare import (  # noqa: E402
    add_route_arguments,
    enter_isa,
    hf_twin,
    interleaved,
    machine,
    report,
    rerun_under_avx2,
    route,
)


def adamw(model: torch.nn.Module, fused: bool) -> torch.optim.AdamW:
    """nanoGPT's grouping: decay on matrices and embeddings, none on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", nargs="+", default=["fp32", "auto"], choices=["auto", "fp32", "bf16"])
    ap.add_argument("--compile", default="none", choices=["none", "ours", "both"])
    ap.add_argument(
        "--vocab-multiple",
        type=int,
        default=1,
        help="pad our vocabulary to a multiple of this (gpt2 train's default: 64); transformers keeps 50257",
    )
    add_route_arguments(ap)
    args = ap.parse_args()
    enter_isa(args)
    if args.threads:
        torch.set_num_threads(args.threads)

    from gpt2_core import GPT, get_preset

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = GPT(get_preset(args.preset).padded(args.vocab_multiple)).to(device).train()
    theirs = hf_twin(ours).to(device).train()
    fused = "fused" in inspect.signature(torch.optim.AdamW).parameters
    opt_ours, opt_theirs = adamw(ours, fused), adamw(theirs, fused)
    tokens = torch.randint(0, 50257, (args.batch, args.seq + 1), generator=torch.Generator().manual_seed(1))
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    from gpt2_train.precision import autocast_dtype
    from gpt2_train.trainer import setup_device

    setup_device(device)  # as gpt2 train does (on CPU: freed memory kept); process-wide, so for both models
    fwd_ours = torch.compile(ours) if args.compile != "none" else ours
    fwd_theirs = torch.compile(theirs) if args.compile == "both" else theirs
    print(f"machine: {machine()}")
    runs = [(p, r) for p in args.precision for r in args.cpu_matmul]
    for precision, mode in runs:
        dtype = autocast_dtype(precision, device)
        autocast = functools.partial(torch.autocast, device.type, dtype) if dtype else contextlib.nullcontext
        if args.compile == "none":  # compiled graphs choose their own kernels
            print(route(ours, mode, rows=args.batch * args.seq, backward=True, autocast=dtype), flush=True)
        losses: dict[str, float] = {}

        def step_ours(autocast=autocast, losses=losses) -> None:  # noqa: ANN001
            with autocast():
                _, loss = fwd_ours(x, y)
            loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)
            losses["ours"] = loss.item()

        def step_theirs(autocast=autocast, losses=losses) -> None:  # noqa: ANN001
            with autocast():
                loss = fwd_theirs(input_ids=x, labels=x).loss
            loss.backward()
            opt_theirs.step()
            opt_theirs.zero_grad(set_to_none=True)
            losses["transformers"] = loss.item()

        for _ in range(2):  # warm-up: optimizer state, and torch.compile's first (and recompiled) graphs
            step_ours(), step_theirs()
        wall, cpu = interleaved({"ours": step_ours, "transformers": step_theirs}, args.repeats)
        print(
            f"train step (fwd+bwd+AdamW fused={fused}), {args.preset}, precision {precision} "
            f"(autocast: {dtype}), "
            f"compiled: {args.compile}, our vocab {ours.config.padded_vocab_size}, cpu matmul {mode}, "
            f"batch {args.batch} x {args.seq} tokens, "
            f"{args.repeats} interleaved runs; last loss ours {losses['ours']:.3f}, "
            f"transformers {losses['transformers']:.3f}:"
        )
        report(wall, cpu, args.batch * args.seq, "tokens/s")
    rerun_under_avx2(args)


if __name__ == "__main__":
    main()
