"""gpt2 eval lm-eval as a user runs it: lm-eval's table on stdout, its JSON written; one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import gpt2_here
from gpt2_core import GPT, get_preset
from gpt2_core.weights import save_model

from .tasks import write_tasks


@pytest.fixture(scope="module")
def model_and_tasks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    return save_model(GPT(get_preset("nano")), root / "model"), write_tasks(root)


@pytest.mark.slow
def test_runs_a_local_task_prints_the_table_and_writes_json(
    model_and_tasks: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model, tasks = model_and_tasks
    out = tmp_path / "results.json"
    code, stdout, err = gpt2_here(
        capsys, "eval", "lm-eval", "--model", model, "--tasks", "piqa_local", "--include-path", tasks,
        "--batch-size", "4", "--limit", "5", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "piqa_local" in stdout and "acc_norm" in stdout
    results = json.loads(out.read_text())
    assert 0 <= results["results"]["piqa_local"]["acc,none"] <= 1
    assert results["n-samples"]["piqa_local"]["effective"] == 5


def test_an_unknown_task_is_one_line(
    model_and_tasks: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    model, tasks = model_and_tasks
    code, _, err = gpt2_here(
        capsys, "eval", "lm-eval", "--model", model, "--tasks", "nope", "--include-path", tasks
    )
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --tasks: unknown task 'nope' (see `lm-eval ls tasks`, or --include-path)"
    ]


def test_without_lm_eval_says_what_to_install(
    model_and_tasks: tuple[Path, Path], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets where it is not installed
    code, _, err = gpt2_here(capsys, "eval", "lm-eval", "--model", model_and_tasks[0], "--tasks", "x")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: gpt2 eval lm-eval needs lm-eval: pip install 'gpt2-eval[lm-eval]'"
    ]


def test_registered_with_lm_eval_by_name(model_and_tasks: tuple[Path, Path]) -> None:
    """What the README shows: lm-eval builds our model from its name and an argument string."""
    import gpt2_eval.harness  # noqa: F401  (registers the name)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    model, tasks = model_and_tasks
    results = simple_evaluate(
        model="gpt2-toolkit",
        model_args=f"pretrained={model},batch_size=8",
        tasks=["piqa_local"],
        task_manager=TaskManager(include_path=str(tasks)),
        limit=3,
    )
    assert results["n-samples"]["piqa_local"]["effective"] == 3
    assert results["config"]["model"] == "gpt2-toolkit"
