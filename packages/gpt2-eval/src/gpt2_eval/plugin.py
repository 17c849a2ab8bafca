"""gpt2-eval's implementation of the gpt2 hooks: ``gpt2 eval lm-eval``."""

from __future__ import annotations

from typing import Any

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_commands(app: Any) -> None:
    from gpt2_cli.groups import command_group
    from gpt2_cli.options import runtime_options

    from gpt2_eval.cli import lm_eval_command

    # The inference flags, by default as lm-eval's own hf model runs: CPU, float32, torch's products.
    command = runtime_options(lm_eval_command, device="cpu", dtype="float32", cpu_matmul="torch")
    command_group(app, "eval", "Evaluate a model.").command("lm-eval")(command)
