"""--logger wandb, offline: what W&B wrote is read back from its own files (its .wandb transaction log,
parsed into W&B's protobuf records), never from the network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from gpt2_core.config import GPTConfig
from gpt2_core.model import GPT
from gpt2_data.batch_source import BatchSource
from gpt2_train.config import TrainConfig
from gpt2_train.trainer import Trainer
from wandb_records import finished, followed_history, history, run_record, wandb_files


class Crash(Exception):
    """The run dies mid-step (what a kill leaves: logs past the last checkpoint)."""


class Source(BatchSource):
    """Resumable batches of counting rows, positioned by one integer; raises ``Crash`` at batch ``crash_at``."""

    def __init__(self, crash_at: int = -1) -> None:
        self.pos = 0
        self.crash_at = crash_at

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos == self.crash_at:
            raise Crash
        g = torch.Generator().manual_seed(self.pos)
        self.pos += 1
        row = (torch.randint(0, 64, (4, 1), generator=g) + torch.arange(17)) % 64
        return row[:, :-1].clone(), row[:, 1:].clone()

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


def train(run_dir: Path, crash_at: int = -1, **overrides: object) -> None:
    values: dict = dict(
        run_dir=str(run_dir),
        device="cpu",
        total_batch_tokens=64,
        micro_batch=4,
        seq_len=16,
        max_steps=6,
        warmup_steps=1,
        eval_every=0,
        checkpoint_every_seconds=0,
        loggers=["wandb", "jsonl"],
        project="gpt2-tests",
        run_name="tiny",
    )
    values.update(overrides)
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, vocab_size=50257, n_layer=1, n_head=2, n_embd=16)
    Trainer(TrainConfig(**values), model=GPT(config), train_source=Source(crash_at)).fit()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    wandb.teardown()  # W&B reads its settings from the environment once per process setup


def test_offline_run_holds_the_scalars_config_and_samples(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(run, sample_every=3, sample_prompt="def ", sample_tokens=4)
    (path,) = wandb_files(run)
    rows = history(path)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert sorted(rows) == [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    for r in logged:
        for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec"):
            assert rows[r["step"]][tag] == pytest.approx(r[tag], rel=1e-12), tag

    (run_record,) = [r.run for r in finished(path) if r.WhichOneof("record_type") == "run"]
    assert (run_record.project, run_record.display_name) == ("gpt2-tests", "tiny")
    assert run_record.run_id == (run / "wandb-run-id").read_text().strip()
    config = {i.key: json.loads(i.value_json) for i in run_record.config.update}
    assert config["max_steps"] == 6 and config["seq_len"] == 16

    assert rows[3]["samples/_type"] == "incremental-table-file"
    texts = [json.loads(line)["text"] for line in (run / "texts.jsonl").open() if '"samples"' in line]
    tables = []
    for step in (3, 6):
        table = json.loads((path.parent / "files" / rows[step]["samples/path"]).read_text())
        assert table["columns"] == ["step", "text"]
        tables += table["data"]
    assert tables == [[3, texts[0]], [6, texts[1]]]


def test_a_resumed_run_rewinds_the_same_wandb_run_each_step_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(Crash):  # dies in step 9, after logging 8 with its last checkpoint at 6
        train(run, crash_at=8, max_steps=10, checkpoint_every_steps=3, keep=5)
    train(run, max_steps=10, checkpoint_every_steps=3, keep=5, resume="auto")
    first, second = wandb_files(run)
    run_id = (run / "wandb-run-id").read_text().strip()
    assert run_record(first).run_id == run_id
    resumed = run_record(second)  # the same run, rewound to the checkpoint's step
    assert (resumed.run_id, resumed.branch_point.run, resumed.branch_point.value) == (run_id, run_id, 6)
    assert sorted(history(first)) == list(range(1, 9))
    assert sorted(history(second)) == [7, 8, 9, 10]
    logged = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").open())}
    shown = followed_history(run)
    assert sorted(shown) == sorted(logged) == list(range(1, 11))
    for step, row in logged.items():
        assert shown[step]["train/loss"] == pytest.approx(row["train/loss"], rel=1e-12), step


def test_an_extension_from_stable_rewinds_the_wandb_run(tmp_path: Path) -> None:
    """A finished WSD run extended from RUN/stable: the W&B run's steps past the stable checkpoint are the
    abandoned run's; the rewound run shows the extension's values there."""
    run = tmp_path / "run"
    wsd = dict(lr_schedule="wsd", decay_fraction=0.5, warmup_steps=2)
    train(run, max_steps=8, **wsd)  # stable phase ends at step 4
    train(run, max_steps=12, resume=str(run / "stable"), **wsd)
    first, second = wandb_files(run)
    rewound = run_record(second)
    assert rewound.run_id == run_record(first).run_id == (run / "wandb-run-id").read_text().strip()
    assert (rewound.branch_point.run, rewound.branch_point.value) == (rewound.run_id, 4)
    logged = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").open())}
    shown = followed_history(run)
    assert sorted(shown) == sorted(logged) == list(range(1, 13))
    for step, row in logged.items():
        for tag in ("train/lr", "train/loss"):
            assert shown[step][tag] == pytest.approx(row[tag], rel=1e-12), (step, tag)
    assert shown[6]["train/lr"] == pytest.approx(6e-4)  # still stable: the decay now starts after step 6


def test_bad_server_warns_in_one_line_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # Online, against a port nothing listens on (never the network), with a short wait for it.
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    run = tmp_path / "run"
    train(run, max_steps=2)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "--logger wandb" in line]
    assert len(warnings) == 1 and "continuing without it" in warnings[0]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()] == [1, 2]


def test_a_refused_rewind_logs_to_a_new_run_naming_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A server without rewind (W&B's resume_from is in beta): one line, and a new run whose config names the
    run and step it goes on from."""
    import wandb

    run = tmp_path / "run"
    train(run, max_steps=4, checkpoint_every_steps=2)
    old = (run / "wandb-run-id").read_text().strip()
    init = wandb.init

    def no_rewind(**kwargs: object) -> object:
        if kwargs.get("resume_from"):
            raise wandb.errors.CommError("rewinding runs is not enabled for this account")
        return init(**kwargs)

    monkeypatch.setattr(wandb, "init", no_rewind)
    capsys.readouterr()
    train(run, max_steps=6, checkpoint_every_steps=2, resume=str(run / "step_00000002"))
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("wandb:")]
    assert len(lines) == 1 and f"run {old} cannot be rewound to step 2" in lines[0], lines
    new = (run / "wandb-run-id").read_text().strip()
    assert new != old
    record = run_record(wandb_files(run)[-1])
    assert record.run_id == new
    config = {i.key: json.loads(i.value_json) for i in record.config.update}
    assert config["wandb_resumed_from"] == f"{old}?_step=2"
    assert sorted(history(wandb_files(run)[-1])) == [3, 4, 5, 6]
