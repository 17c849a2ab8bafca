"""Training loggers: a small protocol, a fan-out over the chosen ones, and the three built-ins.

A logger is built by a factory registered through the ``register_loggers`` hook:
``factory(run_dir: Path, config: TrainConfig) -> Logger``. The trainer calls it on rank 0 only, with the
resolved config (``max_steps`` filled in even when the user gave ``--epochs``). Metric names are
TensorBoard-style tags: ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_sec``,
``train/mfu``, ``val/loss``, ``eval/hellaswag_acc_norm``, ...
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from gpt2_core.errors import UserError

from gpt2_train.config import TrainConfig


class Logger(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar ``metrics`` for optimizer step ``step``."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Record a piece of text (a generated sample, the config, a warning)."""

    def close(self) -> None:
        """Flush and release files."""


class MultiLogger:
    """Sends every call to each chosen logger."""

    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = loggers

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        for lg in self.loggers:
            lg.log_text(tag, text, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


class NullLogger:
    """What ranks other than 0 log to."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_text(self, tag: str, text: str, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def build_loggers(
    names: list[str],
    run_dir: Path,
    config: TrainConfig,
    registry: Mapping[str, Callable[..., Any]] | None = None,
) -> MultiLogger:
    """The loggers called ``names``, looked up in the plugin registry (``register_loggers``)."""
    if registry is None:
        from gpt2_core.plugins import collect, register_builtin

        from gpt2_train import plugin

        registry = collect("loggers", register_builtin(plugin, "gpt2-train"))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise UserError(f"--logger: unknown logger {unknown[0]!r}; available: {', '.join(sorted(registry))}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return MultiLogger([registry[name](run_dir, config) for name in dict.fromkeys(names)])


def _fmt(metrics: Mapping[str, float]) -> str:
    parts = []
    short = {
        "train/loss": "loss",
        "train/lr": "lr",
        "train/grad_norm": "norm",
        "train/tokens_per_sec": "tok/s",
        "train/mfu": "mfu",
        "val/loss": "val",
        "eval/hellaswag_acc_norm": "hellaswag",
    }
    for key, name in short.items():
        if key in metrics:
            v = metrics[key]
            if key == "train/lr":
                parts.append(f"{name} {v:.2e}")
            elif key == "train/tokens_per_sec":
                parts.append(f"{name} {v:,.0f}")
            elif key == "train/mfu":
                parts.append(f"{name} {100 * v:.1f}%")
            else:
                parts.append(f"{name} {v:.4f}")
    return " | ".join(parts)


class ConsoleLogger:
    """A rich progress bar (step, loss, lr, tokens/s, ETA) on a terminal; one line per log otherwise."""

    def __init__(self, run_dir: Path, config: TrainConfig) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.total = config.max_steps
        self.progress = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task("train", total=self.total, info="")
            self.progress.start()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        text = _fmt(metrics)
        if self.progress is not None:
            if "train/loss" in metrics:
                self.progress.update(self.task, completed=step, info=text)
            else:
                self.progress.console.print(f"step {step}: {text}")
        else:
            self.console.print(f"step {step}/{self.total} | {text}", highlight=False)

    def log_text(self, tag: str, text: str, step: int) -> None:
        if tag == "config":
            return
        self.console.print(f"[{tag} @ step {step}]\n{text}", highlight=False, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class JsonlLogger:
    """One JSON object per logged step in ``RUN_DIR/metrics.jsonl`` (texts in ``RUN_DIR/texts.jsonl``)."""

    def __init__(self, run_dir: Path, config: TrainConfig) -> None:
        self.metrics = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.texts = (run_dir / "texts.jsonl").open("a", encoding="utf-8")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()  # a crash must not lose what was already reported

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.texts.write(json.dumps({"step": step, "tag": tag, "text": text}) + "\n")
        self.texts.flush()

    def close(self) -> None:
        self.metrics.close()
        self.texts.close()


class TensorBoardLogger:
    """Event files in ``RUN_DIR/tensorboard`` (view them with ``gpt2 tensorboard RUN_DIR``)."""

    def __init__(self, run_dir: Path, config: TrainConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def log_text(self, tag: str, text: str, step: int) -> None:
        # TensorBoard renders text as markdown: a code block keeps indentation and underscores.
        self.writer.add_text(tag, "```\n" + text + "\n```", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
