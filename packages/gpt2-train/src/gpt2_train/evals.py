"""What the trainer measures besides the training loss, each a component that says when it is due: val loss
(``Validator``), HellaSwag accuracy (``HellaSwagEvaluator``; the benchmark itself is hellaswag.py) and text
samples (``Sampler``)."""

from __future__ import annotations

import torch
from gpt2_core.loss import IGNORE_INDEX
from gpt2_core.model import GPT
from gpt2_data.batch_source import BatchSource

from gpt2_train.distributed import DistEnv, sum_over_ranks
from gpt2_train.precision import autocast


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
    source.reset()
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
    from gpt2_core.generation import generate
    from gpt2_core.sampling import SamplingConfig
    from gpt2_core.tokenizer import Tokenizer

    tok = Tokenizer.for_config(model.config)
    cfg = SamplingConfig(max_new_tokens=max_tokens, seed=seed, top_k=50, temperature=0.8)
    return prompt + generate(model, tok, prompt, cfg)[0]


def every(n: int, step: int, last: bool) -> bool:
    """Due on each multiple of ``n`` and at the last step; never when ``n`` is 0."""
    return bool(n) and (step % n == 0 or last)


class Validator:
    """Val loss every ``every`` steps and at the last, over the same ``batches`` micro-batches of ``source``."""

    def __init__(
        self,
        source: BatchSource | None,
        batches: int,
        every_steps: int,
        env: DistEnv,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.source, self.batches, self.every_steps = source, batches, every_steps
        self.env, self.autocast_dtype = env, autocast_dtype

    def should_validate(self, step: int, last: bool) -> bool:
        return self.source is not None and every(self.every_steps, step, last)

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        assert self.source is not None
        return {"val/loss": val_loss(model, self.source, self.batches, self.env, self.autocast_dtype)}


class HellaSwagEvaluator:
    """HellaSwag acc and acc_norm every ``every`` steps and at the last (examples read on first use)."""

    def __init__(
        self, file: str | None, limit: int, every_steps: int, env: DistEnv, autocast_dtype: torch.dtype | None
    ) -> None:
        self.file, self.limit, self.every_steps = file, limit, every_steps
        self.env, self.autocast_dtype = env, autocast_dtype
        self._examples: list | None = None

    def should_evaluate(self, step: int, last: bool) -> bool:
        return every(self.every_steps, step, last)

    def evaluate(self, model: GPT) -> dict[str, float]:
        from gpt2_train import hellaswag

        if self._examples is None:
            self._examples = hellaswag.load_examples(self.file, self.limit)
        with autocast(self.env.device, self.autocast_dtype):
            res = hellaswag.evaluate(model, self._examples, self.env)
        return {"eval/hellaswag_acc_norm": res.acc_norm, "eval/hellaswag_acc": res.acc}


class Sampler:
    """A seeded text sample from ``prompt`` every ``every`` steps and at the last, on rank 0.

    With a ``sharded`` (FSDP) model every rank takes part: a sample's forward passes depend on the tokens drawn,
    and a sharded forward is a collective of all ranks, so the ranks gather the whole model to rank 0 instead,
    which samples from a copy in CPU memory.
    """

    def __init__(
        self, prompt: str, tokens: int, every_steps: int, env: DistEnv, sharded: bool = False
    ) -> None:
        self.prompt, self.tokens, self.every_steps, self.env = prompt, tokens, every_steps, env
        self.sharded = sharded
        self._copy: GPT | None = None

    def should_sample(self, step: int, last: bool) -> bool:
        return (self.env.is_main or self.sharded) and every(self.every_steps, step, last)

    def sample(self, model: GPT) -> str | None:
        """The sample (None on ranks other than 0)."""
        if self.sharded:
            from gpt2_core.weights import load_weights

            from gpt2_train.parallel import full_state_dict

            state = full_state_dict(model, self.env)
            if not self.env.is_main:
                return None
            if self._copy is None:
                self._copy = GPT(model.config)
            load_weights(self._copy, state, "the gathered model")
            model = self._copy
        return sample_text(model, self.prompt, self.tokens)
