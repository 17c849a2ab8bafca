"""gpt2-data's built-in datasets as a plugin (no CLI code): what ``dataset_registry`` registers by name when the
package's entry point is not loaded, and what its entry point module ``gpt2_data.plugin`` includes."""

from __future__ import annotations

from collections.abc import Callable

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    from gpt2_data.datasets import BUILTIN

    for name, cls in BUILTIN.items():
        register(name, cls)
