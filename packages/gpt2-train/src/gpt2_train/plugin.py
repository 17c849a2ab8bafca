"""gpt2-train's implementations of the gpt2 hooks: its commands, the built-in loggers and optimizers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_train.cli import register

    register(app)


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
    def adamw(model: Any, config: Any, device: Any) -> Any:
        from gpt2_train.optim import build_adamw

        return build_adamw(model, config, device)

    def muon(model: Any, config: Any, device: Any) -> Any:
        from gpt2_train.optim import build_muon

        return build_muon(model, config, device)

    register("adamw", adamw)
    register("muon", muon)
