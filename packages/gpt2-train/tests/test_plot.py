"""gpt2 plot: the figure's lines hold exactly what metrics.jsonl holds, against tokens seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpt2_train.plot import plot_runs
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, small_config, small_model

HELLASWAG = Path(__file__).parent / "data" / "hellaswag_mini.jsonl"


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected(run: Path, key: str, tokens_per_step: int) -> tuple[list[float], list[float]]:
    points = [(r["step"] * tokens_per_step, r[key]) for r in rows(run) if key in r]
    return [x for x, _ in points], [y for _, y in points]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("plot")
    with_evals = small_config(
        base / "with-evals",
        max_steps=6,
        eval_every=3,
        eval_batches=1,
        hellaswag_every=3,
        hellaswag_file=str(HELLASWAG),
        total_batch_tokens=128,
    )
    model = small_model(vocab_size=50257, special_tokens={"<|endoftext|>": 50256})
    Trainer(with_evals, model=model, train_source=CountingSource(), val_source=CountingSource(seed=2)).fit()
    no_val = small_config(base / "no-val", max_steps=5, total_batch_tokens=64, micro_batch=4, seq_len=16)
    Trainer(no_val, model=small_model(), train_source=CountingSource()).fit()
    return base / "with-evals", base / "no-val"


def test_plotted_series_equal_the_metrics_against_tokens(runs: tuple[Path, Path], tmp_path: Path) -> None:
    evals, no_val = runs
    out = tmp_path / "runs.png"
    fig = plot_runs([evals, no_val], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_ax, hellaswag_ax = fig.axes
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert set(lines) == {
        "with-evals train",
        "with-evals val",
        "with-evals hellaswag",
        "no-val train",
    }
    cases = [
        ("with-evals train", evals, "train/loss", 128),
        ("with-evals val", evals, "val/loss", 128),
        ("with-evals hellaswag", evals, "eval/hellaswag_acc_norm", 128),
        ("no-val train", no_val, "train/loss", 64),
    ]
    for label, run, key, tokens in cases:
        x, y = expected(run, key, tokens)
        assert x, label
        assert list(lines[label].get_xdata()) == x, label
        assert list(lines[label].get_ydata()) == y, label
    assert lines["with-evals hellaswag"] in hellaswag_ax.get_lines()
    assert loss_ax.get_xlabel() == "tokens"


def test_a_run_without_val_points_plots_alone(runs: tuple[Path, Path], tmp_path: Path) -> None:
    fig = plot_runs([runs[1]], tmp_path / "one.svg")
    assert (tmp_path / "one.svg").stat().st_size > 0
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["no-val train"]
    assert len(fig.axes) == 1  # no HellaSwag panel without HellaSwag points


def test_cli_writes_the_file_and_refuses_a_run_without_metrics(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cli_helpers import gpt2_here

    out = tmp_path / "cli.png"
    code, _, err = gpt2_here(capsys, "plot", str(runs[0]), str(runs[1]), "--out", str(out))
    assert code == 0, err
    assert out.stat().st_size > 0
    code, _, err = gpt2_here(capsys, "plot", str(tmp_path / "nothing"), "--out", str(out))
    assert code == 2
    assert err.strip().splitlines() == [f"error: {tmp_path / 'nothing'}: no such run directory"]
    (tmp_path / "empty").mkdir()
    code, _, err = gpt2_here(capsys, "plot", str(tmp_path / "empty"), "--out", str(out))
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {tmp_path / 'empty'}: no metrics.jsonl (every run writes one; is this a run directory?)"
    ]
