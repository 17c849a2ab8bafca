"""Micro-batches with unequal counts of counted targets, and the gradient of one step over them.

Imported by test_loss_weighting.py, and run under torchrun by it (``python -m torch.distributed.run
--nproc-per-node=2 weighting_cases.py OUT``): each rank then writes its gradient, loss and val loss to OUT,
with the model under DDP and sharded (FSDP).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from gpt2_core.config import GPTConfig
from gpt2_core.model import GPT
from gpt2_data.batch_source import BatchSource
from gpt2_train.step import TrainStep

T = 16
VOCAB = 64
VALID = [3, 16, 0, 9]
"""Counted targets of each row (the rest -100, as SFT masks prompts): unequal, one row with none."""


def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=T, vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16, special_tokens={}))


def rows() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four (x, y) rows of shape (1, T), row i with VALID[i] counted targets at its end."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n in VALID:
        seq = torch.randint(0, VOCAB, (1, T + 1), generator=g)
        y = seq[:, 1:].clone()
        y[:, : T - n] = -100
        out.append((seq[:, :-1].clone(), y))
    return out


def stack(part: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([x for x, _ in part]), torch.cat([y for _, y in part])


class Batches(BatchSource):
    """A batch source over a fixed list of micro-batches."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches, self.pos = batches, 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.pos += 1
        return self.batches[self.pos - 1]

    def reset(self) -> None:
        self.pos = 0

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


def flat(params: list[torch.Tensor]) -> torch.Tensor:
    """Every parameter whole (a sharded one gathered from the ranks), flattened into one vector."""
    return torch.cat(
        [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().flatten() for p in params]
    )


def gradient(net: torch.nn.Module, batches: list, ddp: bool = False) -> tuple[torch.Tensor, float]:
    """The step's flat gradient (one SGD step of lr 1 without clipping moves the weights by -grad) and loss."""
    inner = net.module if ddp else net
    before = flat(list(inner.parameters())).clone()
    step = TrainStep(
        net,
        torch.optim.SGD(inner.parameters(), lr=1.0),
        grad_accum=len(batches),
        grad_clip=0.0,
        device=torch.device("cpu"),
    )
    res = step(Batches(batches), lr=1.0)
    return before - flat(list(inner.parameters())), float(res.loss)


def main(out: Path) -> None:
    from gpt2_train.distributed import setup_distributed, teardown_distributed
    from gpt2_train.evals import val_loss
    from gpt2_train.parallel import shard
    from torch.nn.parallel import DistributedDataParallel

    env = setup_distributed("cpu")
    try:
        # Rank 0 reads rows 0 and 1 (19 targets) as two micro-batches, rank 1 rows 2 and 3 (9 targets).
        mine = rows()[2 * env.rank : 2 * env.rank + 2]
        grad, loss = gradient(DistributedDataParallel(model()), mine, ddp=True)
        val = val_loss(model(), Batches(mine), 2, env)
        torch.save((grad, loss, val), out / f"rank{env.rank}.pt")
        grad, loss = gradient(shard(model(), env, compute_dtype=None, cpu_offload=False), mine)
        val = val_loss(shard(model(), env, compute_dtype=None, cpu_offload=False), Batches(mine), 2, env)
        torch.save((grad, loss, val), out / f"fsdp-rank{env.rank}.pt")
    finally:
        teardown_distributed(env)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
