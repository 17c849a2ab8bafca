"""The training loop: it learns, skips non-finite steps, stops cleanly on signals, and logs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from gpt2_core.errors import RunStopped, UserError
from gpt2_core.model import GPT
from gpt2_train.checkpoint import read_checkpoint
from gpt2_train.checkpointer import Checkpointer
from gpt2_train.step import TrainStep
from gpt2_train.trainer import NonFiniteLoss, Trainer

from .conftest import CountingSource, small_config, small_model

HELLASWAG = Path(__file__).parent / "data" / "hellaswag_mini.jsonl"


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_it_learns(make_trainer, tmp_path: Path) -> None:
    res = make_trainer(max_steps=30, eval_every=10, eval_batches=2).fit()
    losses = [r["train/loss"] for r in rows(tmp_path / "run") if "train/loss" in r]
    assert len(losses) == 30
    assert losses[-1] < losses[0] - 1.0
    vals = [r["val/loss"] for r in rows(tmp_path / "run") if "val/loss" in r]
    assert len(vals) == 3 and res.best_val_loss == min(vals)


def test_logged_loss_is_the_mean_over_micro_batches(tmp_path: Path) -> None:
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    src = CountingSource(4, 16, seed=1)
    step = TrainStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        grad_accum=3,
        grad_clip=1.0,
        device=torch.device("cpu"),
    )
    res = step(src, lr=0.0)
    model.load_state_dict(before)
    src.reset()
    with torch.no_grad():
        expect = sum(float(model(*src.next_batch())[1]) for _ in range(3)) / 3
    assert float(res.loss) == pytest.approx(expect, rel=1e-6)


class NaNAt(torch.nn.Module):
    """A GPT whose loss is NaN on the forward passes numbered in ``bad`` (counting from 0)."""

    def __init__(self, model: GPT, bad: set[int]) -> None:
        super().__init__()
        self.inner, self.bad, self.calls = model, bad, 0

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits, loss = self.inner(x, y)
        if self.calls in self.bad:
            loss = loss * float("nan")
        self.calls += 1
        return logits, loss


def test_non_finite_step_is_skipped(tmp_path: Path) -> None:
    tr = Trainer(small_config(tmp_path, max_steps=1), model=small_model(), train_source=CountingSource())
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    step = TrainStep(
        NaNAt(tr.model, {1}), tr.optimizer, grad_accum=4, grad_clip=1.0, device=torch.device("cpu")
    )
    res = step(tr.train_source, lr=1e-2)
    assert not bool(res.finite)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert tr.optimizer.state == {} or all(int(s["step"]) == 0 for s in tr.optimizer.state.values())
    assert all(p.grad is None for p in tr.model.parameters())


def test_too_many_non_finite_steps_stop_the_run(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, max_steps=20, checkpoint_every_steps=2, max_nonfinite=3)
    tr = Trainer(cfg, model=small_model(), train_source=CountingSource())
    # Steps 5..7 (forward passes 8..13 at two micro-batches per step) are NaN.
    tr.start().model = NaNAt(tr.model, set(range(8, 14)))
    with pytest.raises(NonFiniteLoss, match="3 non-finite steps in a row by step 7") as stopped:
        tr.fit()
    assert isinstance(stopped.value, RunStopped) and not isinstance(stopped.value, UserError)  # exit 3, not 2
    ck = Checkpointer(tmp_path)
    assert ck.checkpoints()[-1].name == "step_00000006"
    good = read_checkpoint(ck.checkpoints()[-1])  # still complete and loadable
    assert good.state["step"] == 6
    logged = [r for r in rows(tmp_path) if "train/nonfinite" in r]
    assert [r["step"] for r in logged] == [5, 6, 7]


class Terminating(CountingSource):
    """Sends this process SIGTERM when asked for each batch number in ``at``."""

    def __init__(self, *at: int) -> None:
        super().__init__()
        self.at = at

    def next_batch(self):
        if self.pos in self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().next_batch()


def test_sigterm_stops_with_a_fresh_checkpoint(tmp_path: Path) -> None:
    source = Terminating(7)  # during step 4
    tr = Trainer(small_config(tmp_path, max_steps=50), model=small_model(), train_source=source)
    res = tr.fit()
    assert res.stopped_by == signal.SIGTERM and res.step == 4
    assert os.readlink(tmp_path / "latest") == "step_00000004"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_sigterm_keeps_the_promised_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`timeout N uv run gpt2 ...` delivers SIGTERM twice (timeout signals its process group, uv forwards its
    own): the second must not drop the checkpoint the first promised."""

    source = Terminating(6, 7)  # both during step 4 (its two micro-batches)
    tr = Trainer(small_config(tmp_path, max_steps=50), model=small_model(), train_source=source)
    res = tr.fit()
    assert res.stopped_by == signal.SIGTERM and res.step == 4
    assert os.readlink(tmp_path / "latest") == "step_00000004"
    assert capsys.readouterr().err.count("SIGTERM: stopping after this step with a checkpoint") == 1


def test_tensorboard_events_read_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Full GPT-2 vocabulary, so samples can be decoded and HellaSwag tokenized.
    cfg = small_config(
        tmp_path,
        max_steps=4,
        eval_every=2,
        eval_batches=1,
        hellaswag_every=4,
        hellaswag_file=str(HELLASWAG),
        sample_every=4,
        sample_prompt="def ",
        sample_tokens=5,
        loggers=["tensorboard", "jsonl", "console"],
    )
    model = small_model(vocab_size=50257, special_tokens={"<|endoftext|>": 50256})
    Trainer(cfg, model=model, train_source=CountingSource(), val_source=CountingSource(seed=2)).fit()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    expected = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "train/mfu", "val/loss"}
    assert expected | {"eval/hellaswag_acc_norm"} <= scalars
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    texts = set(acc.Tags()["tensors"])
    assert {"samples/text_summary", "config/text_summary"} <= texts
    sample = acc.Tensors("samples/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "def " in sample


def test_unknown_logger(tmp_path: Path) -> None:
    from gpt2_core.errors import UserError

    with pytest.raises(UserError, match="--logger: unknown logger 'nope'"):
        Trainer(small_config(tmp_path, loggers=["nope"]), model=small_model(), train_source=CountingSource())


def test_plugin_logger_factory_gets_run_dir_and_resolved_config(tmp_path: Path) -> None:
    seen = []

    class Recorder:
        def __init__(self, run_dir, config):
            seen.append((run_dir, config.max_steps))

        def log(self, metrics, step):
            seen.append(step)

        def log_text(self, tag, text, step):
            pass

        def close(self):
            seen.append("closed")

    cfg = small_config(tmp_path, max_steps=2, loggers=["rec"])
    Trainer(cfg, model=small_model(), train_source=CountingSource(), logger_registry={"rec": Recorder}).fit()
    assert seen == [(tmp_path, 2), 1, 2, "closed"]


def test_a_step_without_counted_targets_warns_once_and_is_not_non_finite(tmp_path: Path, capsys) -> None:
    class MaskedAt(CountingSource):
        def next_batch(self):
            x, y = super().next_batch()
            if self.pos in (3, 4):  # both micro-batches of step 2
                y = torch.full_like(y, -100)
            return x, y

    cfg = small_config(tmp_path, max_steps=4, max_nonfinite=1)
    tr = Trainer(cfg, model=small_model(), train_source=MaskedAt())
    res = tr.fit()
    assert res.step == 4  # max_nonfinite=1 would have stopped the run at a non-finite step
    err = capsys.readouterr().err
    assert err.count("no counted target") == 1 and "step 2" in err
    logged = rows(tmp_path)
    assert not any("train/nonfinite" in r for r in logged)
    assert sorted(r["step"] for r in logged if "train/loss" in r) == [1, 3, 4]


def test_components_say_when_they_are_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpt2_train import checkpointer
    from gpt2_train.evals import every

    assert [s for s in range(1, 11) if every(4, s, s == 10)] == [4, 8, 10]
    assert not any(every(0, s, True) for s in range(1, 5))
    clock = iter([100.0, 100.2, 100.5, 101.5]).__next__  # one reading per call
    monkeypatch.setattr(checkpointer.time, "monotonic", clock)
    ck = Checkpointer(tmp_path, every_steps=5, every_seconds=1.0)  # last save: t=100
    assert ck.due(5)  # by steps
    assert not ck.due(3)  # t=100.5: half a second since the last save
    assert ck.due(4)  # t=101.5: by the clock


def test_close_ends_what_the_trainer_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpt2_train import trainer as trainer_module

    restored = []
    monkeypatch.setattr(trainer_module, "restore_malloc_defaults", lambda: restored.append(1))
    monkeypatch.setattr(trainer_module, "setup_device", lambda device: True)  # as on glibc
    tr = Trainer(small_config(tmp_path, max_steps=1), model=small_model(), train_source=CountingSource())
    tr.fit()  # fit closes on the way out
    tr.close()  # and closing again does nothing
    assert restored == [1]
