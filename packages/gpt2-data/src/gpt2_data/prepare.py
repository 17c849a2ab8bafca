"""``gpt2 data prepare``: tokenize a dataset into llm.c-format shards, resumably (its config and entry point).

Every document is preceded by ``<|endoftext|>`` (50256), as in GPT-2 and llm.c. Documents are consumed in the
dataset's deterministic order by the threaded pipeline (``gpt2_data.pipeline``), which routes them to the
validation and training splits (``gpt2_data.splits``); once each shard is on disk, ``manifest.json``
(``gpt2_data.manifest``) records where to resume, so an interrupted ``prepare`` picks up after its last
complete shard and ends with exactly the shards an uninterrupted run writes. The manifest also counts, per
file, the bytes that were not UTF-8 and were read as U+FFFD (``replaced_bytes``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpt2_data.manifest import FORMAT, read_manifest, start_manifest
from gpt2_data.pipeline import run
from gpt2_data.prepare_config import PrepareConfig

__all__ = ["PrepareConfig", "prepare", "read_manifest"]


def prepare(
    dataset: str,
    out_dir: str | Path,
    *,
    options: dict[str, Any] | None = None,
    shard_tokens: int = 100_000_000,
    val_tokens: float | None = None,
    max_tokens: int | None = None,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize dataset ``dataset`` into shards in ``out_dir`` and return the manifest (also in manifest.json).

    ``prepare(dataset="python-stdlib", out_dir="data/stdlib", shard_tokens=1_000_000, val_tokens=0.05)``

    - ``options``: the dataset's options by field name (``{"include_tests": True}``), checked against its
      ``Options`` dataclass.
    - ``shard_tokens``, ``val_tokens``, ``max_tokens``, ``workers``: as in :class:`PrepareConfig`.
    - Calling it again on a complete directory with the same arguments returns at once; on an interrupted one it
      resumes; with different arguments it raises ``UserError`` unless ``overwrite`` (which deletes the old shards).
    - ``progress``: show a rich progress bar on stderr.
    """
    from gpt2_core.tokenizer import Tokenizer

    from gpt2_data.datasets import build_dataset

    config = PrepareConfig(dataset, shard_tokens, val_tokens, max_tokens, workers)
    ds = build_dataset(dataset, options)
    out = Path(out_dir)
    tokenizer = Tokenizer()
    identity = {
        "format": FORMAT,
        "dataset": dataset,
        "options": asdict(ds.options),
        "tokenizer": {
            "name": tokenizer.name,
            "sha256": tokenizer.sha256,
            "vocab_size": tokenizer.n_vocab,
            "eot_id": tokenizer.eot_id,
        },
        "shard_tokens": shard_tokens,
        "val_tokens": val_tokens,
        "max_tokens": max_tokens,
    }
    manifest = start_manifest(out, identity, overwrite)
    if manifest.get("complete"):
        return manifest
    manifest = run(config, ds.documents(), out, manifest, tokenizer, progress, ds.decoder.replaced)
    for source in manifest["replaced_bytes"]:
        ds.decoder.warn(source)
    return manifest
