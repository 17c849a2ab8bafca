"""gpt2-train's built-in loggers and optimizers as a plugin (no CLI code): what the library registers by name
when the package's entry point is not loaded, and what its entry point module ``gpt2_train.plugin`` includes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_loggers(register: Callable[..., None]) -> None:
    # Factories are imported lazily too: choosing a logger is what builds it.
    def console(run_dir: Any, config: Any) -> Any:
        from gpt2_train.loggers import ConsoleLogger

        return ConsoleLogger(run_dir, config)

    def jsonl(run_dir: Any, config: Any) -> Any:
        from gpt2_train.loggers import JsonlLogger

        return JsonlLogger(run_dir, config)

    def tensorboard(run_dir: Any, config: Any) -> Any:
        from gpt2_train.loggers import TensorBoardLogger

        return TensorBoardLogger(run_dir, config)

    register("console", console)
    register("jsonl", jsonl)
    register("tensorboard", tensorboard)


@hookimpl
def register_optimizers(register: Callable[..., None]) -> None:
    from gpt2_train.optimizers import AdamW, Muon

    register("adamw", AdamW)
    register("muon", Muon)
