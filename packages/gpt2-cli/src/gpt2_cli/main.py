"""The ``gpt2`` entry point: build the Typer app, let every plugin add its commands, run it."""

from __future__ import annotations

import sys

import typer
from gpt2_core.errors import RunStopped, UserError
from gpt2_core.plugins import register_builtin


def _version(value: bool) -> None:
    if value:
        from gpt2_core import __version__ as core_version
        from gpt2_core.plugins import plugin_versions

        from gpt2_cli import __version__

        typer.echo(f"gpt2 {__version__} (gpt2-core {core_version})")
        for name, version in sorted(plugin_versions().items()):
            typer.echo(f"  {name} {version}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The root app with every plugin's commands registered."""
    app = typer.Typer(
        name="gpt2",
        help="Train, fine-tune, chat with and export GPT-2 models.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        # Click's plain help: rich's tables cut long flag names at 80 columns (a pipe, CI) and label flags
        # that take no value <bool>; click keeps every name whole at any width.
        rich_markup_mode=None,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show versions and exit."
        ),
    ) -> None:
        """Train, fine-tune, chat with and export GPT-2 models."""

    register_builtin("gpt2_cli.plugin", "gpt2-cli").hook.register_commands(app=app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run ``gpt2``; a UserError becomes one line on stderr and exit status 2, a RunStopped (a diverged
    run) one line and its own status (3).

    Usage errors, ``--help``, ``--version`` and Ctrl-C are left to Typer's standalone mode (which exits
    itself); we only add the UserError case. Typer vendors its own copy of click, so catching
    ``click.ClickException`` here would miss its exceptions.
    """
    command = typer.main.get_command(build_app())
    try:
        command.main(args=argv, prog_name="gpt2", standalone_mode=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunStopped as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
