"""``gpt2 sft``: gpt2-train's ``Trainer`` with SFT's pieces (model with chat template, masked batches).

Checkpoints, ``--resume``, loggers, DDP or FSDP (torchrun) and bf16 are the trainer's. Every checkpoint is a model
directory carrying the chat template, so ``gpt2 chat --model RUN_DIR/latest`` works as it is.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_core.tokenizer import EOT_ID
from gpt2_train.trainer import TrainResult

from gpt2_sft.config import SFTConfig
from gpt2_sft.examples import read_meta

DATA_SUBDIR = "data"
DEFAULT_MAX_SEQ_LEN = 1024
"""--seq-len 0 takes the model's context window, up to this (GPT-2's own)."""


def build_sft_model(cfg: SFTConfig) -> GPT:
    """The model of ``--from`` with the chat template (added unless it has one)."""
    from gpt2_core.chat_template import add_chat_template
    from gpt2_core.model import GPT

    if not cfg.init_from:
        raise UserError(
            "--from: give the model to fine-tune (a model directory, RUN/latest, or Hugging Face GPT-2)"
        )
    return add_chat_template(GPT.from_pretrained(cfg.init_from), cfg.template)


def ensure_data(cfg: SFTConfig, model: GPT, options: dict[str, Any]) -> Path:
    """``--data-dir``, or ``--dataset`` prepared into RUN_DIR/data (reused when prepared the same way)."""
    if cfg.data_dir:
        return Path(cfg.data_dir)
    if not cfg.dataset:
        raise UserError(
            "give --dataset NAME (alpaca, chat, shakespeare-chat) with its options, or --data-dir from gpt2 sft prepare"
        )
    out = Path(cfg.run_dir) / DATA_SUBDIR
    want = {
        "dataset": cfg.dataset,
        "options": options,
        "max_len": cfg.seq_len + 1,
        "chat_template": model.config.chat_template,
        "val_fraction": cfg.val_fraction,
    }
    try:
        meta = read_meta(out)
        fresh = any(meta.get(k) != v for k, v in want.items())
    except (UserError, ValueError):
        fresh = True
    if fresh:
        from gpt2_core.chat_template import ChatTemplate
        from gpt2_core.tokenizer import Tokenizer

        from gpt2_sft.datasets import build_instruction_dataset
        from gpt2_sft.examples import prepare_dataset

        dataset = build_instruction_dataset(cfg.dataset, options)
        template = ChatTemplate(model.config.chat_template, Tokenizer.for_config(model.config))
        stats = prepare_dataset(
            dataset,
            template,
            out,
            max_len=cfg.seq_len + 1,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            meta={"dataset": cfg.dataset, "options": options, "val_fraction": cfg.val_fraction},
        )
        print(
            f"prepared {stats.examples['train']} train + {stats.examples['val']} val conversations in {out}; "
            f"{stats.truncated} truncated by whole turns, {stats.dropped_too_long} too long, "
            f"{stats.dropped_no_reply} without a reply",
            file=sys.stderr,
        )
    return out


def check_data_matches(data_dir: Path, model: GPT) -> dict[str, Any]:
    """The prepared directory's meta, refusing examples tokenized for another template or vocabulary."""
    from gpt2_core.tokenizer import Tokenizer

    meta = read_meta(data_dir)
    special = Tokenizer.for_config(model.config).special_tokens
    if meta.get("chat_template") != model.config.chat_template or meta.get("special_tokens") != special:
        kind = (meta.get("chat_template") or {}).get("kind")
        raise UserError(
            f"--data-dir {data_dir}: prepared for a {kind!r} chat template, the model's is "
            f"{model.config.chat_template['kind']!r}; run gpt2 sft prepare again with --model set to --from"
        )
    return meta


def run_sft(cfg: SFTConfig, dataset_options: dict[str, Any] | None = None) -> TrainResult:
    """Fine-tune ``cfg.init_from`` (this rank's share under torchrun)."""
    from gpt2_train.distributed import DistEnv, on_main_rank
    from gpt2_train.run import run_training

    from gpt2_sft.examples import load_split
    from gpt2_sft.loader import SFTLoader

    def model(cfg: SFTConfig) -> tuple[GPT, SFTConfig]:
        model = build_sft_model(cfg)
        return model, replace(cfg, seq_len=cfg.seq_len or min(model.config.block_size, DEFAULT_MAX_SEQ_LEN))

    def data(cfg: SFTConfig, env: DistEnv, model: GPT) -> tuple[SFTConfig, SFTLoader, SFTLoader | None]:
        data_dir = on_main_rank(env, lambda: ensure_data(cfg, model, dataset_options or {}))
        check_data_matches(data_dir, model)
        common: dict[str, Any] = dict(
            batch_size=cfg.micro_batch,
            seq_len=cfg.seq_len,
            rank=env.rank,
            world_size=env.world_size,
            pack=cfg.pack,
            pad_id=EOT_ID,
        )
        train = SFTLoader(load_split(data_dir, "train"), seed=cfg.seed, **common)
        val_examples = load_split(data_dir, "val")
        val = SFTLoader(val_examples, shuffle=False, **common) if len(val_examples) else None
        if train.cut and env.is_main:
            print(
                f"warning: {train.cut} examples are longer than --seq-len {cfg.seq_len} + 1 and are cut; "
                "prepare with --max-len to drop whole turns instead",
                file=sys.stderr,
            )
        # The val set is small: one pass at most, and none without held-out conversations.
        cfg = replace(
            cfg,
            eval_every=cfg.eval_every if val else 0,
            eval_batches=min(cfg.eval_batches, val.batches_per_epoch()) if val else cfg.eval_batches,
        )
        return cfg, train, val

    result = run_training(cfg, model, data)
    if result.checkpoint is not None:  # rank 0, and a checkpoint was written
        latest = Path(cfg.run_dir) / "latest"
        print(f"fine-tuned model: {latest} (gpt2 chat --model {latest})", file=sys.stderr)
    return result
