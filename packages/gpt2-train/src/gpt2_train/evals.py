"""What the trainer measures besides the training loss: val loss and text samples (HellaSwag: hellaswag.py)."""

from __future__ import annotations

import torch
from gpt2_core.model import GPT

from gpt2_train.distributed import DistEnv, sum_over_ranks
from gpt2_train.precision import autocast
from gpt2_train.step import IGNORE_INDEX, BatchSource


@torch.no_grad()
def val_loss(
    model: torch.nn.Module,
    source: BatchSource,
    batches: int,
    env: DistEnv,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Loss per counted target over the first ``batches`` micro-batches of ``source`` (reset first: the
    same ones each time) on every rank, each rank reading its own part of the val stream.

    The total NLL over the total count of targets that are not -100, like the training loss (see
    ``gpt2_train.step``), not a mean of batch means; NaN when no batch holds a counted target.
    """
    reset = getattr(source, "reset", None)
    if reset is not None:
        reset()
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=env.device)  # (summed NLL, counted targets)
    try:
        for _ in range(batches):
            x, y = source.next_batch()
            count = int((y != IGNORE_INDEX).sum())
            with autocast(env.device, autocast_dtype):
                _, loss = model(x.to(env.device), y.to(env.device))
            totals[0] += loss.float() * count
            totals[1] += count
    finally:
        model.train(was_training)
    nll, count = sum_over_ranks(env, totals).tolist()
    return nll / count if count else float("nan")


def sample_text(model: GPT, prompt: str, max_tokens: int, seed: int = 0) -> str:
    """A seeded sample from ``prompt`` (its own generator: the training RNG is untouched)."""
    from gpt2_core.generate import generate
    from gpt2_core.sampling import SamplingConfig
    from gpt2_core.tokenizer import Tokenizer

    tok = Tokenizer.for_config(model.config)
    cfg = SamplingConfig(max_new_tokens=max_tokens, seed=seed, top_k=50, temperature=0.8)
    return prompt + generate(model, tok, prompt, cfg)[0]
