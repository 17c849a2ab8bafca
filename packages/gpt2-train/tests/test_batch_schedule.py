"""The batch-size and sequence-length warm-ups: the shapes they give each step, their checks, and a run through
them (the shapes reach the batch source, tokens are counted as trained)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpt2_core.errors import UserError
from gpt2_train.batch_schedule import BatchShape, shape_at
from gpt2_train.plot import plot_runs
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, small_config, small_model


def test_sequence_length_doubles_at_equal_intervals_keeping_the_tokens(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, micro_batch=4, seq_len=128, seq_len_warmup_steps=30, seq_len_start=32)
    shapes = [shape_at(step, cfg) for step in range(32)]
    assert shapes[:15] == [BatchShape(16, 32)] * 15 and shapes[15:30] == [BatchShape(8, 64)] * 15
    assert shapes[30:] == [BatchShape(4, 128)] * 2
    assert {s.micro_batch * s.seq_len for s in shapes} == {512}


def test_batch_grows_linearly_from_its_start_share(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, micro_batch=8, batch_warmup_steps=4, batch_warmup_start=0.25)
    assert [shape_at(step, cfg).micro_batch for step in range(6)] == [2, 4, 5, 7, 8, 8]
    both = small_config(
        tmp_path,
        micro_batch=2,
        seq_len=32,
        seq_len_warmup_steps=4,
        seq_len_start=8,
        batch_warmup_steps=4,
        batch_warmup_start=0.5,
    )
    assert [shape_at(step, both) for step in (0, 2, 4)] == [
        BatchShape(4, 8),
        BatchShape(3, 16),
        BatchShape(2, 32),
    ]
    assert shape_at(0, small_config(tmp_path)) == BatchShape(4, 16)  # off: the config's own shape


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(seq_len_warmup_steps=4, seq_len_start=12),
            "--seq-len-start must be --seq-len .16. divided by a power",
        ),
        (dict(seq_len_warmup_steps=4, seq_len_start=32), "got 32"),
        (dict(seq_len_warmup_steps=4, seq_len_start=16), "got 16"),  # --seq-len itself: nothing to warm up
        (dict(batch_warmup_steps=4, micro_batch=1), "needs --micro-batch >= 2"),
        (dict(seq_len_warmup_steps=4, seq_len_start=0), "got 0"),
        (dict(batch_warmup_steps=4, batch_warmup_start=0), r"--batch-warmup-start must be in \(0, 1\]"),
        (dict(batch_warmup_steps=-1), "--batch-warmup-steps must be >= 0"),
        (dict(align_documents=True, max_steps=0), "--align-documents .* give --max-steps"),
    ],
)
def test_bad_settings_are_refused_once(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        small_config(tmp_path, **overrides)


class ShapedSource(CountingSource):
    """A CountingSource that can change its shape, and records each shape it was given."""

    def __init__(self) -> None:
        super().__init__(4, 16)
        self.shapes: list[tuple[int, int]] = []

    def set_shape(self, batch_size: int, seq_len: int) -> None:
        self.batch_size, self.seq_len = batch_size, seq_len
        self.shapes.append((batch_size, seq_len))


def test_a_run_trains_on_each_steps_shape_and_counts_its_tokens(tmp_path: Path) -> None:
    cfg = small_config(
        tmp_path / "run",
        max_steps=6,
        seq_len_warmup_steps=4,
        seq_len_start=4,
        batch_warmup_steps=2,
        batch_warmup_start=0.5,
    )
    source = ShapedSource()
    result = Trainer(cfg, model=small_model(), train_source=source).fit()
    # Two micro-batches a step (128 tokens over 4 x 16): steps 0-1 at length 4, 2-3 at 8, then 16.
    assert source.shapes == [(4, 16), (8, 4), (12, 4), (8, 8), (4, 16)]
    expected = 2 * (8 * 4 + 12 * 4) + 4 * 128  # the warm-ups' two short steps, then four of 128
    assert result.tokens_seen == expected
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/tokens"] for r in rows if "train/tokens" in r]
    assert logged == [64, 160, 288, 416, 544, 672]
    # gpt2 plot draws the run against the tokens it trained on, not steps x --total-batch-tokens.
    (line,) = plot_runs([tmp_path / "run"]).axes[0].get_lines()
    assert list(line.get_xdata()) == logged


def test_a_source_of_one_shape_is_refused(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, batch_warmup_steps=2)
    with pytest.raises(UserError, match="CountingSource yields batches of one shape"):
        Trainer(cfg, model=small_model(), train_source=CountingSource())


def test_a_resumed_run_takes_its_new_warm_up_from_the_resumed_step(tmp_path: Path) -> None:
    first = small_config(tmp_path / "run", max_steps=2, seq_len_warmup_steps=4, seq_len_start=4)
    Trainer(first, model=small_model(), train_source=ShapedSource()).fit()
    # Resumed at step 2 with a warm-up twice as long: step 2 is at length 4 again (the old one had reached 8).
    longer = small_config(
        tmp_path / "run", max_steps=6, seq_len_warmup_steps=8, seq_len_start=4, resume="latest"
    )
    source = ShapedSource()
    result = Trainer(longer, model=small_model(), train_source=source).fit()
    assert source.shapes == [(4, 16), (16, 4), (8, 8)]
    assert result.step == 6 and result.tokens_seen == 6 * 128
