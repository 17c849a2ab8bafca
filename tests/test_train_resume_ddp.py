"""The guarantees that need real processes: exact resume after SIGKILL, DDP == accumulation, early stopping on
every rank at once, two nodes."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import losses, metrics, run_and_kill, train_cmd


@pytest.mark.slow
def test_same_command_killed_twice_ends_bit_identical(data_dir: Path, tmp_path: Path) -> None:
    """A requeued job: the same command line (--resume auto) for the first start and each restart. (Muon's
    kill and resume, in one process and under DDP and FSDP, are tests/test_resume_crossing.py's.)"""
    # Checkpoints every 3 steps and on a 1-second clock too, so a kill may land mid-write.
    args = [
        "--total-batch-tokens",
        "128",
        "--max-steps",
        "24",
        "--checkpoint-every-steps",
        "3",
        "--checkpoint-every-seconds",
        "1",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "3",
        "--resume",
        "auto",
    ]
    ref = tmp_path / "ref"
    subprocess.run(train_cmd(data_dir, ref, *args), check=True, capture_output=True, timeout=300)

    run = tmp_path / "killed"
    rng = random.Random(os.getpid())
    first = rng.randint(4, 9)  # arbitrary steps
    run_and_kill(train_cmd(data_dir, run, *args), run, first)
    run_and_kill(train_cmd(data_dir, run, *args), run, rng.randint(first + 4, 16))
    r = subprocess.run(train_cmd(data_dir, run, *args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    assert (run / "latest" / "model.safetensors").read_bytes() == (
        ref / "latest" / "model.safetensors"
    ).read_bytes()
    assert (run / "latest" / "optimizer.pt").stat().st_size == (
        ref / "latest" / "optimizer.pt"
    ).stat().st_size
    assert losses(run)[24] == losses(ref)[24]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "cpu_matmul", "optimizer"),
    [
        ("auto", "auto", "adamw"),
        ("fp32", "onednn", "adamw"),  # onednn: OneDNNLinear's autograd under DDP
        ("fp32", "auto", "muon"),
    ],
)
def test_two_gloo_ranks_match_one_process_with_twice_the_accumulation(
    data_dir: Path, tmp_path: Path, precision: str, cpu_matmul: str, optimizer: str
) -> None:
    # 256 tokens per step: 2 ranks x 2 micro-batches x (2 x 32), or 1 process x 4 micro-batches.
    args = [
        "--optimizer",
        optimizer,
        "--precision",
        precision,
        "--cpu-matmul",
        cpu_matmul,
        "--total-batch-tokens",
        "256",
        "--max-steps",
        "4",
        "--checkpoint-every-seconds",
        "0",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "1",
    ]
    one = tmp_path / "one"
    r = subprocess.run(train_cmd(data_dir, one, *args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    two = tmp_path / "two"
    r = subprocess.run(train_cmd(data_dir, two, *args, ranks=2), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "2 rank(s)" in r.stderr and "accumulation 2" in r.stderr

    # An fp32 run's Muon orthogonalises in fp32 (gpt2_train.muon): ranks and one process agree as AdamW's do.
    tol, weight_tol = 1e-5, 1e-5
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) < tol, (step, a[step], b[step])
    import torch
    from safetensors.torch import load_file

    if precision == "fp32":  # the weights after the last step too (rank 0's; DDP keeps the ranks equal)
        wa, wb = (
            load_file(one / "latest" / "model.safetensors"),
            load_file(two / "latest" / "model.safetensors"),
        )
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=weight_tol, msg=k)

    ranks = torch.load(two / "latest" / "ranks.pt", weights_only=True)
    assert [s["source"]["rank"] for s in ranks] == [0, 1]  # each rank's own position is saved


@pytest.mark.slow
def test_early_stop_ends_every_rank_after_the_same_evaluation(data_dir: Path, tmp_path: Path) -> None:
    """Two gloo ranks with --early-stop-patience 2 and a min-delta no val loss can beat: after the first val
    loss (step 2), those of steps 4 and 6 count as no better, so both ranks stop after step 6 together (a rank
    left training would hang the other in its next collective, and the job would not end), rank 0 says so once,
    and the last checkpoint holds both ranks' positions."""
    import torch

    args = [
        "--total-batch-tokens", "256", "--max-steps", "40", "--checkpoint-every-seconds", "0", "--eval-every", "2",
        "--eval-batches", "2", "--early-stop-patience", "2", "--early-stop-min-delta", "10",
    ]  # fmt: skip
    run = tmp_path / "run"
    r = subprocess.run(train_cmd(data_dir, run, *args, ranks=2), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if line.startswith("early stop")]
    assert len(said) == 1 and said[0].startswith("early stop at step 6: 2 val losses without one below"), said
    assert json.loads((run / "latest" / "state.json").read_text())["step"] == 6
    vals = {row["step"]: row["val/loss"] for row in metrics(run) if "val/loss" in row}
    assert sorted(vals) == [2, 4, 6]
    assert os.readlink(run / "best") == f"step_{min(vals, key=vals.get):08d}"  # the lowest val loss
    ranks = torch.load(run / "latest" / "ranks.pt", weights_only=True)
    assert [s["source"]["rank"] for s in ranks] == [0, 1]
    assert max(losses(run)) == 6


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor needs a C++ compiler"
)
def test_compiled_run_on_cpu_checkpoints_resumes_and_is_read_back(data_dir: Path, tmp_path: Path) -> None:
    """The path every GPU run takes by default (torch.compile), run by the suite on CPU with inductor:
    training with val loss and samples (other shapes than training), checkpoints without wrapper prefixes
    that gpt2 generate and gpt2 export read, and an exact resume after SIGKILL."""
    args = [
        "--compile",
        "--total-batch-tokens",
        "128",
        "--max-steps",
        "8",
        "--checkpoint-every-steps",
        "2",
        "--eval-every",
        "4",
        "--eval-batches",
        "2",
        "--sample-every",
        "4",
        "--sample-tokens",
        "8",
        "--resume",
        "auto",
    ]
    # One thread: inductor's multi-threaded CPU kernels add some gradients (the embedding's) with atomic adds,
    # in an order that differs between any two runs by ~1e-9, resumed or not; exactness is a one-thread claim.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    r = subprocess.run(train_cmd(data_dir, ref, *args), capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    logged = metrics(ref)
    assert [row["step"] for row in logged if "val/loss" in row] == [4, 8]
    samples = (ref / "texts.jsonl").read_text().splitlines()
    assert len([s for s in samples if '"samples"' in s]) == 2

    from safetensors import safe_open

    with safe_open(str(ref / "latest" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "transformer.wte.weight" in keys
    assert not [k for k in keys if k.startswith(("_orig_mod.", "module."))]

    run = tmp_path / "killed"
    run_and_kill(train_cmd(data_dir, run, *args), run, 3, env)
    r = subprocess.run(train_cmd(data_dir, run, *args), capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    assert (run / "latest" / "model.safetensors").read_bytes() == (
        ref / "latest" / "model.safetensors"
    ).read_bytes()
    assert losses(run)[8] == losses(ref)[8]

    gen = [sys.executable, "-m", "gpt2_cli", "generate", "--model", str(ref / "latest"), "--max-tokens", "5"]
    r = subprocess.run(gen, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    export = [sys.executable, "-m", "gpt2_cli", "export", "--format", "hf", "--model", str(ref / "latest")]
    r = subprocess.run([*export, "--out", str(tmp_path / "hf")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_through_c10d_rendezvous_match_one_process(data_dir: Path, tmp_path: Path) -> None:
    """What a two-node cluster runs, one torchrun agent per node: both agents meet through the c10d
    rendezvous (the first one to bind the endpoint hosts the store, as on a cluster's first node), train
    with gloo, checkpoint, and match one process accumulating the same global batch."""
    # 128 tokens per step: 2 nodes x 1 micro-batch x (2 x 32), or 1 process x 2 micro-batches.
    args = ["--total-batch-tokens", "128", "--max-steps", "4", "--checkpoint-every-steps", "2"]
    args += ["--lr", "1e-3", "--warmup-steps", "1", "--precision", "fp32"]
    one = tmp_path / "one"
    r = subprocess.run(train_cmd(data_dir, one, *args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    two = tmp_path / "two"
    port = free_port()
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={node}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=two-nodes",
                *train_cmd(data_dir, two, *args)[1:],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    try:
        outputs = [agent.communicate(timeout=300) for agent in agents]
    finally:
        for agent in agents:  # a hung rendezvous must not outlive the test
            agent.kill()
    for agent, (out, err) in zip(agents, outputs):
        assert agent.returncode == 0, err + out
    assert any("2 rank(s)" in err and "accumulation 1" in err for _, err in outputs)

    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    import torch
    from safetensors.torch import load_file

    ranks = torch.load(two / "latest" / "ranks.pt", weights_only=True)
    assert [s["source"]["rank"] for s in ranks] == [0, 1]
    wa, wb = load_file(one / "latest" / "model.safetensors"), load_file(two / "latest" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-5, msg=name)
