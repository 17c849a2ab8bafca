"""The skeleton every training command runs, written once: ``gpt2 train`` (``gpt2_train.pretrain.train``) and
``gpt2 sft`` (``gpt2_sft.sft.run_sft``) differ only in how they build the model and the batch sources.

Each step of a run has one owner here: this function joins the process group and leaves it, seeds, runs the
checks (``gpt2_train.trainer.preflight``) once, before any data is prepared, and hands the results to the
``Trainer``, which builds the rest (torchtitan's ``train.py`` gives its trainer the parts the same way).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from gpt2_core.model import GPT
from gpt2_data.batch_source import BatchSource

from gpt2_train.config import TrainConfig
from gpt2_train.distributed import DistEnv, setup_distributed, teardown_distributed
from gpt2_train.trainer import Trainer, TrainResult, preflight

ModelBuilder = Callable[[TrainConfig], tuple[GPT, TrainConfig]]
"""``build_model(cfg) -> (model, cfg)``: the model to train, and the config with what the model settles
(SFT's ``--seq-len 0``: the model's context window)."""
DataBuilder = Callable[[TrainConfig, DistEnv, GPT], tuple[TrainConfig, BatchSource, BatchSource | None]]
"""``build_data(cfg, env, model) -> (cfg, train_source, val_source)``: this rank's batch sources (val None:
no val loss), and the config with what the data settles (SFT: no val loss without held-out examples)."""


def run_training(cfg: TrainConfig, build_model: ModelBuilder, build_data: DataBuilder) -> TrainResult:
    """Train ``cfg`` (under torchrun: this rank's share): join the process group (a group of one for FSDP in a
    single process), build the model with ``torch.manual_seed(cfg.seed)`` (the same initial weights on every
    rank), check the run, build the data, train from ``--seed`` again (the run's RNG: dropout), and leave
    the process group, whatever happened. ``UserError`` from the checks, before any data is prepared."""
    env = setup_distributed(cfg.device, group_of_one=cfg.parallel == "fsdp")
    try:
        torch.manual_seed(cfg.seed)
        model, cfg = build_model(cfg)
        grad_accum = preflight(cfg, model.config.block_size, env.world_size)
        cfg, train_source, val_source = build_data(cfg, env, model)
        torch.manual_seed(cfg.seed)
        trainer = Trainer(
            cfg,
            model=model,
            train_source=train_source,
            val_source=val_source,
            env=env,
            grad_accum=grad_accum,
        )
        return trainer.fit()
    finally:
        teardown_distributed(env)
