"""The shape of each step's micro-batches, as a function of the step: the batch-size and sequence-length warm-ups.

Both are off by default; a step then trains on ``--micro-batch`` sequences of ``--seq-len`` tokens per
micro-batch, as always.

- **Batch-size warm-up** (``--batch-warmup-steps N``): a micro-batch's sequences grow linearly from
  ``--batch-warmup-start`` of ``--micro-batch`` (rounded up) to all of them over the first N steps, so early steps
  train on fewer tokens. GPT-3 (Brown et al. 2020, appendix B) grew its batch linearly over its first 4-12B
  tokens; the modded-nanogpt speedrun schedules its batch too.
- **Sequence-length warm-up** (``--seq-len-warmup-steps N``): sequences start at ``--seq-len-start`` tokens and
  double at equal intervals over the first N steps (``--seq-len`` itself from step N on), the micro-batch holding
  as many more sequences as they are shorter, so a step's tokens stay the same (Li et al. 2022, "The
  Stability-Efficiency Dilemma": sequence-length warm-up).

Under ``--compile`` a changed shape recompiles the model once with dynamic sizes, which it then keeps (torch's
automatic dynamic shapes); what that costs a GPU run after the warm-up is not measured here. ``--epochs`` counts
full-size steps, so a run with a batch-size warm-up trains on fewer tokens than its epochs hold.

A pure function of the step and the config: every rank, a resumed run and a ``RUN/stable`` extension take the
same shapes at the same steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt2_train.config import TrainConfig


@dataclass(frozen=True)
class BatchShape:
    """One micro-batch's shape: ``micro_batch`` sequences of ``seq_len`` tokens (each rank, each micro-batch)."""

    micro_batch: int
    seq_len: int


def shape_at(step: int, cfg: TrainConfig) -> BatchShape:
    """The micro-batch shape of step ``step`` (0-based) under ``cfg``'s warm-ups (``cfg``'s own after them)."""
    seq_len, micro_batch = cfg.seq_len, cfg.micro_batch
    if step < cfg.seq_len_warmup_steps:
        lengths = int(math.log2(cfg.seq_len // cfg.seq_len_start))  # the shorter lengths, each doubling
        seq_len = cfg.seq_len_start << (step * lengths // cfg.seq_len_warmup_steps)
        micro_batch = micro_batch * cfg.seq_len // seq_len
    if step < cfg.batch_warmup_steps:
        start = cfg.batch_warmup_start
        fraction = start + (1 - start) * step / cfg.batch_warmup_steps
        micro_batch = math.ceil(micro_batch * fraction)
    return BatchShape(micro_batch, seq_len)


def warms_up(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` changes the batch shape at all."""
    return cfg.batch_warmup_steps > 0 or cfg.seq_len_warmup_steps > 0


__all__ = ["BatchShape", "shape_at", "warms_up"]
