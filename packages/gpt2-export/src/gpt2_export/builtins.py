"""gpt2-export's built-in formats as a plugin (no CLI code): what ``exporter_registry`` registers by name when
the package's entry point is not loaded, and what its entry point module ``gpt2_export.plugin`` includes. The
exporters' modules load when ``register_exporters`` is called, that is, when something asks for the formats."""

from __future__ import annotations

from collections.abc import Callable

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_exporters(register: Callable[..., None]) -> None:
    from gpt2_export.gguf_export import GGUFExporter
    from gpt2_export.hf import HFExporter
    from gpt2_export.onnx_export import OnnxExporter

    register("hf", HFExporter)
    register("onnx", OnnxExporter)
    register("gguf", GGUFExporter)
