"""The optimizers our plugins build (``gpt2_train.optimizers`` declares them and their options) and the
learning-rate schedules.

The optimizer is one object to the trainer, the step function and the checkpointer: a
``torch.optim.Optimizer``, or :class:`Optimizers` around several. The step function sets each parameter
group's ``lr`` to the schedule's value times the group's ``lr_scale`` (default 1), so a group can run at its
own peak learning rate (Muon's matrices at ``--muon-lr``) under the one schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from gpt2_core.errors import UserError

if TYPE_CHECKING:
    from gpt2_train.config import TrainConfig
    from gpt2_train.optimizers import AdamWOptions, MuonOptions


def _adamw(
    params: list[torch.nn.Parameter], lr: float, options: AdamWOptions, device: torch.device
) -> torch.optim.AdamW:
    # Fused AdamW on CUDA (one kernel for all parameters, and it can skip a non-finite step on the device)
    # and on CPU (one vectorised pass per parameter, where torch's default is a loop of elementwise ops;
    # BENCHMARKS.md has the figure).
    fused = device.type in ("cuda", "cpu")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": options.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    betas = (options.beta1, options.beta2)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=options.eps, fused=fused or None)


def build_adamw(
    model: torch.nn.Module, lr: float, options: AdamWOptions, device: torch.device
) -> torch.optim.AdamW:
    """``--optimizer adamw``: AdamW over ``model``'s parameters at peak ``lr``, weight decay on matrices and
    embeddings, none on biases and LayerNorms (build-nanogpt's groups), fused on CPU and CUDA."""
    return _adamw([p for p in model.parameters() if p.requires_grad], lr, options, device)


def muon_split(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """``model``'s trainable parameters as (Muon's, AdamW's): the 2-D weight matrices inside the transformer
    blocks (``transformer.h.*``: attention's fused QKV and output projections, the MLP's two) go to Muon;
    the token and position embeddings, the head (tied: the token embedding; untied: a matrix outside the
    blocks, weight-decayed as AdamW's other matrices), LayerNorms and biases to AdamW. This is
    modded-nanogpt's and nanochat's split (both untie the head and give it to AdamW); their QKV matrices are
    separate, ours is GPT-2's fused ``c_attn``, orthogonalised as one (3C, C) matrix (torch.optim.Muon takes
    2-D parameters only)."""
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (muon if p.dim() == 2 and ".h." in f".{name}" else adamw).append(p)
    return muon, adamw


class Optimizers:
    """Several torch optimizers stepped as one, over disjoint parameters: what ``--optimizer muon`` gives the
    trainer. It has the parts of ``torch.optim.Optimizer`` the trainer, step function and checkpointer use:
    ``param_groups`` (every optimizer's, in order), ``step``, ``zero_grad``, ``state_dict`` /
    ``load_state_dict`` (a list of the optimizers' own) and ``register_step_post_hook`` (runs after all
    of them stepped)."""

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)
        self.defaults: dict[str, Any] = {}
        self._post_hooks: list[Callable[..., Any]] = []

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @torch.no_grad()
    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()
        for hook in self._post_hooks:
            hook(self, (), {})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> None:
        self._post_hooks.append(hook)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("optimizers")
        if saved is None or len(saved) != len(self.optimizers):
            raise UserError("the checkpoint's optimizer state is not this optimizer's (another --optimizer?)")
        for opt, s in zip(self.optimizers, saved, strict=True):
            opt.load_state_dict(s)


def torch_optimizers(optimizer: torch.optim.Optimizer | Optimizers) -> list[torch.optim.Optimizer]:
    """The torch optimizers ``optimizer`` steps: itself, or those of an ``Optimizers`` (DCP's state-dict
    functions take such a list: one state dict keyed by parameter name, each optimizer's groups in turn)."""
    return optimizer.optimizers if isinstance(optimizer, Optimizers) else [optimizer]


def build_muon(
    model: torch.nn.Module, cfg: TrainConfig, options: MuonOptions, device: torch.device
) -> Optimizers:
    """``--optimizer muon``: ``torch.optim.Muon`` on the blocks' matrices (:func:`muon_split`) at ``--muon-lr``,
    ``--muon-momentum`` (Nesterov; the plugin's ``before_step`` warms it up), ``--muon-weight-decay`` (cautious
    with ``--muon-cautious-weight-decay``) and ``--muon-adjust-lr``, its Newton-Schulz iteration in the run's
    precision (bf16, or fp32 in an fp32 run: ``gpt2_train.muon``) and split over the ranks when there are
    several (FSDP's shards, or DDP's whole matrices); AdamW, as ``--optimizer adamw`` sets it up, on the rest
    at ``--lr``."""
    import torch.distributed as dist

    from gpt2_train.muon import Muon
    from gpt2_train.precision import autocast_dtype

    muon_params, adamw_params = muon_split(model)
    muon = Muon(
        [{"params": muon_params, "lr_scale": options.muon_lr / cfg.lr}],
        lr=options.muon_lr,
        momentum=options.muon_momentum,
        nesterov=True,
        weight_decay=options.muon_weight_decay,
        cautious_weight_decay=options.muon_cautious_weight_decay,
        adjust_lr_fn=options.muon_adjust_lr,
        ns_dtype=autocast_dtype(cfg.precision, device) or torch.float32,
        process_group=dist.group.WORLD if dist.is_initialized() and dist.get_world_size() > 1 else None,
    )
    return Optimizers([muon, _adamw(adamw_params, cfg.lr, options, device)])


# --- learning-rate schedules --------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate (``--lr``'s scale) for optimizer step ``step`` (0-based), by ``cfg.lr_schedule``.

    All three warm up linearly from 0 over ``warmup_steps``, then:

    - ``cosine``: cosine decay to ``lr * min_lr_ratio`` at ``decay_steps`` (0: the last step), then that floor
      (build-nanogpt's schedule);
    - ``wsd``: warm-up, stable, decay (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond
      Fixed Training Durations", arXiv:2405.18392): ``lr`` until the last ``decay_fraction`` of the steps,
      then down to ``lr * min_lr_ratio`` at ``total_steps``, in the ``decay_shape`` linear or ``1-sqrt``
      (``1 - sqrt(progress)``, which the paper finds better than linear);
    - ``constant``: ``lr`` after the warm-up.
    """
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "wsd":
        start = wsd_decay_start(cfg, total_steps)
        if step < start:
            return cfg.lr
        progress = min(1.0, (step - start) / max(1, total_steps - start))
        left = 1.0 - progress if cfg.decay_shape == "linear" else 1.0 - math.sqrt(progress)
        return min_lr + left * (cfg.lr - min_lr)
    horizon = cfg.decay_steps or total_steps
    if step >= horizon:
        return min_lr
    progress = (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def wsd_decay_start(cfg: TrainConfig, total_steps: int) -> int:
    """The first step of a WSD run's decay: the stable phase is steps ``[warmup_steps, wsd_decay_start)``.

    The checkpoint taken after that many steps is the run's ``stable`` one, from which ``--resume`` with a
    larger ``--max-steps`` trains longer exactly as a run planned that long would have.
    """
    return max(cfg.warmup_steps, total_steps - round(cfg.decay_fraction * total_steps))


def schedule_summary(cfg: TrainConfig, total_steps: int) -> str:
    """The optimizer and schedule in a few words, for the run's start line (a preset may change both)."""
    where = ""
    if cfg.lr_schedule == "wsd":
        where = f", decay from step {wsd_decay_start(cfg, total_steps)}"
    return f"optimizer {cfg.optimizer}, lr {cfg.lr:g} {cfg.lr_schedule} (warm-up {cfg.warmup_steps} steps{where})"


def schedule_warning(cfg: TrainConfig, total_steps: int) -> str | None:
    """Why the schedule cannot run as planned in ``total_steps`` steps (all of them warm-up, so the peak
    ``--lr`` is never reached and a WSD run writes no ``stable`` checkpoint), or None when it can."""
    if cfg.warmup_steps < total_steps:
        return None
    stable = "; a wsd run writes no RUN_DIR/stable checkpoint" if cfg.lr_schedule == "wsd" else ""
    return (
        f"--warmup-steps {cfg.warmup_steps} >= the run's {total_steps} steps: the whole run is warm-up, its "
        f"learning rate never reaches --lr{stable} (give more --max-steps or fewer --warmup-steps)"
    )
