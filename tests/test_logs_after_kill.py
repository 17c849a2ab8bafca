"""A run SIGKILLed between checkpoints and resumed with --resume auto shows each step once in every
logger (the killed run had logged steps past its checkpoint, which the resumed run logs again)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_helpers import metrics, run_and_kill, train_cmd


@pytest.mark.slow
def test_killed_between_checkpoints_and_resumed_logs_each_step_once(data_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["--logger", "tensorboard", "--total-batch-tokens", "128", "--max-steps", "16"]
    args += ["--checkpoint-every-steps", "5", "--checkpoint-every-seconds", "0", "--resume", "auto"]
    run = tmp_path / "run"
    run_and_kill(train_cmd(data_dir, run, *args), run, 7)
    killed_at = max(r["step"] for r in metrics(run))
    checkpoint = int((run / "latest").resolve().name.split("_")[1])
    assert killed_at > checkpoint, (
        "the kill must land after the last checkpoint for this test to mean anything"
    )

    r = subprocess.run(train_cmd(data_dir, run, *args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"at step {checkpoint}" in r.stderr

    steps = [row["step"] for row in metrics(run) if "train/loss" in row]
    assert steps == list(range(1, 17))
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    for tag in ("train/loss", "train/lr", "train/grad_norm"):
        assert [e.step for e in acc.Scalars(tag)] == steps, tag
