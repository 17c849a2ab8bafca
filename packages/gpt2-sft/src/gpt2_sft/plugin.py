"""gpt2-sft's implementations of the gpt2 hooks: instruction datasets and ``gpt2 sft``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    from gpt2_sft.datasets import AlpacaDataset, ChatDataset
    from gpt2_sft.shakespeare import ShakespeareInstructions

    register("alpaca", AlpacaDataset)
    register("chat", ChatDataset)
    register("shakespeare-chat", ShakespeareInstructions)


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_sft.cli import sft_app

    app.add_typer(sft_app(), name="sft")
