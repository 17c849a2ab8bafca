"""Muon split over ranks (gpt2_train.muon_owners): who owns which matrix, and, on three gloo ranks under
torchrun, steps that equal one process's bit for bit: FSDP2's shards (uneven, one of them empty) and DDP's whole
matrices, the Newton-Schulz iteration in fp32 (ours) and in bf16 (torch's own step in one process), with plain
and cautious weight decay, the momentum changed in the param groups before each step (a warm-up's).

The training runs (losses, checkpoints, resume) are the root tests' (tests/test_train_fsdp_muon.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gpt2_train.muon_owners import owners

SCRIPT = """
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from gpt2_train.muon import Muon

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
# 64 rows on 3 ranks: 22, 22, 20; 5 rows: 2, 2, 1; 2 rows: 1, 1 and an empty shard.
SHAPES = [(64, 16), (16, 64), (48, 16), (5, 16), (2, 3)]


class Matrices(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.ws = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s)) for s in SHAPES])

    def forward(self, cs):
        return sum((w * c).sum() for w, c in zip(self.ws, cs))


def gradients(step):
    # Quarters: the ranks' mean (FSDP's reduce-scatter) of the same gradient is that gradient exactly.
    g = torch.Generator().manual_seed(step)
    return [torch.randint(-8, 8, s, generator=g) / 4 for s in SHAPES]


out = open(Path(sys.argv[1]) / f"rank{rank}.txt", "w")
# A weight decay large enough that the cautious mask changes the weights visibly.
settings = dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.5)
for dtype, cautious in [(d, c) for d in (torch.float32, torch.bfloat16) for c in (False, True)]:
    one, ddp, fsdp = Matrices(), Matrices(), Matrices()
    fully_shard(fsdp, mesh=init_device_mesh("cpu", (world,)))
    kwargs = dict(ns_dtype=dtype, cautious_weight_decay=cautious, **settings)
    opts = [
        Muon(one.parameters(), **kwargs),
        Muon(ddp.parameters(), process_group=dist.group.WORLD, **kwargs),
        Muon(fsdp.parameters(), **kwargs),
    ]
    for step in range(3):
        cs = gradients(step)
        for model in (one, ddp):
            for w, c in zip(model.ws, cs):
                w.grad = c.clone()
        fsdp(cs).backward()
        for opt in opts:
            for group in opt.param_groups:
                group["momentum"] = 0.85 + 0.05 * step  # what --muon-momentum-warmup-steps sets
            opt.step()
            opt.zero_grad()
    for i, (a, b, c) in enumerate(zip(one.ws, ddp.ws, fsdp.ws)):
        buf = opts[2].state[c]["momentum_buffer"]
        print(
            dtype,
            cautious,
            i,
            "ddp", torch.equal(a, b),
            "fsdp", torch.equal(a, c.full_tensor()),
            "momentum", torch.equal(opts[0].state[a]["momentum_buffer"], buf.full_tensor()),
            "local rows", buf.to_local().shape[0],
            file=out,
            flush=True,
        )
dist.destroy_process_group()
"""


def test_owners_take_turns_largest_matrix_first() -> None:
    assert owners([4, 1, 3, 3, 2], 2) == [0, 0, 1, 0, 1]
    assert owners([4, 1, 3, 3, 2], 3) == [0, 1, 1, 2, 0]
    assert owners([5, 5], 1) == [0, 0]


@pytest.mark.slow
def test_split_steps_on_three_ranks_equal_one_process_bit_for_bit(tmp_path: Path) -> None:
    script = tmp_path / "muon_owners.py"
    script.write_text(SCRIPT)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"]
    r = subprocess.run([*torchrun, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {0: [22, 6, 16, 2, 1], 1: [22, 6, 16, 2, 1], 2: [20, 4, 16, 1, 0]}
    for rank in range(3):
        lines = (tmp_path / f"rank{rank}.txt").read_text().splitlines()
        assert len(lines) == 20
        for line in lines:
            dtype, cautious, i, *checks = line.split()
            assert checks[:6] == ["ddp", "True", "fsdp", "True", "momentum", "True"], (rank, line)
            assert int(checks[-1]) == rows[rank][int(i)], (rank, line)  # the momentum stays sharded
