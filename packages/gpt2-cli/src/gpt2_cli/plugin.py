"""gpt2-cli's own commands, registered like any plugin's: ``generate``, ``chat`` and ``plugins``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from gpt2_core.hookspecs import hookimpl
from gpt2_core.runtime import RuntimeConfig
from gpt2_core.sampling import SamplingConfig

from gpt2_cli.options import ENCODING_ERRORS_HELP, dataclass_options, runtime_options


def generate(
    sampling: SamplingConfig,
    runtime: RuntimeConfig,
    model: Path = typer.Option(
        ..., "--model", "-m", help="Model directory (ours, a checkpoint, or Hugging Face GPT-2)."
    ),
    prompt: str = typer.Option(
        "", "--prompt", "-p", help="Text to continue; empty starts from <|endoftext|>."
    ),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they are generated (one sequence)."),
    encoding_errors: str = typer.Option(
        "replace", "--encoding-errors", help=ENCODING_ERRORS_HELP.format(source="--prompt")
    ),
) -> None:
    """Generate text from a model."""
    from gpt2_core.decoding import Utf8Decoder
    from gpt2_core.llm import LLM

    decoder = Utf8Decoder(encoding_errors)
    prompt = decoder.decode_os_text(prompt, "--prompt")  # argv bytes that were not UTF-8
    decoder.warn("--prompt")
    llm = LLM.from_runtime(model, runtime, batch_sizes=sampling.num_return_sequences)  # decoded side by side
    texts = []
    if stream:
        typer.echo(prompt, nl=False)
        texts.append("")
        for piece in llm.stream(prompt, sampling):
            typer.echo(piece, nl=False)
            texts[0] += piece
        typer.echo()
    else:
        texts = llm.generate(prompt, sampling)
        for i, text in enumerate(texts):
            if sampling.num_return_sequences > 1:
                typer.secho(f"--- sample {i + 1}", fg="cyan")
            typer.echo(prompt + text)
    if llm.template and not all(texts):
        typer.echo(
            "note: this is a chat model, and a completion ended at once with its end-of-turn marker: "
            f"talk to it with gpt2 chat --model {model}",
            err=True,
        )


def provides(pm: Any, plugin: object) -> list[str]:
    """What ``plugin`` provides: each hook it implements, with the names it registers through it."""
    out = []
    for caller in sorted(pm.get_hookcallers(plugin) or [], key=lambda c: c.name):
        names: list[str] = []
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            try:  # call the one implementation on a scratch target to see what it adds
                if caller.name == "register_commands":
                    scratch = typer.Typer()
                    impl.function(app=scratch)
                    names += [
                        c.name or (c.callback.__name__.replace("_", "-") if c.callback else "?")
                        for c in scratch.registered_commands
                    ]
                    names += [g.name or "?" for g in scratch.registered_groups]
                else:
                    impl.function(register=lambda name, factory, found=names: found.append(name))
            except Exception:  # a plugin's bug must not break the listing; its hook still shows
                pass
        out.append(f"{caller.name}: {', '.join(names)}" if names else caller.name)
    return out


def plugins() -> None:
    """List the installed plugins, their versions and what they provide (hooks and the names registered)."""
    from gpt2_core.plugins import get_plugin_manager, plugin_versions
    from rich.console import Console
    from rich.table import Table

    pm = get_plugin_manager()
    versions = plugin_versions()
    table = Table("plugin", "version", "provides")
    for name, plugin in sorted(pm.list_name_plugin()):
        table.add_row(name, versions.get(name, "?"), "\n".join(provides(pm, plugin)))
    Console(width=200).print(table)


@hookimpl
def register_commands(app: Any) -> None:
    app.command("generate")(
        dataclass_options(
            SamplingConfig,
            into="sampling",
            flags={"max_new_tokens": "--max-tokens", "num_return_sequences": "--num-seq"},
            exclude=("stop_at_eot",),
        )(runtime_options(generate))
    )
    from gpt2_cli.chat import chat_command

    app.command("chat")(chat_command())
    app.command("plugins")(plugins)
