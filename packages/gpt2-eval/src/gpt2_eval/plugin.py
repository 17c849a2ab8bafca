"""gpt2-eval's implementation of the gpt2 hooks: ``gpt2 eval lm-eval``."""

from __future__ import annotations

from typing import Any

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_cli.groups import command_group

    from gpt2_eval.cli import lm_eval_command

    command_group(app, "eval", "Evaluate a model.").command("lm-eval")(lm_eval_command)
