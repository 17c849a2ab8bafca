"""The hooks a gpt2 plugin can implement.

A plugin is a module (or object) registered under the ``gpt2`` entry-point group, whose functions are
marked with ``@hookimpl`` and named after a hook below. Our own packages are plugins in exactly the same
way. Each ``register_*`` hook receives a ``register`` callable; call it once per thing you provide,
with a unique name and a *factory* (a class or function): nothing heavy is built until a user picks it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("gpt2")
hookimpl = pluggy.HookimplMarker("gpt2")


@hookspec
def register_commands(app: Any) -> None:
    """Add commands or sub-command groups to the ``gpt2`` Typer ``app``.

    Import heavy modules (torch, datasets) inside the command functions, so ``gpt2 --help`` stays fast.
    """


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Provide text datasets for ``gpt2 data prepare``: call ``register(name, factory)``.

    ``factory`` is a dataset class as described in ``gpt2_data.datasets`` (an options dataclass and a
    method yielding documents' text).
    """


@hookspec
def register_loggers(register: Callable[..., None]) -> None:
    """Provide training loggers for ``gpt2 train --logger NAME``: call ``register(name, factory)``.

    ``factory(run_dir, config)`` returns an object with ``log(metrics, step)``, ``log_text(tag, text,
    step)`` and ``close()``, and optionally ``rewind(step)``, which forgets what was logged at later steps
    (called on resume, so a run killed after its checkpoint shows each step once; see ``gpt2_train.loggers``).
    """


@hookspec
def register_optimizers(register: Callable[..., None]) -> None:
    """Provide optimizers for ``gpt2 train --optimizer NAME`` (and ``gpt2 sft``): call ``register(name, factory)``.

    ``factory`` is a subclass of ``gpt2_train.optimizers.OptimizerPlugin``, as that module describes: an
    ``Options`` dataclass (its fields become flags, a TOML table and part of each checkpoint's config), the
    ``parallel`` modes it supports, ``build(model, config, device)`` returning the optimizer and, where
    hyperparameters follow the step (Muon's momentum warm-up), ``before_step(optimizer, step)``. A plain function
    ``factory(model, config, device)`` is an optimizer without options.
    """


@hookspec
def register_exporters(register: Callable[..., None]) -> None:
    """Provide model export formats for ``gpt2 export --format NAME``: call ``register(name, factory)``.

    ``factory`` is an exporter as described in ``gpt2_export.exporters``.
    """
