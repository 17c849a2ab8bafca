"""gpt2-train's plugin (its ``gpt2`` entry point): the built-in loggers and optimizers (``gpt2_train.builtins``)
and its commands (``gpt2_train.cli``, imported when the CLI asks for commands)."""

from __future__ import annotations

from typing import Any

from gpt2_core.hookspecs import hookimpl

from gpt2_train.builtins import register_loggers, register_optimizers

__all__ = ["register_commands", "register_loggers", "register_optimizers"]


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_train.cli import register

    register(app)
