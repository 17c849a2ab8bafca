"""gpt2-sft's plugin (its ``gpt2`` entry point): the instruction datasets (``gpt2_sft.builtins``) and
``gpt2 sft`` (``gpt2_sft.cli``, imported when the CLI asks for commands)."""

from __future__ import annotations

from typing import Any

from gpt2_core.hookspecs import hookimpl

from gpt2_sft.builtins import register_datasets

__all__ = ["register_commands", "register_datasets"]


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_sft.cli import sft_app

    app.add_typer(sft_app(), name="sft")
