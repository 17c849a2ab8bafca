"""gpt2-export's plugin (its ``gpt2`` entry point): the ``hf``, ``onnx`` and ``gguf`` formats (``gpt2_export.builtins``)
and ``gpt2 export`` / ``gpt2 import`` (``gpt2_export.cli``, imported when the CLI asks for commands)."""

from __future__ import annotations

from typing import Any

from gpt2_core.hookspecs import hookimpl

from gpt2_export.builtins import register_exporters

__all__ = ["register_commands", "register_exporters"]


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_export.cli import register

    register(app)
