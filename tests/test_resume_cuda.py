"""On a GPU, as ``gpt2 train`` runs there by default (bf16 autocast, compiled, fused AdamW): a run SIGKILLed
after a checkpoint and resumed with ``--resume latest`` logs, step for step, the losses of an uninterrupted
run. Within 1e-3 rather than bit for bit: cuBLAS and compiled kernels need not repeat their sums exactly
from one process to the next. ``bench/gpu_acceptance.py`` runs this with the other ``cuda`` tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_helpers import losses, run_and_kill, train_cmd

STEPS = 200
ON_GPU = ["--device", "cuda", "--total-batch-tokens", "128", "--max-steps", str(STEPS), "--log-every", "1"]
ON_GPU += ["--checkpoint-every-steps", "20", "--checkpoint-every-seconds", "0"]


@pytest.mark.cuda
@pytest.mark.slow
def test_killed_after_a_checkpoint_and_resumed_on_a_gpu_follows_the_uninterrupted_run(
    data_dir: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    r = subprocess.run(train_cmd(data_dir, reference, *ON_GPU), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr

    run = tmp_path / "run"
    # Killed wherever it is once step 30 is logged (a GPU runs on meanwhile): after at least one checkpoint.
    run_and_kill(train_cmd(data_dir, run, *ON_GPU), run, 30)
    checkpoint = int((run / "latest").resolve().name.removeprefix("step_"))
    assert 20 <= checkpoint < STEPS
    r = subprocess.run(
        train_cmd(data_dir, run, *ON_GPU, "--resume", "latest"), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert f"at step {checkpoint}" in r.stderr

    expected, resumed = losses(reference), losses(run)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(checkpoint + 1, STEPS + 1):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-3), step
