"""gpt2-sft's built-in instruction datasets as a plugin (no CLI code): what the library registers by name when
the package's entry point is not loaded, and what its entry point module ``gpt2_sft.plugin`` includes."""

from __future__ import annotations

from collections.abc import Callable

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    from gpt2_sft.datasets import AlpacaDataset, ChatDataset
    from gpt2_sft.shakespeare import ShakespeareInstructions

    register("alpaca", AlpacaDataset)
    register("chat", ChatDataset)
    register("shakespeare-chat", ShakespeareInstructions)
