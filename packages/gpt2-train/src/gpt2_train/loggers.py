"""Training loggers: a small protocol, a fan-out over the chosen ones, and the three built-ins.

A logger is built by a factory registered through the ``register_loggers`` hook:
``factory(run_dir: Path, config: TrainConfig) -> Logger``. The trainer calls it on rank 0 only, with the
resolved config (``max_steps`` filled in even when the user gave ``--epochs``). Metric names are
TensorBoard-style tags: ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_sec``,
``train/mfu``, ``val/loss``, ``eval/hellaswag_acc_norm``, ...

Each step is shown once even after a crash or an extension: the trainer calls ``rewind(step)`` before its
first step with the step it continues from (the checkpoint's; -1 on a fresh start), and each logger forgets
what was logged past it: what a killed run logged after its checkpoint (a run killed at step 35 after its
step-30 checkpoint logged 31-35, which the resumed run logs again), or the steps of the run that an
extension from ``RUN_DIR/stable`` leaves.
"""

from __future__ import annotations

import json
import os
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

    # Optional: ``rewind(step: int) -> None``, forget what was logged at steps after ``step`` (-1: all). A
    # logger without it keeps whatever was logged past the resumed step.


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

    def rewind(self, step: int) -> None:
        for lg in self.loggers:
            if hasattr(lg, "rewind"):
                lg.rewind(step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


class NullLogger:
    """What ranks other than 0 log to."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_text(self, tag: str, text: str, step: int) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def build_loggers(
    names: list[str],
    run_dir: Path,
    config: TrainConfig,
    registry: Mapping[str, Callable[..., Any]] | None = None,
) -> MultiLogger:
    """The loggers called ``names``, looked up in the plugin registry (``register_loggers``), and ``jsonl``
    always: metrics.jsonl is the run's own record (``gpt2 plot`` reads it), kept when ``--logger wandb``
    replaces the defaults."""
    if registry is None:
        from gpt2_core.plugins import collect, register_builtin

        registry = collect("loggers", register_builtin("gpt2_train.builtins", "gpt2-train"))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise UserError(f"--logger: unknown logger {unknown[0]!r}; available: {', '.join(sorted(registry))}")
    run_dir.mkdir(parents=True, exist_ok=True)
    names = [*names, *(["jsonl"] if "jsonl" in registry else [])]
    return MultiLogger([registry[name](run_dir, config) for name in dict.fromkeys(names)])


def _fmt(metrics: Mapping[str, float]) -> str:
    parts = []
    short = {
        "train/loss": "loss",
        "train/lr": "lr",
        "train/lr_muon": "muon lr",
        "train/grad_norm": "norm",
        "train/tokens_per_sec": "tok/s",
        "train/mfu": "mfu",
        "val/loss": "val",
        "eval/hellaswag_acc_norm": "hellaswag",
    }
    for key, name in short.items():
        if key in metrics:
            v = metrics[key]
            if key.startswith("train/lr"):
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
        self.paths = (run_dir / "metrics.jsonl", run_dir / "texts.jsonl")
        self.metrics, self.texts = (p.open("a", encoding="utf-8") for p in self.paths)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()  # a crash must not lose what was already reported

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.texts.write(json.dumps({"step": step, "tag": tag, "text": text}) + "\n")
        self.texts.flush()

    def rewind(self, step: int) -> None:
        """Rewrite both files without the rows of steps after ``step`` (and a line a kill cut short)."""
        self.close()
        for path in self.paths:
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                try:
                    if line.endswith("\n") and json.loads(line)["step"] <= step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut short by the kill: not a record
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)  # atomic: a second kill now leaves the old file or the new one
        self.metrics, self.texts = (p.open("a", encoding="utf-8") for p in self.paths)

    def close(self) -> None:
        self.metrics.close()
        self.texts.close()


class TensorBoardLogger:
    """Event files in ``RUN_DIR/tensorboard`` (view them with ``gpt2 tensorboard RUN_DIR``)."""

    def __init__(self, run_dir: Path, config: TrainConfig) -> None:
        self.log_dir = str(run_dir / "tensorboard")
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def rewind(self, step: int) -> None:
        """A new event file that starts with a purge of every event at steps after ``step``: TensorBoard's
        readers drop those of earlier files when they reach it (``SummaryWriter(purge_step=...)``)."""
        from torch.utils.tensorboard import SummaryWriter

        self.close()
        self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=step + 1)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def log_text(self, tag: str, text: str, step: int) -> None:
        # TensorBoard renders text as markdown: a code block keeps indentation and underscores.
        self.writer.add_text(tag, "```\n" + text + "\n```", step)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
