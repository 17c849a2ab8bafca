"""The flags ``gpt2 train`` and ``gpt2 sft`` share beyond their configs' own: every registered optimizer's
options (``gpt2_train.optimizers``), each optimizer's listed under its own heading in ``--help``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from gpt2_cli.options import dataclass_options

from gpt2_train.config import TrainConfig
from gpt2_train.optimizers import optimizer_registry, option_owners


def optimizer_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator giving ``command`` every registered optimizer's options as flags, under "Optimizer NAME";
    ``command`` receives the ones typed as ``optimizer_flags`` (field name -> value), for ``build_config``
    to give the run's optimizer. ``UserError`` for a plugin whose option is another flag already."""
    registry = optimizer_registry()
    option_owners(registry, taken={f.name for f in dataclasses.fields(TrainConfig)})
    groups = [(plugin.Options, f"Optimizer {name}") for name, plugin in registry.items()]
    return dataclass_options(groups, into="optimizer_flags", given_only=True)(command)
