"""``gpt2 export`` and ``gpt2 import``. Torch and the exporters load inside the commands, so ``gpt2 --help``
stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def export(
    fmt: str = typer.Option("hf", "--format", "-f", help="Export format (see --list)."),
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model directory, training checkpoint, or run directory (its latest checkpoint).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Directory to write (must be empty or new); the file, for gguf."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Weight type: float32, bfloat16 or float16."),
    gguf_type: str | None = typer.Option(
        None, "--gguf-type", help="gguf only: weight type f32, f16 (default) or q8_0."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out directory."),
    list_formats: bool = typer.Option(False, "--list", help="List the export formats and exit."),
) -> None:
    """Export a model to another format (Hugging Face transformers, ONNX, GGUF, or a plugin's)."""
    from gpt2_core.errors import UserError

    from gpt2_export.exporters import describe, exporter_registry, run_export

    registry = exporter_registry()
    if list_formats:
        width = max((len(name) for name in registry), default=0)
        for name, factory in sorted(registry.items()):
            typer.echo(f"{name:<{width}}  {describe(factory)}")
        return
    if model is None:
        raise UserError("--model is required: the model directory or checkpoint to export")
    if out is None:
        raise UserError("--out is required: the directory to write the export into")
    options = {}
    if gguf_type is not None:
        if fmt != "gguf":
            raise UserError(f"--gguf-type applies to --format gguf only, not {fmt!r}")
        options["gguf_type"] = gguf_type
    run_export(fmt, model, out, dtype=dtype, force=force, registry=registry, options=options)
    kind = options.get("gguf_type", "f16") if fmt == "gguf" else dtype
    typer.echo(f"exported {model} as {fmt} ({kind}) to {out}")


def import_(
    from_hf: Path = typer.Option(..., "--from-hf", help="A local Hugging Face GPT-2 directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write (must be empty or new)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out directory."),
) -> None:
    """Turn a Hugging Face GPT-2 directory into a gpt2 model directory."""
    from gpt2_core.weights import save_model

    from gpt2_export.exporters import check_output, staged_output
    from gpt2_export.hf import import_from_hf

    check_output(out, force=force)
    gpt = import_from_hf(from_hf)
    with staged_output(out, force=force, protect=from_hf) as staging:
        save_model(gpt, staging, extra={"imported_from": str(from_hf)})
    typer.echo(f"imported {from_hf} to {out}")


def register(app: Any) -> None:
    """Add ``export`` and ``import`` to the ``gpt2`` app."""
    app.command("export")(export)
    app.command("import")(import_)
