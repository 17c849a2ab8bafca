"""``gpt2 sft prepare`` and ``gpt2 sft --from MODEL ...``. Heavy imports stay in the bodies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from gpt2_cli.options import SectionedCommand, dataclass_options
from gpt2_core.errors import UserError
from gpt2_train.config_layers import SHOW_CONFIG_HELP
from gpt2_train.optimizer_flags import optimizer_options
from typer.core import TyperGroup

from gpt2_sft.config import SFT_PRESETS, SFTConfig, SFTPrepareConfig

SFT_HELP = """Fine-tune a model on instructions (under torchrun: DDP across its processes).

Options of --dataset follow as --field value, e.g.
gpt2 sft --from runs/tiny/latest --dataset alpaca --path data.jsonl --run-dir runs/sft
or, offline on the built-in Shakespeare instructions: gpt2 sft --preset tiny --from runs/tiny/latest
(`gpt2 sft` and `gpt2 sft train` are the same command). Flags override --config (TOML of these fields),
which overrides --preset; --show-config prints the result.
The result, RUN_DIR/latest, is a model directory for gpt2 chat, gpt2 generate and gpt2 export.
"""


def prepare_command(
    ctx: typer.Context,
    config: SFTPrepareConfig,
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the tokenized examples."),
) -> None:
    """Tokenize instruction data into examples with a loss mask (only assistant tokens count).

    Options of the dataset follow as --field value, e.g.
    gpt2 sft prepare --dataset alpaca --path data.jsonl --model runs/tiny/latest --out data/sft
    """
    from gpt2_core.chat_template import ChatTemplate, chat_config
    from gpt2_core.config import GPTConfig
    from gpt2_core.tokenizer import Tokenizer
    from gpt2_core.weights import read_config

    from gpt2_sft.datasets import build_instruction_dataset, instruction_dataset_options
    from gpt2_sft.examples import prepare_dataset

    options = instruction_dataset_options(config.dataset, list(ctx.args))
    dataset = build_instruction_dataset(config.dataset, options)
    if config.model and not Path(config.model).is_dir():
        raise UserError(f"--model {config.model}: no such model directory")
    base = read_config(config.model)[0] if config.model else GPTConfig().padded(64)
    cfg = chat_config(base, config.template)
    template = ChatTemplate(cfg.chat_template, Tokenizer(cfg.special_tokens))
    max_len = config.max_len or cfg.block_size + 1
    stats = prepare_dataset(
        dataset,
        template,
        out,
        max_len=max_len,
        val_fraction=config.val_fraction,
        seed=config.seed,
        meta={"dataset": config.dataset, "options": options, "model": config.model},
    )
    typer.echo(
        f"{out}: {stats.examples['train']:,} train + {stats.examples['val']:,} val examples from "
        f"{stats.conversations:,} conversations; {stats.tokens['train']:,} train tokens, "
        f"{stats.target_tokens['train']:,} of them assistant tokens (the only ones with loss)"
    )
    typer.echo(
        f"truncated by whole turns to {max_len} tokens: {stats.truncated:,}; dropped: "
        f"{stats.dropped_too_long:,} too long, {stats.dropped_no_reply:,} without an assistant reply"
    )


def train_command(
    ctx: typer.Context,
    flags: dict[str, Any],
    optimizer_flags: dict[str, Any],
    preset: str | None = typer.Option(None, "--preset", help=f"Named recipe: {', '.join(SFT_PRESETS)}."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML file of SFT config fields."),
    show_config: bool = typer.Option(False, "--show-config", help=SHOW_CONFIG_HELP),
) -> None:
    from gpt2_train.config_layers import build_config, config_toml

    cfg = build_config(
        preset,
        str(config_file) if config_file else None,
        {**flags, **optimizer_flags},
        cls=SFTConfig,
        presets=SFT_PRESETS,
    )
    if show_config:
        typer.echo(config_toml(cfg), nl=False)
        return
    options: dict[str, Any] = {}
    if ctx.args:
        if not cfg.dataset or cfg.data_dir:
            raise UserError(f"unexpected arguments {' '.join(ctx.args)}: dataset options go with --dataset")
        from gpt2_sft.datasets import instruction_dataset_options

        options = instruction_dataset_options(cfg.dataset, list(ctx.args))
    from gpt2_sft.sft import run_sft

    result = run_sft(cfg, options)
    if result.stopped_by is not None:
        sys.exit(128 + result.stopped_by)


class _SFTGroup(TyperGroup):
    """``gpt2 sft ARGS`` is ``gpt2 sft train ARGS`` unless ARGS start with a sub-command or --help."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["train", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The group's help, then train's flags: they are what ``gpt2 sft FLAGS`` takes."""
        super().format_help(ctx, formatter)
        train = self.commands["train"]
        with formatter.section("Options of gpt2 sft train (gpt2 sft takes them as they are)"):
            formatter.write_dl([r for p in train.get_params(ctx) if (r := p.get_help_record(ctx))])


# Fields that make no sense when fine-tuning an existing model.
NOT_FOR_SFT = (
    "model",
    "model_overrides",
    "vocab_multiple",
    "hellaswag_every",
    "hellaswag_file",
    "hellaswag_limit",
    "sample_every",
    "sample_prompt",
    "sample_tokens",
    "align_documents",
    "batch_warmup_steps",
    "batch_warmup_start",
    "seq_len_warmup_steps",
    "seq_len_start",
)


def sft_app() -> typer.Typer:
    app = typer.Typer(cls=_SFTGroup, help=SFT_HELP, no_args_is_help=True)
    extra = {"allow_extra_args": True, "ignore_unknown_options": True}
    flags = dataclass_options(
        SFTConfig,
        into="flags",
        flags={"init_from": "--from", "loggers": "--logger"},
        exclude=NOT_FOR_SFT,
        given_only=True,
    )
    app.command("train", help=SFT_HELP, context_settings=extra, cls=SectionedCommand)(
        flags(optimizer_options(train_command))
    )
    app.command("prepare", context_settings=extra)(
        dataclass_options(SFTPrepareConfig, into="config")(prepare_command)
    )
    return app
