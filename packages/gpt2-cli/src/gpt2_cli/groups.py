"""Command groups that several plugins add to: ``gpt2 eval hellaswag`` (gpt2-train) and ``gpt2 eval lm-eval``
(gpt2-eval) live in one ``eval`` group, whichever plugin registers first."""

from __future__ import annotations

import typer


def command_group(app: typer.Typer, name: str, help: str) -> typer.Typer:
    """The sub-app ``gpt2 NAME``: the one a plugin registered already, or a new one added to ``app``."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group
