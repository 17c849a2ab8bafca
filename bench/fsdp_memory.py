"""What each rank holds to train, ``--parallel ddp`` vs ``fsdp``: parameters, gradients and optimizer state.

    uv run python bench/fsdp_memory.py [--model gpt2] [--ranks 2 4] [--seq 64] [--optimizer adamw muon]

For each mode and each number of ranks, spawns that many gloo ranks on this CPU (torch.multiprocessing), builds
the model and wraps it as ``gpt2 train`` does (DDP, or ``gpt2_train.parallel.shard``), and runs two optimizer
steps of one sequence each through ``gpt2_train.step.TrainStep``, in fp32, with each ``--optimizer``
(``gpt2 train``'s: AdamW, or Muon on the blocks' matrices and AdamW on the rest). Just before the second update
(the first one created the optimizer's state) each rank counts the bytes of the tensors it holds: its
parameters, their gradients and the optimizer's state (AdamW's two moments; Muon's momentum, which under FSDP
stays sharded: ``gpt2_train.muon_owners``), a sharded tensor by its local shard (``DTensor.to_local()``).

Not counted: activations (they depend on the micro-batch, not on how the ranks share the model; BENCHMARKS.md
has the arithmetic), the one block FSDP all-gathers at a time, and DDP's gradient buckets (another copy of the
gradients, unless ``gradient_as_bucket_view``). The peak resident memory of each rank is printed beside, which
includes all of them and torch itself.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

MB = 1e6


class RandomTokens:
    """One sequence of random token ids a batch, its targets the ids shifted by one."""

    def __init__(self, vocab: int, seq: int, seed: int) -> None:
        self.vocab, self.seq = vocab, seq
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, self.vocab, (1, self.seq + 1), generator=self.generator)
        return ids[:, :-1], ids[:, 1:]


def held_bytes(model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
    """Bytes of this rank's parameters, gradients and optimizer state (local shards of sharded tensors)."""
    from gpt2_train.optim import torch_optimizers
    from gpt2_train.parallel import local_tensor

    def size(t: torch.Tensor) -> int:
        t = local_tensor(t)
        return t.numel() * t.element_size()

    params = list(model.parameters())  # the tied head is the embedding: counted once
    opts = torch_optimizers(optimizer)
    state = [v for opt in opts for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    return {
        "params": sum(size(p) for p in params),
        "grads": sum(size(p.grad) for p in params if p.grad is not None),
        "state": sum(size(v) for v in state),
    }


def rank_main(
    rank: int, world: int, mode: str, optimizer_name: str, model_name: str, seq: int, port: int, results: Any
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)  # the ranks share the machine's cores
    from gpt2_core.model import GPT
    from gpt2_core.presets import get_preset
    from gpt2_train.config import TrainConfig
    from gpt2_train.distributed import gather_objects, setup_distributed, teardown_distributed
    from gpt2_train.optim import torch_optimizers
    from gpt2_train.optimizers import build_optimizer
    from gpt2_train.parallel import shard
    from gpt2_train.step import TrainStep
    from torch.nn.parallel import DistributedDataParallel

    env = setup_distributed("cpu")
    try:
        torch.manual_seed(0)
        model = GPT(get_preset(model_name).padded(64))
        if mode == "fsdp":
            wrapped: torch.nn.Module = shard(model, env, compute_dtype=None, cpu_offload=False)
        else:
            wrapped = DistributedDataParallel(model)
        cfg = TrainConfig(max_steps=2, optimizer=optimizer_name, precision="fp32")
        optimizer = build_optimizer(model, cfg, env.device)
        held: dict[str, int] = {}
        # Counted as the second step begins, when every optimizer's state exists: on the first one to step.
        first = torch_optimizers(optimizer)[0]
        first.register_step_pre_hook(lambda *_: held.update(held_bytes(model, optimizer)))
        step = TrainStep(wrapped, optimizer, grad_accum=1, grad_clip=1.0, device=env.device)
        source = RandomTokens(model.config.vocab_size, seq, seed=rank)
        for _ in range(2):
            result = step(source, lr=6e-4)
        held["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        held["loss"] = float(result.loss)
        rows = gather_objects(env, held)
        if env.is_main:
            results.put(rows)
    finally:
        teardown_distributed(env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2", help="gpt2_core model preset (gpt2: the 124M shape)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seq", type=int, default=64, help="tokens per rank per step")
    ap.add_argument("--optimizer", nargs="+", default=["adamw", "muon"], choices=["adamw", "muon"])
    args = ap.parse_args()

    from gpt2_core.model import GPT
    from gpt2_core.presets import get_preset

    with torch.device("meta"):
        n = GPT(get_preset(args.model).padded(64)).num_params()
    print(machine())
    print(f"model {args.model}: {n / 1e6:.1f}M parameters (vocab padded to 64), fp32, 1 x {args.seq} tokens")
    print(
        "| optimizer | mode | ranks | rank | parameters MB | gradients MB | optimizer state MB | total MB | of ddp's "
        "| peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for optimizer in args.optimizer:
        for world in args.ranks:
            ddp_total = None
            for mode in ("ddp", "fsdp"):
                results = ctx.SimpleQueue()
                rank_args = (world, mode, optimizer, args.model, args.seq, free_port(), results)
                mp.spawn(rank_main, args=rank_args, nprocs=world)
                for rank, row in enumerate(results.get()):
                    total = row["params"] + row["grads"] + row["state"]
                    if mode == "ddp" and rank == 0:
                        ddp_total = total
                    share = f"{total / ddp_total:.3f}" if ddp_total else "-"
                    print(
                        f"| {optimizer} | {mode} | {world} | {rank} | {row['params'] / MB:,.1f} | "
                        f"{row['grads'] / MB:,.1f} | {row['state'] / MB:,.1f} | {total / MB:,.1f} | {share} | "
                        f"{row['rss'] / MB:,.0f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
