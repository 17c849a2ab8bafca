"""A step's loss is the mean over every counted target of the step: the same gradient for one batch, any
accumulation, and two gloo ranks, whatever the number of counted targets in each micro-batch and rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gpt2_train.distributed import DistEnv
from gpt2_train.evals import val_loss
from gpt2_train.step import TrainStep

from . import weighting_cases as cases
from .weighting_cases import Batches, gradient, rows, stack


def reference() -> tuple[torch.Tensor, float]:
    """All four rows in one micro-batch: the mean over the step's 28 counted targets."""
    return gradient(cases.model(), [stack(rows())])


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("split", [[2, 2], [1, 1, 1, 1], [1, 3], [3, 1]])
def test_accumulation_gives_the_gradient_of_one_batch(split: list[int]) -> None:
    ref_grad, ref_loss = reference()
    parts, i = [], 0
    for n in split:
        parts.append(stack(rows()[i : i + n]))
        i += n
    grad, loss = gradient(cases.model(), parts)
    assert rel_diff(grad, ref_grad) < 1e-5
    assert loss == pytest.approx(ref_loss, rel=1e-6)


def test_two_gloo_ranks_give_the_gradient_of_one_batch(tmp_path: Path) -> None:
    """Under DDP and sharded: one reduce-scatter, in the last micro-batch, of gradients weighted by counts."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    r = subprocess.run(
        [*torchrun, cases.__file__, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ref_grad, ref_loss = reference()
    ref_val = val_loss(cases.model(), Batches([stack(rows())]), 1, DistEnv())
    for name in ["rank0", "rank1", "fsdp-rank0", "fsdp-rank1"]:  # DDP, then the model sharded (FSDP)
        grad, loss, val = torch.load(tmp_path / f"{name}.pt")
        assert rel_diff(grad, ref_grad) < 1e-5
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        assert val == pytest.approx(ref_val, rel=1e-6)  # val loss: total NLL / total targets, too


def test_val_loss_is_per_target_not_a_mean_of_batch_means() -> None:
    net, env = cases.model(), DistEnv()
    per_row = val_loss(net, Batches(rows()), 4, env)
    assert per_row == pytest.approx(val_loss(net, Batches([stack(rows())]), 1, env), rel=1e-6)


def test_a_step_without_counted_targets_is_skipped_not_nan() -> None:
    net = cases.model()
    before = [p.detach().clone() for p in net.parameters()]
    x, y = rows()[2]  # the row with no counted target
    step = TrainStep(
        net, torch.optim.AdamW(net.parameters()), grad_accum=2, grad_clip=1.0, device=torch.device("cpu")
    )
    res = step(Batches([(x, y), (x, y)]), lr=1e-2)
    assert res.targets == 0 and bool(res.finite)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
