"""Checkpoints: atomic directories that are model directories, latest, pruning, fallback and refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_train.checkpointer import Checkpointer, CheckpointParts
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, Crash, CrashingSource, small_config, small_model


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_checkpoint_is_a_model_directory(make_trainer, tmp_path: Path) -> None:
    tr = make_trainer(max_steps=4, checkpoint_every_steps=2)
    tr.fit()
    run = tmp_path / "run"
    assert os.readlink(run / "latest") == "step_00000004"
    assert sorted(p.name for p in Checkpointer(run).checkpoints()) == ["step_00000002", "step_00000004"]
    loaded = GPT.from_pretrained(run / "latest")
    for k, v in tr.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    state = json.loads((run / "latest" / "state.json").read_text())
    assert state["step"] == 4 and state["tokens_seen"] == 4 * 128 and state["world_size"] == 1


class Progress:
    """The loop's counters, as the trainer hands them to the checkpointer."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def test_keep_last_k_plus_best(tmp_path: Path) -> None:
    model, progress = small_model(), Progress()
    opt = torch.optim.AdamW(model.parameters())
    parts = CheckpointParts(model, opt, CountingSource(), progress, {"optimizer": "adamw"})
    ck = Checkpointer(tmp_path, keep=2, parts=parts)
    for step, val in [(1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, None)]:
        progress.step = step
        ck.save(val_loss=val)
    assert [p.name for p in ck.checkpoints()] == ["step_00000002", "step_00000004", "step_00000005"]
    assert os.readlink(tmp_path / "best") == "step_00000002"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.deleting"))
    progress.step = 0
    assert ck.resume(str(tmp_path / "best")) == (tmp_path / "step_00000002").resolve()
    assert progress.step == 2


def test_save_and_resume_need_the_parts(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="parts"):
        Checkpointer(tmp_path).save()


def test_unfinished_write_is_ignored(make_trainer, tmp_path: Path) -> None:
    make_trainer(max_steps=2).fit()
    run = tmp_path / "run"
    (run / "step_00000009.tmp").mkdir()  # a crash mid-write leaves this behind
    assert [p.name for p in Checkpointer(run).checkpoints()] == ["step_00000002"]


def test_corrupt_newest_falls_back_with_warning(make_trainer, tmp_path: Path, capsys) -> None:
    make_trainer(max_steps=4, checkpoint_every_steps=2).fit()
    run = tmp_path / "run"
    newest = run / "step_00000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    tr = make_trainer(max_steps=6, resume="latest")
    tr.start()  # resuming happens here, not in the constructor
    assert tr.step == 2
    assert "step_00000004 is unreadable" in capsys.readouterr().err
    tr.fit()
    assert os.readlink(run / "latest") == "step_00000006"


def test_no_readable_checkpoint(make_trainer, tmp_path: Path) -> None:
    make_trainer(max_steps=2).fit()
    (tmp_path / "run" / "step_00000002" / "state.json").write_text("{")
    with pytest.raises(UserError, match="no readable checkpoint"):
        make_trainer(max_steps=4, resume="latest").start()


def test_incompatible_model_refused_naming_the_difference(make_trainer, tmp_path: Path) -> None:
    make_trainer(max_steps=2).fit()
    with pytest.raises(UserError, match=r"n_embd: checkpoint 16, this run 32"):
        make_trainer(max_steps=4, resume="latest", model=small_model(n_embd=32)).start()


def test_fresh_run_refuses_existing_checkpoints(make_trainer, tmp_path: Path) -> None:
    make_trainer(max_steps=2).fit()
    with pytest.raises(UserError, match="already holds checkpoints: pass --resume auto"):
        make_trainer(max_steps=2)
    tr = make_trainer(max_steps=1, overwrite=True)
    tr.start()
    assert Checkpointer(tmp_path / "run").checkpoints() == []
    tr.fit()


def test_resume_nothing(make_trainer) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        make_trainer(resume="latest").start()


def test_resume_auto_starts_fresh_then_continues(make_trainer, tmp_path: Path, capsys) -> None:
    first = make_trainer(max_steps=2, resume="auto")
    first.start()
    assert first.step == 0 and "no checkpoint in" in capsys.readouterr().err
    first.fit()
    second = make_trainer(max_steps=4, resume="auto")
    second.start()
    assert second.step == 2
    assert second.fit().step == 4


def test_exact_resume_after_crash(tmp_path: Path) -> None:
    """Crash mid-run, resume from latest: the final weights equal an uninterrupted run's, bit for bit."""

    def run(run_dir: Path, source: CountingSource, **kw: object) -> Trainer:
        cfg = small_config(run_dir, max_steps=10, checkpoint_every_steps=3, **kw)
        return Trainer(
            cfg, model=small_model(), train_source=source, val_source=CountingSource(4, 16, seed=2)
        )

    ref = run(tmp_path / "a", CountingSource(4, 16, seed=1))
    ref.fit()
    with pytest.raises(Crash):
        run(tmp_path / "b", CrashingSource(4, 16, seed=1, crash_at=15)).fit()  # during step 8
    resumed = run(tmp_path / "b", CountingSource(4, 16, seed=1), resume="latest")
    resumed.start()
    assert resumed.step == 6
    resumed.fit()
    for k, v in ref.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    for a, b in zip(ref.optimizer.state.values(), resumed.optimizer.state.values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
