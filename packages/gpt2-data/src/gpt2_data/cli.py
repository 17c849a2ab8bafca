"""``gpt2 data list | prepare | inspect``.

Dataset options are not fixed flags: each dataset declares its own ``Options`` dataclass, so ``prepare``
accepts the chosen dataset's fields as extra ``--field value`` flags (``gpt2_data.dataset_options``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

# gpt2-cli is the only caller of register_commands, so it is installed whenever this module is imported.
from gpt2_cli.options import dataclass_options
from gpt2_core.errors import UserError

from gpt2_data.prepare_config import PrepareConfig


def list_datasets() -> None:
    """Show every dataset (from every plugin) and its options."""
    from gpt2_data.datasets import dataset_registry, describe, options_of

    for name, cls in sorted(dataset_registry().items()):
        typer.secho(name, bold=True, nl=False)
        typer.echo(f"  {describe(cls)}")
        for field, type_name, default, doc in options_of(cls):
            shown = "required" if default is dataclasses.MISSING else f"default: {default!r}"
            typer.echo(f"    --{field.replace('_', '-')} {type_name} ({shown})  {doc}")


def prepare_command(
    ctx: typer.Context,
    config: PrepareConfig,
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the shards and manifest.json."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete shards already in --out and start over."
    ),
) -> None:
    """Tokenize a dataset into llm.c-format shards (resumable: run it again after an interruption).

    Options of the chosen dataset follow as --field value (see `gpt2 data list`), e.g.
    gpt2 data prepare --dataset files --paths 'notes/*.txt' --out data/notes
    """
    from gpt2_data.dataset_options import parse_dataset_options
    from gpt2_data.prepare import prepare

    options = parse_dataset_options(config.dataset, list(ctx.args))
    manifest = prepare(
        config.dataset,
        out,
        options=options,
        shard_tokens=config.shard_tokens,
        val_tokens=config.val_tokens,
        max_tokens=config.max_tokens,
        workers=config.workers,
        overwrite=overwrite,
    )
    tokens = manifest["tokens"]
    typer.echo(
        f"{out}: {len(manifest['shards'])} shards, {tokens['train']:,} train + {tokens['val']:,} val tokens "
        f"from {manifest['documents']:,} documents"
    )
    replaced = manifest.get("replaced_bytes", {})
    if replaced:
        typer.echo(
            f"undecodable bytes read as U+FFFD: {sum(replaced.values()):,} in {len(replaced)} file(s) "
            "(manifest.json: replaced_bytes)"
        )


def inspect_command(
    data_dir: Path = typer.Argument(
        ..., help="A directory of shards (ours, or llm.c's *train*.bin / *val*.bin)."
    ),
    samples: int = typer.Option(3, "--samples", "-n", help="Documents to decode and show."),
    chars: int = typer.Option(400, "--chars", help="Characters shown per sample."),
    verify: bool = typer.Option(False, "--verify", help="Check every shard's sha256 against the manifest."),
) -> None:
    """Summarize a shard directory and decode a few samples, to see what a model will train on."""
    import numpy as np
    from gpt2_core.tokenizer import Tokenizer

    from gpt2_data.loader import find_shards
    from gpt2_data.prepare import read_manifest
    from gpt2_data.shards import open_shard, read_header, verify_shard

    manifest = read_manifest(data_dir)
    if manifest is not None:
        typer.echo(f"dataset:   {manifest['dataset']} {manifest.get('options', {})}")
        tok = manifest["tokenizer"]
        typer.echo(f"tokenizer: {tok['name']} ({tok['sha256']}), vocab {tok['vocab_size']}")
        typer.echo(
            f"status:    {'complete' if manifest.get('complete') else 'INCOMPLETE (run prepare again)'}"
        )
        if "documents" in manifest:
            typer.echo(f"documents: {manifest['documents']:,}")
    splits: dict[str, list[Path]] = {}
    for split in ("train", "val"):
        try:
            splits[split] = find_shards(data_dir, split)
        except UserError:
            if split == "train" or manifest is None:
                raise
            splits[split] = []
    for split, paths in splits.items():
        counts = [read_header(p) for p in paths]
        typer.echo(f"{split + ':':<10} {len(paths)} shards, {sum(counts):,} tokens")
    if verify:
        if manifest is None:
            raise UserError(f"{data_dir}: no manifest.json, so there are no checksums to verify")
        for s in manifest["shards"]:
            verify_shard(Path(data_dir) / s["name"], s["sha256"])
        typer.echo(f"verified:  sha256 of {len(manifest['shards'])} shards")
    tokenizer = Tokenizer()
    tokens = open_shard(splits["train"][0], vocab_size=tokenizer.n_vocab)
    starts = np.flatnonzero(np.asarray(tokens[: 4 * 1024 * 1024]) == tokenizer.eot_id)
    for i, start in enumerate(starts[:samples].tolist()):
        piece = tokenizer.decode(tokens[start + 1 : start + 1 + chars].tolist())[:chars]
        typer.secho(f"--- sample {i + 1} ({splits['train'][0].name}, token {start})", fg="cyan")
        typer.echo(piece)


def data_app() -> typer.Typer:
    app = typer.Typer(help="Prepare and inspect training data.", no_args_is_help=True)
    app.command("list")(list_datasets)
    app.command(
        "prepare",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(dataclass_options(PrepareConfig, into="config")(prepare_command))
    app.command("inspect")(inspect_command)
    return app
