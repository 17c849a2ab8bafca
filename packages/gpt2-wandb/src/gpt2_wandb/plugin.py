"""gpt2-wandb's implementation of the gpt2 hooks: the ``wandb`` logger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpt2_core.hookspecs import hookimpl


@hookimpl
def register_loggers(register: Callable[..., None]) -> None:
    def wandb(run_dir: Any, config: Any) -> Any:
        from gpt2_wandb.logger import WandbLogger

        return WandbLogger(run_dir, config)

    register("wandb", wandb)
