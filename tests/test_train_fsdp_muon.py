"""``gpt2 train --optimizer muon --parallel fsdp`` on two and three gloo ranks under torchrun: the run of one
process, and resume at another world size, Muon's momentum re-sharded by DCP. (Exact resume after SIGKILL is
tests/test_resume_crossing.py's; the split steps themselves on three ranks, bit for bit, are
packages/gpt2-train/tests/test_muon_owners.py's.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from cli_helpers import losses, train_cmd
from gpt2_core.model import GPT

# 384 tokens a step: 1 process x 6 micro-batches of 2 x 32, 2 ranks x 3 or 3 ranks x 2: the same tokens in the
# same steps. fp32, so that Muon orthogonalises in fp32 (gpt2_train.muon) and only the order of the gradient
# sums differs from one process: losses and weights within 1e-5. Three ranks cut the nano model's matrices
# unevenly (32 rows: 11, 11, 10; 128 rows: 43, 43, 42), all but its 96-row QKV.
ARGS = ["--optimizer", "muon", "--precision", "fp32", "--total-batch-tokens", "384", "--max-steps", "6"]
ARGS += [
    "--lr",
    "1e-3",
    "--warmup-steps",
    "1",
    "--checkpoint-every-steps",
    "2",
    "--checkpoint-every-seconds",
    "0",
]
TOL = 1e-5


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def one_process(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    one = tmp_path_factory.mktemp("muon") / "one"
    run(train_cmd(data_dir, one, *ARGS))
    return one


@pytest.fixture(scope="module")
def two_ranks(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    two = tmp_path_factory.mktemp("muon") / "two"
    r = run(train_cmd(data_dir, two, *ARGS, "--parallel", "fsdp", ranks=2))
    assert "2 rank(s) sharded (fsdp)" in r.stderr and "accumulation 3" in r.stderr
    return two


def assert_same_run(got: Path, one_process: Path, steps: list[int]) -> None:
    a, b = losses(got), losses(one_process)
    assert sorted(a) == steps and all(abs(a[s] - b[s]) < TOL for s in a), (a, b)
    mine = GPT.from_pretrained(got / "latest").state_dict()
    theirs = GPT.from_pretrained(one_process / "latest").state_dict()
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=TOL, msg=k)


@pytest.mark.slow
def test_two_fsdp_muon_ranks_match_one_process(two_ranks: Path, one_process: Path) -> None:
    assert_same_run(two_ranks, one_process, [1, 2, 3, 4, 5, 6])
    state = json.loads((two_ranks / "latest" / "state.json").read_text())
    assert state["layout"] == "dcp" and state["world_size"] == 2


@pytest.mark.slow
def test_fsdp_muon_resumed_on_three_ranks_from_two_goes_on_as_one_process(
    data_dir: Path, tmp_path: Path, two_ranks: Path, one_process: Path
) -> None:
    """Two ranks' checkpoint of step 2 (each rank half of every momentum buffer) resumed by three (a third
    each, unevenly): DCP re-shards the momentum as it does AdamW's state, and the data stream goes on from the
    same point; three ranks' four steps, on uneven shards, then end as the one process's. Not bit-identical
    (three ranks sum the gradients in another order than two, as one process does): the uninterrupted
    one-process run's losses and weights within 1e-5."""
    three = tmp_path / "three"
    resume = ["--parallel", "fsdp", "--resume", str(two_ranks / "step_00000002")]
    r = run(train_cmd(data_dir, three, *ARGS, *resume, ranks=3))
    assert "resuming 3 rank(s) from a checkpoint of 2" in r.stderr and "3 rank(s) sharded (fsdp)" in r.stderr
    assert_same_run(three, one_process, [3, 4, 5, 6])
