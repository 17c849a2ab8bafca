"""The commands gpt2-train adds: ``gpt2 train``, ``gpt2 eval hellaswag``, ``gpt2 tensorboard``, ``gpt2 plot``.

Only the config module (torch-free) is imported here; torch and the trainer load inside the commands.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer

# gpt2-cli is the only caller of register_commands, so it is installed whenever this module is imported.
from gpt2_cli.groups import command_group
from gpt2_cli.options import SectionedCommand, dataclass_options, runtime_options
from gpt2_core.runtime import RuntimeConfig

from gpt2_train.config import PRESETS, TrainConfig
from gpt2_train.config_layers import SHOW_CONFIG_HELP, build_config, config_toml
from gpt2_train.optimizer_flags import optimizer_options

TRAIN_HELP = f"""Train a GPT-2 model (under torchrun: DDP across its processes).

Presets: {", ".join(PRESETS)}. Flags override --config, which overrides --preset; the defaults below are
before --preset (tiny trains with Muon and WSD): --show-config prints what a preset sets.
Multi-node: torchrun --nnodes=N --node-rank=I --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT
--nproc-per-node=G -m gpt2_cli train ...
"""


def train_command(
    flags: dict[str, Any],
    optimizer_flags: dict[str, Any],
    preset: str | None = typer.Option(None, "--preset", help=f"Named recipe: {', '.join(PRESETS)}."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML file of TrainConfig fields."),
    show_config: bool = typer.Option(False, "--show-config", help=SHOW_CONFIG_HELP),
) -> None:
    cfg = build_config(preset, str(config_file) if config_file else None, {**flags, **optimizer_flags})
    if show_config:
        typer.echo(config_toml(cfg), nl=False)
        return
    from gpt2_train.pretrain import train

    result = train(cfg)
    if result.checkpoint is not None:  # rank 0, and a checkpoint was written
        latest = Path(cfg.run_dir) / "latest"
        prompt = shlex.quote(cfg.sample_prompt)
        typer.echo(
            f"model: {latest}\nsample from it: gpt2 generate --model {latest} --prompt {prompt}", err=True
        )
    if result.stopped_by is not None:
        sys.exit(128 + result.stopped_by)


def hellaswag_command(
    runtime: RuntimeConfig,
    model: Path = typer.Option(
        ..., "--model", "-m", help="Model directory (ours, a checkpoint, or HF GPT-2)."
    ),
    file: Path | None = typer.Option(
        None, "--hellaswag-file", help="HellaSwag jsonl (default: download val)."
    ),
    limit: int = typer.Option(0, "--limit", help="Only the first N examples (0: all)."),
) -> None:
    """HellaSwag accuracy as build-nanogpt scores it (acc; acc_norm per token, not lm-eval's per character)."""
    from dataclasses import replace

    import torch
    from gpt2_core.llm import LLM

    from gpt2_train import hellaswag
    from gpt2_train.distributed import setup_distributed, teardown_distributed
    from gpt2_train.precision import autocast

    env = setup_distributed(runtime.device)
    try:
        llm = LLM.from_runtime(model, replace(runtime, device=str(env.device)))  # this rank's GPU
        examples = hellaswag.load_examples(file, limit)
        dtype = torch.bfloat16 if env.device.type == "cuda" else None
        with autocast(env.device, dtype):
            res = hellaswag.evaluate(llm.model, examples, env)
        if env.is_main:
            # Named apart from lm-eval's acc_norm, which divides by characters (gpt2-eval's README).
            typer.echo(
                f"hellaswag (build-nanogpt's scoring): acc {res.acc:.4f}  acc_norm per token "
                f"{res.acc_norm:.4f}  ({res.n} examples)"
            )
    finally:
        teardown_distributed(env)


def tensorboard_command(
    run_dir: Path = typer.Argument(Path("runs"), help="A run directory, or the folder holding runs."),
    port: int = typer.Option(6006, "--port", help="Port to serve on."),
    host: str = typer.Option("localhost", "--host", help="Interface to bind (0.0.0.0 for all)."),
) -> None:
    """Start TensorBoard on a run directory (or on the folder of runs to compare them)."""
    import subprocess

    from gpt2_core.errors import UserError

    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(run_dir),
        "--port",
        str(port),
        "--host",
        host,
    ]
    typer.echo(f"TensorBoard on http://{host}:{port}  (Ctrl-C to stop)")
    try:
        sys.exit(subprocess.call(cmd))
    except KeyboardInterrupt:
        sys.exit(0)


def plot_command(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with its metrics.jsonl)."),
    out: Path = typer.Option(Path("runs.png"), "--out", "-o", help="Image file (.png, .svg, .pdf)."),
) -> None:
    """Plot train/val loss and HellaSwag accuracy against tokens, several runs overlaid."""
    from gpt2_train.plot import plot_runs

    plot_runs(runs, out)
    typer.echo(f"wrote {out}", err=True)


def register(app: Any) -> None:
    flags = dataclass_options(TrainConfig, into="flags", flags={"loggers": "--logger"}, given_only=True)
    app.command("train", help=TRAIN_HELP, cls=SectionedCommand)(flags(optimizer_options(train_command)))
    # As it scored before the runtime flags: weights in float32, torch's own products.
    command_group(app, "eval", "Evaluate a model.").command("hellaswag")(
        runtime_options(hellaswag_command, dtype="float32", cpu_matmul="torch")
    )
    app.command("tensorboard")(tensorboard_command)
    app.command("plot")(plot_command)
