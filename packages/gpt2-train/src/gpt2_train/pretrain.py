"""``gpt2 train``: pre-training on token shards. Builds the model and the shard loaders from ``TrainConfig`` and
hands them to ``gpt2_train.run.run_training``, as ``gpt2_sft.sft.run_sft`` does with instruction examples.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_core.paths import cache_dir
from gpt2_data.loader import ShardLoader

from gpt2_train.config import TrainConfig
from gpt2_train.distributed import DistEnv, on_main_rank
from gpt2_train.run import run_training
from gpt2_train.trainer import TrainResult


def build_model(cfg: TrainConfig) -> GPT:
    """A fresh model from preset ``cfg.model`` (with overrides, vocab padded), or ``cfg.init_from``'s.

    Raises ``UserError`` for overrides the preset does not have, or that would change the shape of an
    ``--init-from`` model (only dropout may change).
    """
    from gpt2_core.presets import get_preset

    if cfg.init_from:
        shape_changes = set(cfg.model_overrides) - {"dropout"}
        if shape_changes:
            raise UserError(
                f"--init-from: cannot change {sorted(shape_changes)} of an existing model (only dropout)"
            )
        model = GPT.from_pretrained(cfg.init_from)
        if "dropout" in cfg.model_overrides:
            model = _with_dropout(model, float(cfg.model_overrides["dropout"]))
        return model
    try:
        config = get_preset(cfg.model, **cfg.model_overrides)
    except TypeError as e:
        raise UserError(f"model_overrides: {e}") from e
    if cfg.vocab_multiple > 1:
        config = config.padded(cfg.vocab_multiple)
    return GPT(config)


def _with_dropout(model: GPT, p: float) -> GPT:
    model.config = replace(model.config, dropout=p)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    for block in model.transformer.h:
        block.attn.dropout = p
    return model


def prepare_data(cfg: TrainConfig, env: DistEnv) -> Path:
    """The data directory: ``cfg.data_dir``, or ``cfg.dataset`` prepared once into the cache (rank 0, while the
    others wait). Raises ``UserError`` when neither is given."""
    if cfg.data_dir:
        return Path(cfg.data_dir)
    if not cfg.dataset:
        raise UserError("give --data-dir (a directory from `gpt2 data prepare`) or --dataset NAME")
    # The shard size and split are part of the name: prepare() refuses to redo a directory with other settings.
    val = "" if cfg.dataset_val_tokens is None else f"-val{cfg.dataset_val_tokens:g}"
    out = cache_dir() / "data" / f"{cfg.dataset}-shards{cfg.dataset_shard_tokens}{val}"

    def prepare_once() -> None:
        from gpt2_data.prepare import prepare, read_manifest

        manifest = read_manifest(out) if out.is_dir() else None
        if not (manifest and manifest.get("complete")):
            print(f"preparing dataset {cfg.dataset!r} in {out} (once)", file=sys.stderr)
        prepare(
            cfg.dataset,
            out,
            shard_tokens=cfg.dataset_shard_tokens,
            val_tokens=cfg.dataset_val_tokens,
            progress=sys.stderr.isatty(),
        )

    on_main_rank(env, prepare_once)
    return out


def shard_sources(cfg: TrainConfig, env: DistEnv) -> tuple[ShardLoader, ShardLoader | None]:
    """This rank's train loader (shuffled with ``cfg.seed``) and val loader (None when ``--eval-every 0``)
    over the shards of :func:`prepare_data`."""
    data_dir = prepare_data(cfg, env)
    common = dict(batch_size=cfg.micro_batch, seq_len=cfg.seq_len, rank=env.rank, world_size=env.world_size)
    train = ShardLoader(
        data_dir,
        split="train",
        seed=cfg.seed,
        shuffle=True,
        shuffle_windows=cfg.shuffle_windows,
        align_documents=cfg.align_documents,
        **common,
    )
    val = ShardLoader(data_dir, split="val", shuffle=False, **common) if cfg.eval_every else None
    return train, val


def train(cfg: TrainConfig) -> TrainResult:
    """Run ``gpt2 train`` with ``cfg`` (under torchrun: this rank's share)."""

    def data(
        cfg: TrainConfig, env: DistEnv, model: GPT
    ) -> tuple[TrainConfig, ShardLoader, ShardLoader | None]:
        return (cfg, *shard_sources(cfg, env))

    return run_training(cfg, lambda cfg: (build_model(cfg), cfg), data)


__all__ = ["build_model", "prepare_data", "shard_sources", "train"]
