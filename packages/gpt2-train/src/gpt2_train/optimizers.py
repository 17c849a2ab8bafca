"""Optimizer plugins: what ``--optimizer NAME`` builds, each with options of its own (torch-free).

A plugin registers a class (``register_optimizers``), as dataset plugins do::

    class Lion(OptimizerPlugin):
        \"\"\"Lion (Chen et al. 2023): the sign of an interpolated momentum.\"\"\"

        @dataclass
        class Options:
            lion_beta2: float = 0.99
            \"\"\"Lion's momentum decay.\"\"\"

        def build(self, model, config, device):
            from lion_pytorch import Lion

            return Lion(model.parameters(), lr=config.lr, betas=(0.9, self.options.lion_beta2))

Each field of ``Options`` is a flag of ``gpt2 train`` and ``gpt2 sft`` (``lion_beta2`` -> ``--lion-beta2``,
listed under "Optimizer lion" in ``--help``), a key of the optimizer's TOML table (``[lion]``) and of a
preset's, and is saved, filled in, in each checkpoint's config (``optimizer_options``), so a resume keeps it.
Field names are flags: a field another optimizer or ``TrainConfig`` already has is refused, unless the
``Options`` class inherits it (Muon's AdamW fields: a Muon run's AdamW half). Validation goes in the
``Options``'s ``__post_init__``, as a ``UserError`` naming the flag.

``parallel`` names the ``--parallel`` modes the optimizer works under (None, the default: all); the run's
checks ask it rather than inspecting the optimizer built. ``before_step(optimizer, step)``, if a plugin
overrides it, sets hyperparameters that follow the step (Muon's momentum warm-up) before each optimizer step,
as the trainer sets the learning rate: a function of the step alone, so a resumed run sets what the
uninterrupted one did. A plain function ``factory(model, config, device)`` may be registered
instead of a class: an optimizer without options that works under every mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from gpt2_core.dataclass_utils import from_dict
from gpt2_core.errors import UserError

if TYPE_CHECKING:
    from gpt2_train.config import TrainConfig

MUON_ADJUST_LR = ("original", "match_rms_adamw")


class OptimizerPlugin:
    """Base class of optimizer plugins: an ``Options`` dataclass, the ``parallel`` modes it supports, and
    ``build``. Importing it must not import torch: ``gpt2 train --help`` lists every optimizer's flags."""

    @dataclass
    class Options:
        pass

    parallel: ClassVar[tuple[str, ...] | None] = None
    """The ``--parallel`` modes it works under (None: every one)."""

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else type(self).Options()

    def build(self, model: Any, config: TrainConfig, device: Any) -> Any:
        """The optimizer over ``model``'s trainable parameters (a ``GPT``, or under ``--parallel fsdp`` its
        shards) on ``device``: a ``torch.optim.Optimizer``, or an object with the same ``param_groups``,
        ``step``, ``zero_grad``, ``state_dict``/``load_state_dict`` and ``register_step_post_hook``
        (``gpt2_train.optim.Optimizers``). ``config`` is the run's: ``config.lr`` is the schedule's peak."""
        raise NotImplementedError

    def before_step(self, optimizer: Any, step: int) -> None:
        """Set ``optimizer``'s (what ``build`` returned) hyperparameters for optimizer step ``step`` (0-based),
        from ``step`` and the options alone; the trainer calls it before each step, every rank, next to
        setting the learning rate (which it does itself: each group's ``lr``). Default: nothing."""


@dataclass
class AdamWOptions:
    """AdamW's hyperparameters (Loshchilov and Hutter 2019); build-nanogpt's values."""

    weight_decay: float = 0.1
    """AdamW weight decay, applied to 2-D weights only (not biases, LayerNorms)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""

    def __post_init__(self) -> None:
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.eps <= 0:
            raise UserError(f"--eps must be positive, got {self.eps}")


class AdamW(OptimizerPlugin):
    """AdamW on every parameter, weight decay on matrices and embeddings only (build-nanogpt's groups)."""

    Options = AdamWOptions

    def build(self, model: Any, config: TrainConfig, device: Any) -> Any:
        from gpt2_train.optim import build_adamw

        return build_adamw(model, config.lr, self.options, device)


@dataclass
class MuonOptions(AdamWOptions):
    """Muon's hyperparameters, and AdamW's for the parameters it leaves to AdamW."""

    muon_lr: float = 0.02
    """Peak learning rate of the blocks' matrices (nanochat's matrix_lr); --lr is the rest's, under AdamW."""
    muon_momentum: float = 0.95
    """Nesterov momentum (Keller Jordan's Muon, modded-nanogpt, nanochat)."""
    muon_momentum_warmup_steps: int = 0
    """Steps over which the momentum rises linearly from --muon-momentum-start (at step 0) to --muon-momentum,
    then stays (modded-nanogpt: 0.85 to 0.95 over its first 300 steps); 0, the default: no warm-up."""
    muon_momentum_start: float = 0.85
    """The momentum at step 0 of --muon-momentum-warmup-steps (modded-nanogpt's 0.85, the default)."""
    muon_weight_decay: float = 0.0
    """Decoupled weight decay of the matrices, p -= lr * wd * p (none in modded-nanogpt's and nanochat's first
    runs; their later ones decay cautiously: --muon-cautious-weight-decay)."""
    muon_cautious_weight_decay: bool = False
    """Cautious weight decay (Chen et al. 2025, "Cautious Weight Decay", arXiv:2510.12402; modded-nanogpt's
    Muon, nanochat's): --muon-weight-decay only on the weights whose update agrees with it in sign (update x
    weight >= 0, so the step already moves them towards 0, or not at all). Off by default."""
    muon_adjust_lr: str = "original"
    """torch.optim.Muon's adjust_lr_fn: original (lr * sqrt(max(1, rows/cols)), Keller Jordan's) or
    match_rms_adamw (lr * 0.2 * sqrt(max(rows, cols)), Moonshot's: --muon-lr on AdamW's scale)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.muon_lr <= 0:
            raise UserError(f"--muon-lr must be positive, got {self.muon_lr}")
        if not 0 <= self.muon_momentum < 1:
            raise UserError(f"--muon-momentum must be in [0, 1), got {self.muon_momentum}")
        if self.muon_momentum_warmup_steps < 0:
            raise UserError(
                f"--muon-momentum-warmup-steps must be >= 0, got {self.muon_momentum_warmup_steps}"
            )
        if not 0 <= self.muon_momentum_start < 1:
            raise UserError(f"--muon-momentum-start must be in [0, 1), got {self.muon_momentum_start}")
        if self.muon_weight_decay < 0:
            raise UserError(f"--muon-weight-decay must be >= 0, got {self.muon_weight_decay}")
        if self.muon_cautious_weight_decay and self.muon_weight_decay == 0:
            raise UserError(
                "--muon-cautious-weight-decay masks --muon-weight-decay, which is 0: give a positive "
                "--muon-weight-decay, or leave --muon-cautious-weight-decay off"
            )
        if self.muon_adjust_lr not in MUON_ADJUST_LR:
            raise UserError(
                f"--muon-adjust-lr must be {' or '.join(MUON_ADJUST_LR)}, got {self.muon_adjust_lr!r}"
            )

    def momentum_at(self, step: int) -> float:
        """The momentum of optimizer step ``step`` (0-based): ``muon_momentum_start`` at step 0, rising
        linearly to ``muon_momentum`` at ``muon_momentum_warmup_steps``, then that (modded-nanogpt's
        warm-up); ``muon_momentum`` at every step without a warm-up."""
        if step >= self.muon_momentum_warmup_steps:
            return self.muon_momentum
        frac = step / self.muon_momentum_warmup_steps
        return (1 - frac) * self.muon_momentum_start + frac * self.muon_momentum


class Muon(OptimizerPlugin):
    """Muon on the blocks' 2-D matrices, AdamW on embeddings, the head, LayerNorms and biases (modded-nanogpt's
    and nanochat's split); on several ranks each rank orthogonalises its share of the matrices, whole under
    DDP or gathered from FSDP's shards."""

    Options = MuonOptions

    def build(self, model: Any, config: TrainConfig, device: Any) -> Any:
        from gpt2_train.optim import build_muon

        return build_muon(model, config, self.options, device)

    def before_step(self, optimizer: Any, step: int) -> None:
        """Muon's momentum for ``step`` (:meth:`MuonOptions.momentum_at`) into its param groups, which every
        ``--parallel`` mode's step reads."""
        muon, _ = optimizer.optimizers  # build_muon's: Muon's, then AdamW's
        for group in muon.param_groups:
            group["momentum"] = self.options.momentum_at(step)


def optimizer_registry() -> dict[str, type[OptimizerPlugin]]:
    """Name -> plugin class of every optimizer the plugins register (``register_optimizers``), ours included;
    a plain factory function is wrapped as a plugin without options."""
    from gpt2_core.plugins import collect, register_builtin

    found = collect("optimizers", register_builtin("gpt2_train.builtins", "gpt2-train"))
    return {name: _as_plugin(name, factory) for name, factory in found.items()}


def _as_plugin(name: str, factory: Any) -> type[OptimizerPlugin]:
    if isinstance(factory, type) and hasattr(factory, "build"):
        return factory

    def build(self: OptimizerPlugin, model: Any, config: TrainConfig, device: Any) -> Any:
        return factory(model, config, device)

    return type(f"{name}-optimizer", (OptimizerPlugin,), {"build": build, "__doc__": factory.__doc__})


def optimizer_plugin(
    cfg: TrainConfig, registry: Mapping[str, Callable[..., Any]] | None = None
) -> OptimizerPlugin:
    """The optimizer ``cfg.optimizer`` names with its options from ``cfg.optimizer_options``. ``UserError``
    for an unknown name, an option it does not have or a bad value (each naming the flag), or a
    ``--parallel`` mode it does not support."""
    plugins = (
        optimizer_registry()
        if registry is None
        else {name: _as_plugin(name, f) for name, f in registry.items()}
    )
    if cfg.optimizer not in plugins:
        raise UserError(
            f"--optimizer: unknown optimizer {cfg.optimizer!r}; available: {', '.join(sorted(plugins))}"
        )
    plugin = plugins[cfg.optimizer]
    table = dict(cfg.optimizer_options.get(cfg.optimizer) or {})
    own = {f.name for f in dataclasses.fields(plugin.Options)}
    for key in table:
        if key not in own:
            owners = option_owners(plugins).get(key)
            where = f"an option of --optimizer {' / '.join(owners)}" if owners else "no optimizer's option"
            raise UserError(f"--{_flag(key)} is {where}, not of this run's --optimizer {cfg.optimizer}")
    instance = plugin(from_dict(plugin.Options, table, f"[{cfg.optimizer}] options"))
    if plugin.parallel is not None and cfg.parallel not in plugin.parallel:
        raise UserError(
            f"--optimizer {cfg.optimizer} does not work with --parallel {cfg.parallel}; use --parallel "
            + " or ".join(plugin.parallel)
        )
    return instance


def build_optimizer(
    model: Any, cfg: TrainConfig, device: Any, registry: Mapping[str, Callable[..., Any]] | None = None
) -> Any:
    """The optimizer ``cfg.optimizer`` names (from ``registry``, default: the plugins'), with its options from
    ``cfg``, over ``model``'s parameters on ``device`` (a ``torch.device``); ``UserError`` as
    :func:`optimizer_plugin` raises it."""
    return optimizer_plugin(cfg, registry).build(model, cfg, device)


def option_owners(
    registry: Mapping[str, type[OptimizerPlugin]] | None = None, taken: Collection[str] = ()
) -> dict[str, list[str]]:
    """Option field -> the optimizers that have it; ``UserError`` for a field that two unrelated ``Options``
    classes declare, or that is one of ``taken`` (the command's other flags): one flag cannot mean two
    things."""
    registry = optimizer_registry() if registry is None else registry
    owners: dict[str, list[str]] = {}
    origin: dict[str, type] = {}
    for name, plugin in registry.items():
        for f in dataclasses.fields(plugin.Options):
            declared = _declaring_class(plugin.Options, f.name)
            if f.name in taken or origin.setdefault(f.name, declared) is not declared:
                raise UserError(
                    f"optimizer {name!r}: its option {f.name!r} (--{_flag(f.name)}) is already a flag of "
                    "gpt2 train or of another optimizer; rename it (e.g. with the optimizer's name as prefix)"
                )
            owners.setdefault(f.name, []).append(name)
    return owners


def _declaring_class(cls: type, name: str) -> type:
    """The class in ``cls``'s bases that declares dataclass field ``name`` first."""
    for base in reversed(cls.__mro__):
        if name in getattr(base, "__annotations__", {}):
            return base
    return cls


def _flag(name: str) -> str:
    return name.replace("_", "-")
