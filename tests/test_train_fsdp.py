"""``gpt2 train --parallel fsdp`` on two gloo ranks under torchrun: the same run as DDP's, sharded checkpoints
that every reader of a model takes as they are, resume at another world size, and exact resume after SIGKILL
(Muon's runs under FSDP are tests/test_train_fsdp_muon.py's, its kill and resume tests/test_resume_crossing.py's)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
import torch
from cli_helpers import gpt2_here, losses, metrics, run_and_kill, train_cmd
from gpt2_core.model import GPT

HELLASWAG = Path(__file__).parents[1] / "packages" / "gpt2-train" / "tests" / "data" / "hellaswag_mini.jsonl"


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def evals(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in metrics(run_dir) if "train/loss" not in r]


@pytest.mark.slow
def test_two_fsdp_ranks_match_ddp_and_the_checkpoint_is_a_model(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 256 tokens a step: 2 ranks x 2 micro-batches of 2 x 32, so accumulation without a reduce-scatter in the
    # first micro-batch. fp32, as FSDP is on CPUs. Val loss, HellaSwag (5 examples: one rank scores an extra
    # one and does not count it) and samples, which only rank 0 takes, all run on the sharded model.
    args = ["--precision", "fp32", "--total-batch-tokens", "256", "--max-steps", "6", "--lr", "1e-3"]
    args += ["--warmup-steps", "1", "--checkpoint-every-steps", "2", "--checkpoint-every-seconds", "0"]
    args += ["--eval-every", "3", "--eval-batches", "2", "--hellaswag-every", "6", "--hellaswag-limit", "5"]
    args += ["--hellaswag-file", str(HELLASWAG), "--sample-every", "3", "--sample-tokens", "4"]
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    run(train_cmd(data_dir, ddp, *args, ranks=2))
    r = run(train_cmd(data_dir, fsdp, *args, "--parallel", "fsdp", ranks=2))
    assert "2 rank(s) sharded (fsdp)" in r.stderr and "accumulation 2" in r.stderr

    a, b = losses(fsdp), losses(ddp)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a), (a, b)
    for x, y in zip(evals(fsdp), evals(ddp), strict=True):
        assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], abs=1e-5) for k in x), (x, y)
    texts = [(fsdp / "texts.jsonl").read_text().splitlines(), (ddp / "texts.jsonl").read_text().splitlines()]
    samples = [[json.loads(t)["text"] for t in run_texts if '"samples"' in t] for run_texts in texts]
    assert len(samples[0]) == 2 and samples[0] == samples[1]

    latest = fsdp / "latest"
    state = json.loads((latest / "state.json").read_text())
    assert state["layout"] == "dcp" and state["world_size"] == 2
    assert {"sharded/__0_0.distcp", "sharded/__1_0.distcp", "sharded/.metadata"} <= set(state["files"])
    ranks = torch.load(latest / "ranks.pt", weights_only=True)
    assert [s["source"]["rank"] for s in ranks] == [0, 1]
    # One process reads the shards of both ranks into one model: the weights DDP trained.
    mine, theirs = GPT.from_pretrained(latest).state_dict(), GPT.from_pretrained(ddp / "latest").state_dict()
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=1e-5, msg=k)
    code, out, err = gpt2_here(capsys, "generate", "--model", str(latest), "--max-tokens", "4", "--seed", "0")
    assert code == 0 and out.strip(), err
    code, _, err = gpt2_here(
        capsys, "export", "--format", "hf", "--model", str(latest), "--out", str(tmp_path / "hf")
    )
    assert code == 0 and (tmp_path / "hf" / "model.safetensors").is_file(), err

    # Another world size: one process resumes the 2-rank checkpoint of step 4. DCP re-shards the weights and
    # AdamW's state; the data stream goes on from the same point, now read by one rank with twice the
    # accumulation, which is the same tokens in the same steps: the losses of the 2-rank run, within 1e-5.
    one = tmp_path / "one"
    resume = ["--resume", str(fsdp / "step_00000004"), "--parallel", "fsdp"]
    r = run(train_cmd(data_dir, one, *args, *resume))
    assert "resuming 1 rank(s) from a checkpoint of 2" in r.stderr and "accumulation 4" in r.stderr
    c = losses(one)
    assert sorted(c) == [5, 6] and all(abs(c[s] - b[s]) < 1e-5 for s in c), (c, b)


@pytest.mark.slow
def test_two_fsdp_ranks_killed_and_resumed_end_bit_identical(data_dir: Path, tmp_path: Path) -> None:
    """The SIGKILL test of DDP (test_train_resume_ddp.py) with sharded checkpoints: every rank killed at once,
    perhaps while writing its shards, and the same command started again."""
    args = ["--parallel", "fsdp", "--total-batch-tokens", "256", "--max-steps", "9", "--lr", "3e-3"]
    args += ["--warmup-steps", "3", "--checkpoint-every-steps", "3", "--checkpoint-every-seconds", "1"]
    args += ["--resume", "auto"]
    ref = tmp_path / "ref"
    run(train_cmd(data_dir, ref, *args, ranks=2))

    killed = tmp_path / "killed"
    run_and_kill(
        train_cmd(data_dir, killed, *args, ranks=2), killed, random.Random(os.getpid()).randint(4, 7)
    )
    r = run(train_cmd(data_dir, killed, *args, ranks=2))
    assert "resumed from" in r.stderr
    assert losses(killed)[9] == losses(ref)[9]
    for name in ["__0_0.distcp", "__1_0.distcp"]:  # weights and optimizer state, each rank's part
        a = (killed / "latest" / "sharded" / name).read_bytes()
        assert a == (ref / "latest" / "sharded" / name).read_bytes(), name
