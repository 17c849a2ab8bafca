"""``gpt2 sft prepare``, ``gpt2 sft --from MODEL ...`` and ``gpt2 chat``. Heavy imports stay in the bodies."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from gpt2_cli.options import dataclass_options
from gpt2_core.errors import UserError
from typer.core import TyperGroup

from gpt2_sft.chat import ChatSampling
from gpt2_sft.config import SFT_PRESETS, SFTConfig, SFTPrepareConfig

SFT_HELP = """Fine-tune a model on instructions (under torchrun: DDP across its processes).

Options of --dataset follow as --field value, e.g.
gpt2 sft --from runs/tiny/latest --dataset alpaca --path data.jsonl --run-dir runs/sft
or, offline on the built-in Shakespeare instructions: gpt2 sft --preset tiny --from runs/tiny/latest
(`gpt2 sft` and `gpt2 sft train` are the same command). Flags override --config (TOML of these fields),
which overrides --preset.
The result, RUN_DIR/latest, is a model directory for gpt2 chat, gpt2 generate and gpt2 export.
"""


def read_model_config(path: str | Path) -> Any:
    """The ``GPTConfig`` of a model directory (ours, a checkpoint or Hugging Face GPT-2), without its weights."""
    from gpt2_core.model import GPTConfig
    from gpt2_core.weights import CONFIG_FILE, config_from_hf, is_hf_config, load_config

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"--model {root}: no such model directory")
    raw = load_config(root)
    if is_hf_config(raw):
        return config_from_hf(raw, str(root / CONFIG_FILE))
    return GPTConfig.from_dict(
        {k: v for k, v in raw.items() if k not in ("format", "info")}, str(root / CONFIG_FILE)
    )


def prepare_command(
    ctx: typer.Context,
    config: SFTPrepareConfig,
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the tokenized examples."),
) -> None:
    """Tokenize instruction data into examples with a loss mask (only assistant tokens count).

    Options of the dataset follow as --field value, e.g.
    gpt2 sft prepare --dataset alpaca --path data.jsonl --model runs/tiny/latest --out data/sft
    """
    from gpt2_core.model import GPTConfig
    from gpt2_core.tokenizer import Tokenizer
    from gpt2_data.cli import parse_dataset_options
    from gpt2_data.datasets import build_dataset

    from gpt2_sft.data import prepare, with_progress
    from gpt2_sft.template import ChatTemplate, chat_config

    options = parse_dataset_options(config.dataset, list(ctx.args))
    dataset = build_dataset(config.dataset, options)
    if not hasattr(dataset, "conversations"):
        raise UserError(f"--dataset {config.dataset}: not an instruction dataset; use alpaca or chat")
    base = read_model_config(config.model) if config.model else GPTConfig().padded(64)
    cfg = chat_config(base, config.template)
    template = ChatTemplate(cfg.chat_template, Tokenizer(cfg.special_tokens))
    max_len = config.max_len or cfg.block_size + 1
    stats = prepare(
        with_progress(dataset.conversations(), sys.stderr.isatty()),
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


def _terminal_read(prompt: str) -> str:
    with contextlib.suppress(ImportError):  # no readline on Windows
        import readline  # noqa: F401  (line editing and history for input())
    return input(prompt)


def _pipe_read(prompt: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _info(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def chat(
    sampling: ChatSampling,
    model: Path = typer.Option(
        ..., "--model", "-m", help="Model directory (fine-tuned by gpt2 sft, or any)."
    ),
    system: str = typer.Option("", "--system", help="System message that opens the conversation."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, mps, or auto."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="float32, bfloat16, float16, or auto: bfloat16 on a GPU or CPU that computes in it natively.",
    ),
    threads: int = typer.Option(
        0, "--threads", help="CPU threads for torch (0: its default); 1 is often fastest on a busy machine."
    ),
) -> None:
    """Chat with a model in the terminal (reads stdin line by line when it is not a terminal)."""
    import torch
    from gpt2_core.device import pick_device, pick_dtype
    from gpt2_core.weights import load_model

    from gpt2_sft.chat import ChatSession, run_chat

    if threads < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)

    where = pick_device(device)
    gpt = load_model(model, device=where, dtype=pick_dtype(dtype, where))
    session = ChatSession(gpt, sampling, system=system)
    interactive = sys.stdin.isatty()
    run_chat(
        session,
        read=_terminal_read if interactive else _pipe_read,
        write=_write,
        info=_info,
        interactive=interactive,
    )


def chat_command() -> Callable[..., None]:
    return dataclass_options(
        ChatSampling,
        into="sampling",
        flags={"max_new_tokens": "--max-tokens"},
        exclude=("num_return_sequences", "stop", "stop_at_eot"),
    )(chat)


def train_command(
    ctx: typer.Context,
    config: SFTConfig,
    preset: str | None = typer.Option(None, "--preset", help=f"Named recipe: {', '.join(SFT_PRESETS)}."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML file of SFT config fields."),
) -> None:
    from gpt2_train.cli import given_flags
    from gpt2_train.config import build_config

    cfg = build_config(
        preset,
        str(config_file) if config_file else None,
        given_flags(SFTConfig, ctx),
        cls=SFTConfig,
        presets=SFT_PRESETS,
    )
    options: dict[str, Any] = {}
    if ctx.args:
        if not cfg.dataset or cfg.data_dir:
            raise UserError(f"unexpected arguments {' '.join(ctx.args)}: dataset options go with --dataset")
        from gpt2_data.cli import parse_dataset_options

        options = parse_dataset_options(cfg.dataset, list(ctx.args))
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
)


def sft_app() -> typer.Typer:
    app = typer.Typer(cls=_SFTGroup, help=SFT_HELP, no_args_is_help=True)
    extra = {"allow_extra_args": True, "ignore_unknown_options": True}
    app.command("train", help=SFT_HELP, context_settings=extra)(
        dataclass_options(
            SFTConfig,
            into="config",
            flags={"init_from": "--from", "loggers": "--logger"},
            exclude=NOT_FOR_SFT,
        )(train_command)
    )
    app.command("prepare", context_settings=extra)(
        dataclass_options(SFTPrepareConfig, into="config")(prepare_command)
    )
    return app
