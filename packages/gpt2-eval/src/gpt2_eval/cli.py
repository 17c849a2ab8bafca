"""``gpt2 eval lm-eval``: lm-evaluation-harness tasks on a gpt2 model (lm-eval imported inside the command)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from gpt2_core.runtime import RuntimeConfig

INSTALL = "gpt2 eval lm-eval needs lm-eval: pip install 'gpt2-eval[lm-eval]'"
OFFLINE = (
    "Offline, run a local task instead: --include-path DIR, DIR holding a task YAML whose "
    "dataset_kwargs.data_files name local files (an example: gpt2-eval's docs/my_tasks/)"
)


def lm_eval_command(
    runtime: RuntimeConfig,
    model: Path = typer.Option(
        ...,
        "--model",
        "-m",
        help="Model directory: ours, a checkpoint (sharded too), an SFT model, or HF GPT-2.",
    ),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated lm-eval task (or group) names."),
    num_fewshot: int | None = typer.Option(
        None, "--num-fewshot", help="Few-shot examples (default: the task's)."
    ),
    limit: float | None = typer.Option(
        None, "--limit", help="Only the first N examples per task (a fraction below 1: that share)."
    ),
    batch_size: int = typer.Option(1, "--batch-size", help="Requests per forward pass."),
    include_path: Path | None = typer.Option(
        None, "--include-path", help="A folder of extra task YAMLs (local tasks)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Results JSON (default: MODEL/lm_eval_results.json)."
    ),
    log_samples: bool = typer.Option(
        False, "--log-samples", help="Keep every example's requests and answers in the JSON."
    ),
) -> None:
    """Run lm-evaluation-harness tasks (HellaSwag, ARC, PIQA, LAMBADA, wikitext, ...) on a model: prints
    lm-eval's table and writes its JSON."""
    from gpt2_core.errors import UserError

    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import handle_non_serializable, make_table
    except ImportError as e:
        raise UserError(INSTALL) from e
    from gpt2_eval.harness import GPT2LM

    if not model.is_dir():
        raise UserError(f"{model}: no such model directory")
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"--tasks: unknown task {unknown[0]!r} (see `lm-eval ls tasks`, or --include-path)")
    lm = GPT2LM(str(model), batch_size=batch_size, **asdict(runtime))
    try:
        results = simple_evaluate(
            model=lm,
            tasks=names,
            num_fewshot=num_fewshot,
            limit=int(limit) if limit is not None and limit >= 1 else limit,
            task_manager=manager,
            log_samples=log_samples,
        )
    except (
        ConnectionError
    ) as e:  # datasets' (and huggingface_hub's offline mode's) error for an unreachable hub
        raise UserError(f"--tasks {tasks}: could not fetch a task's data: {e}. {OFFLINE}") from e
    typer.echo(make_table(results))
    if "groups" in results:
        typer.echo(make_table(results, "groups"))
    target = out or model / "lm_eval_results.json"
    target.write_text(json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False))
    typer.echo(f"wrote {target}", err=True)
