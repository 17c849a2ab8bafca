"""Each step logged once after a resume: every built-in logger forgets what a run logged past the
checkpoint it is resumed from."""

from __future__ import annotations

import json
from pathlib import Path

from gpt2_train.loggers import JsonlLogger
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, small_config, small_model


def _run(run_dir: Path, **overrides: object) -> None:
    cfg = small_config(run_dir, loggers=["jsonl", "tensorboard"], **overrides)
    Trainer(cfg, model=small_model(), train_source=CountingSource()).fit()


def _tb_steps(run_dir: Path, tag: str = "train/loss") -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_resuming_an_earlier_checkpoint_logs_each_step_once(tmp_path: Path) -> None:
    """A run that logged 8 steps resumed from its step-3 checkpoint: what it is after a kill at step 8."""
    run = tmp_path / "run"
    _run(run, max_steps=8, checkpoint_every_steps=3, keep=5)
    first = {r["step"]: r["train/loss"] for r in map(json.loads, (run / "metrics.jsonl").open())}
    _run(run, max_steps=10, checkpoint_every_steps=3, keep=5, resume=str(run / "step_00000003"))

    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == list(range(1, 11))
    # Steps 1-3 are the first run's rows, kept; 4-8 the resumed run's (equal: the resume is exact).
    assert [r["train/loss"] for r in rows[:3]] == [first[s] for s in (1, 2, 3)]
    tb = _tb_steps(run)
    assert [s for s, _ in tb] == steps
    assert all(abs(v - r["train/loss"]) < 1e-6 for (_, v), r in zip(tb, rows))
    texts = [json.loads(line) for line in (run / "texts.jsonl").open()]
    assert [t["tag"] for t in texts] == ["config"]  # the resumed run does not log its config again


def test_a_fresh_start_forgets_an_earlier_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(run, max_steps=6)
    _run(run, max_steps=4, overwrite=True)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()] == [1, 2, 3, 4]
    assert [s for s, _ in _tb_steps(run)] == [1, 2, 3, 4]


def test_rewind_drops_a_line_cut_short_by_a_kill(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    lg = JsonlLogger(tmp_path, cfg)
    for step in (1, 2, 3):
        lg.log({"train/loss": float(step)}, step)
    lg.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "train/lo')  # what SIGKILL mid-write leaves
    lg = JsonlLogger(tmp_path, cfg)
    lg.rewind(2)
    lg.log({"train/loss": 3.5}, 3)
    lg.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.5)]


def test_metrics_jsonl_is_kept_whatever_loggers_are_chosen(tmp_path: Path) -> None:
    """--logger wandb replaces the defaults; metrics.jsonl, the run's own record (gpt2 plot reads it), stays."""
    Trainer(
        small_config(tmp_path, loggers=["tensorboard"]), model=small_model(), train_source=CountingSource()
    ).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r][:3] == [1, 2, 3]
