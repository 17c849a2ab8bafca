"""A resume continues the run it resumes: its configuration is the checkpoint's, changed only by the flags the
user types (and said so in one line); those reach the optimizer; ``latest``, pruning and ``--resume auto``
follow the newest branch; an early-stopped run stays stopped. Each test is a command line as a user types it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import gpt2_here, metrics
from waiting import DEADLINE, wait_until

# tiny's recipe (Muon + WSD) on the nano model and the suite's small corpus: a step is a fraction of a second.
NANO = ["--model", "nano", "--micro-batch", "2", "--seq-len", "32", "--total-batch-tokens", "64"]
QUIET = ["--checkpoint-every-seconds", "0", "--device", "cpu", "--cpu-matmul", "torch", "--logger", "jsonl"]


def base(data_dir: Path, run: Path) -> list[str]:
    return ["train", "--preset", "tiny", *NANO, *QUIET, "--data-dir", str(data_dir), "--run-dir", str(run)]


def last_logged(run: Path) -> int:
    """The step of the last row of ``RUN/metrics.jsonl`` (0 while it cannot be read)."""
    try:
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    except (OSError, IndexError, ValueError, KeyError):
        return 0


def lrs(run: Path, key: str = "train/lr") -> dict[int, float]:
    return {r["step"]: r[key] for r in metrics(run) if key in r}


def test_changed_optimizer_settings_reach_the_optimizer_and_are_named(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    c = [*base(data_dir, run), "--warmup-steps", "2", "--eval-every", "0"]
    code, _, err = gpt2_here(capsys, *c, "--max-steps", "4", "--muon-lr", "0.01")
    assert code == 0, err
    muon = ["--muon-weight-decay", "0.01", "--muon-cautious-weight-decay"]
    muon += ["--muon-momentum-warmup-steps", "8", "--muon-momentum-start", "0.7"]
    code, _, err = gpt2_here(
        capsys, *c, "--max-steps", "6", "--muon-lr", "0.002", "--weight-decay", "0", *muon, "--resume", "auto"
    )
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("resumed from"))
    assert "at step 4:" in line
    for change in (
        "--max-steps 4 -> 6",
        "--muon-lr 0.01 -> 0.002",
        "--weight-decay 0.1 -> 0",
        "--muon-weight-decay 0.0 -> 0.01",
        "--muon-cautious-weight-decay False -> True",
        "--muon-momentum-warmup-steps 0 -> 8",
    ):
        assert change in line, line
    state = torch.load(run / "latest" / "optimizer.pt", weights_only=True)["optimizers"]
    muon, adamw = state[0]["param_groups"], state[1]["param_groups"]
    assert muon[0]["lr_scale"] == pytest.approx(0.002 / 2e-3)
    assert muon[0]["cautious_weight_decay"] and muon[0]["weight_decay"] == 0.01
    # The last step (0-based 5) ran 5/8 of the way from 0.7 to tiny's --muon-momentum 0.8.
    assert muon[0]["momentum"] == pytest.approx(0.7 + 5 / 8 * 0.1)
    assert adamw[0]["weight_decay"] == 0.0
    # Logged per optimizer: Muon's matrices at --muon-lr's scale of the schedule.
    lr, muon_lr = lrs(run), lrs(run, "train/lr_muon")
    assert sorted(muon_lr) == list(range(1, 7))
    for step in range(1, 7):
        assert muon_lr[step] / lr[step] == pytest.approx((0.01 if step <= 4 else 0.002) / 2e-3), step

    # A new --lr alone leaves Muon's peak where --muon-lr (the checkpoint's 0.002) puts it.
    code, _, err = gpt2_here(capsys, *c, "--max-steps", "8", "--lr", "1e-3", "--resume", "auto")
    assert code == 0, err
    assert "--lr 0.002 -> 0.001" in err and "--muon-lr" not in err
    lr, muon_lr = lrs(run), lrs(run, "train/lr_muon")
    assert muon_lr[8] / lr[8] == pytest.approx(0.002 / 1e-3)


@pytest.mark.slow
def test_extension_from_stable_as_the_readme_types_it_keeps_the_schedule(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    planned = ["--warmup-steps", "5", "--eval-every", "10", "--eval-batches", "2"]
    code, _, err = gpt2_here(capsys, *base(data_dir, run), "--max-steps", "20", *planned)
    assert code == 0, err
    assert os.readlink(run / "stable") == "step_00000012"
    # gpt2-train's README: gpt2 train --preset tiny --run-dir R --resume R/stable --max-steps LONGER
    extend = ["train", "--preset", "tiny", "--run-dir", str(run), "--resume", str(run / "stable")]
    code, _, err = gpt2_here(capsys, *extend, "--max-steps", "30")
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("resumed from"))
    assert "at step 12 as a new branch" in line and line.endswith(": --max-steps 20 -> 30"), line
    # The stable phase goes on at --lr (no second warm-up) up to the new decay, val loss every 10 steps.
    lr = lrs(run)
    assert all(lr[s] == pytest.approx(2e-3) for s in range(13, 19)), lr
    assert lr[30] < lr[20] < 2e-3
    assert sorted(r["step"] for r in metrics(run) if "val/loss" in r) == [10, 20, 30]
    assert os.readlink(run / "stable") == "step_00000018"


@pytest.mark.slow
def test_an_interrupted_extension_is_what_latest_and_resume_auto_follow(
    data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    c2 = [*base(data_dir, run)[1:], "--checkpoint-every-steps", "2", "--keep", "3", "--eval-every", "0"]
    c2 += ["--warmup-steps", "2"]
    command = [sys.executable, "-m", "gpt2_cli", "train", *c2]
    done = subprocess.run([*command, "--max-steps", "30"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert os.readlink(run / "stable") == "step_00000018"
    # The extension, stopped by SIGTERM once past step 20: it saves where it stops, and says where.
    extension = subprocess.Popen(
        [*command, "--max-steps", "60", "--resume", str(run / "stable")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    # The first run's rows end at 30; the extension's, rewound to 18, go on from there.
    wait_until(
        lambda: 20 < last_logged(run) < 30 or extension.poll() is not None, "the extension past step 20"
    )
    assert extension.poll() is None, "the extension ended before it could be stopped"
    extension.send_signal(signal.SIGTERM)
    _, err = extension.communicate(timeout=DEADLINE)
    assert extension.returncode == 128 + signal.SIGTERM, err
    stopped_at = int((run / "latest").resolve().name.removeprefix("step_"))
    assert 20 < stopped_at < 30 and (run / "latest").is_dir()
    assert f"model: {run / 'latest'}" in err
    # The extension's own checkpoints are kept (the newest 3 of its lineage), the abandoned run's too.
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("step_"))
    assert "step_00000020" in names and "step_00000030" in names, names

    r = subprocess.run([*command, "--max-steps", "31", "--resume", "auto"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"at step {stopped_at}:" in r.stderr and "--max-steps 60 -> 31" in r.stderr, r.stderr
    assert os.readlink(run / "latest") == "step_00000031"


def test_a_finished_run_resumed_longer_says_the_lr_jumps(data_dir: Path, tmp_path: Path, capsys) -> None:
    cosine, wsd = tmp_path / "cosine", tmp_path / "wsd"
    c = ["--optimizer", "adamw", "--lr-schedule", "cosine", "--warmup-steps", "2", "--eval-every", "0"]
    assert gpt2_here(capsys, *base(data_dir, cosine), *c, "--max-steps", "6")[0] == 0
    code, _, err = gpt2_here(capsys, *base(data_dir, cosine), "--max-steps", "8", "--resume", "auto")
    assert code == 0, err
    jump = next(x for x in err.splitlines() if "learning rate jumps" in x)
    assert "at step 6" in jump and "cosine run cannot be extended" in jump, jump
    assert lrs(cosine)[7] > 1.5 * lrs(cosine)[6]

    assert gpt2_here(capsys, *base(data_dir, wsd), "--warmup-steps", "2", "--max-steps", "6")[0] == 0
    code, _, err = gpt2_here(capsys, *base(data_dir, wsd), "--max-steps", "8", "--resume", "auto")
    assert code == 0, err
    assert f"resume {wsd / 'stable'} instead" in err, err


def test_an_early_stopped_run_stays_stopped(data_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    # A min-delta no val loss can beat: the evaluations after the first at step 2 count as no better.
    c = [*base(data_dir, run), "--max-steps", "40", "--eval-every", "2", "--eval-batches", "2"]
    c += ["--early-stop-patience", "2", "--early-stop-min-delta", "10", "--resume", "auto"]
    code, _, err = gpt2_here(capsys, *c)
    assert code == 0, err
    first = next(r["val/loss"] for r in metrics(run) if r["step"] == 2 and "val/loss" in r)
    line = next(x for x in err.splitlines() if x.startswith("early stop at step 6"))
    assert f"without one below {first:.4f} - 10" in line, line  # the val loss it compared with
    names = sorted(p.name for p in run.iterdir())
    for _ in range(2):  # requeued: the same command line again
        code, _, err = gpt2_here(capsys, *c)
        assert code == 0, err
        assert "the run stopped early at step 6" in err and "--early-stop-patience" in err
        assert sorted(p.name for p in run.iterdir()) == names
        assert os.readlink(run / "latest") == "step_00000006"
    # Asking for more: a larger patience trains on.
    code, _, err = gpt2_here(capsys, *c[:-4], "--early-stop-patience", "3", "--resume", "auto")
    assert code == 0, err
    assert "early stop at step 8" in err


def test_early_stopping_without_evaluations_is_refused(data_dir: Path, tmp_path: Path, capsys) -> None:
    c = [*base(data_dir, tmp_path / "run"), "--early-stop-patience", "3", "--eval-every", "0"]
    code, _, err = gpt2_here(capsys, *c)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--early-stop-patience" in err and "--eval-every" in err
    assert not (tmp_path / "run").exists()


def test_naming_the_preset_again_changes_nothing_the_run_set(data_dir: Path, tmp_path: Path, capsys) -> None:
    """A run started with a TOML file of its own settings, resumed with the preset alone: the run's settings
    hold (here its --lr and batch), and the start line names no change."""
    run = tmp_path / "run"
    toml = tmp_path / "run.toml"
    toml.write_text("lr = 1e-3\nwarmup_steps = 1\neval_every = 0\nseq_len = 16\nmicro_batch = 4\n")
    c = ["train", "--preset", "tiny", "--model", "nano", *QUIET, "--data-dir", str(data_dir)]
    code, _, err = gpt2_here(capsys, *c, "--config", str(toml), "--run-dir", str(run), "--max-steps", "3")
    assert code == 0, err
    resume = ["train", "--preset", "tiny", "--run-dir", str(run), "--resume", "auto", "--max-steps", "5"]
    code, _, err = gpt2_here(capsys, *resume)
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("resumed from"))
    assert line.endswith("at step 3: --max-steps 3 -> 5"), line
    saved = json.loads((run / "latest" / "state.json").read_text())["config"]
    assert (saved["lr"], saved["seq_len"], saved["micro_batch"], saved["max_steps"]) == (1e-3, 16, 4, 5)
