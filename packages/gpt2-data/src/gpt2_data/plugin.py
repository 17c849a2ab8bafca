"""gpt2-data's plugin (its ``gpt2`` entry point): the built-in datasets (``gpt2_data.builtins``) and the
``gpt2 data`` commands (``gpt2_data.cli``, imported when the CLI asks for commands)."""

from __future__ import annotations

from typing import Any

from gpt2_core.hookspecs import hookimpl

from gpt2_data.builtins import register_datasets

__all__ = ["register_commands", "register_datasets"]


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_data.cli import data_app

    app.add_typer(data_app(), name="data")
