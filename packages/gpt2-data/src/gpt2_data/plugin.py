"""gpt2-data's implementations of the gpt2 hooks: the built-in datasets and the ``gpt2 data`` commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    from gpt2_data.datasets import BUILTIN

    for name, cls in BUILTIN.items():
        register(name, cls)


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_data.cli import data_app

    app.add_typer(data_app(), name="data")
