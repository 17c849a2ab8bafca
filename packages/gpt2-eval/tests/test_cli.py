"""gpt2 eval lm-eval as a user runs it: lm-eval's table on stdout, its JSON written; one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import gpt2_here, loaded_llms
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


def test_quantize_int8_reaches_the_model(
    model_and_tasks: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpt2_core.quantize import Int8Linear

    model, tasks = model_and_tasks
    loaded = loaded_llms(monkeypatch)
    code, stdout, err = gpt2_here(
        capsys, "eval", "lm-eval", "--model", model, "--tasks", "piqa_local", "--include-path", tasks,
        "--limit", "2", "--out", tmp_path / "results.json", "--quantize", "int8",
    )  # fmt: skip
    assert code == 0 and "piqa_local" in stdout, err
    assert isinstance(loaded[0].model.lm_head, Int8Linear)


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


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            "qa_long_local",
            "error: lm-eval task qa_long_local: max_gen_toks 100 leaves no room for the prompt in this model's "
            "64-token context (set it below 64 in the task's generation_kwargs)",
        ),
        (
            "long_answer_local",
            "error: lm-eval task long_answer_local: a continuation of 100 tokens does not fit this model's "
            "64-token context",
        ),
    ],
)
def test_the_context_edge_is_refused_in_one_line(
    model_and_tasks: tuple[Path, Path], capsys: pytest.CaptureFixture, task: str, message: str
) -> None:
    """A generation with no room for its prompt, a continuation longer than the window: refused (as lm-eval's
    hf refuses them; tests/test_exact.py), not answered from nothing or scored at wrapped positions."""
    model, tasks = model_and_tasks
    code, _, err = gpt2_here(
        capsys, "eval", "lm-eval", "--model", model, "--tasks", task, "--include-path", tasks, "--limit", "2"
    )
    assert code == 2
    assert err.strip().splitlines()[-1] == message, err[-2000:]
    assert "Traceback" not in err


DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow  # a subprocess importing lm-eval: a minute on a loaded 2-core machine
def test_an_unreachable_hub_is_one_line_that_says_how_to_run_offline(
    model_and_tasks: tuple[Path, Path], tmp_path: Path
) -> None:
    """arc_easy's data from the hub, with the hub out of reach (its offline mode: no network touched)."""
    import os
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-m", "gpt2_cli", "eval", "lm-eval", "--model", str(model_and_tasks[0])]
    r = subprocess.run([*cmd, "--tasks", "arc_easy"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --tasks arc_easy: could not fetch a task's data: ") and "ai2_arc" in last
    assert last.endswith("(an example: gpt2-eval's docs/my_tasks/)")
    assert "Traceback" not in r.stderr


def test_the_readme_shows_the_shipped_local_task() -> None:
    """The YAML in the README is the one shipped (docs/my_tasks/, which the README test runs), less comments."""
    shipped = (DOCS / "my_tasks" / "my_task.yaml").read_text()
    body = "".join(line + "\n" for line in shipped.splitlines() if not line.startswith("#"))
    readme = (DOCS.parent / "README.md").read_text()
    shown = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert shown and body.startswith(shown)
