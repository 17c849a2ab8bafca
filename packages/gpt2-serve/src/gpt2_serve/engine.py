"""The decoding loop: one thread owns the model and decodes every running sequence together.

vLLM's continuous batching, on ``gpt2_core.model.SlotKVCache``: each step feeds the last token of every
running sequence as one batch (B, 1) and samples the next one per row. Between steps, waiting sequences are
prefilled and join (each in a free row of the cache), and finished or cancelled ones leave and free their
row at once, so a short request never waits for a long one to end.

Request handlers run on the event loop: they ``submit`` jobs and read each job's events from an asyncio
queue (the loop thread hands them over with ``call_soon_threadsafe``); ``cancel`` marks a job whose client
went away, and the loop drops it before its next step. Torch releases the GIL while it computes, so the
event loop keeps serving while a step runs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from gpt2_core.generate import sample_next
from gpt2_core.model import GPT, KVCache, SlotKVCache
from gpt2_core.sampling import SamplingConfig

log = logging.getLogger("gpt2_serve")

Finish = Literal["stop", "length", "cancelled", "error"]


class QueueFull(Exception):
    """More jobs are waiting than the engine accepts; the client should retry later (HTTP 503)."""


@dataclass(frozen=True)
class Token:
    """A new token of job ``index``."""

    index: int
    id: int


@dataclass(frozen=True)
class End:
    """Job ``index`` is over: ``stop`` (a stop id), ``length`` (max_tokens), ``cancelled`` or ``error``."""

    index: int
    reason: Finish


@dataclass(eq=False)
class Job:
    """One sequence to generate: a prompt, how to sample, when to stop, and where its events go."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingConfig
    stop_ids: frozenset[int]
    events: asyncio.Queue[Token | End]
    loop: asyncio.AbstractEventLoop
    index: int = 0
    """The job's place in its request (the choice index)."""
    generated: int = 0
    last: int = -1
    done: bool = False
    """Finished, or cancelled: its row is freed before the next step."""
    generator: torch.Generator | None = field(default=None, repr=False)

    def _send(self, event: Token | End) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Engine:
    """The decoding loop over ``model``: at most ``max_batch`` running sequences, ``max_queue`` waiting."""

    def __init__(self, model: GPT, max_batch: int = 8, max_queue: int = 64) -> None:
        self.model = model.eval()
        p = next(model.parameters())
        self.device = p.device
        self.cache = SlotKVCache(model.config, max_batch, p.device, p.dtype)
        self._prefill = KVCache(model.config, 1, p.device, p.dtype)
        self.max_queue = max_queue
        self.running: list[Job] = []  # running[row] decodes in row ``row`` of the cache
        self.waiting: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self.tokens_generated = 0
        self._thread = threading.Thread(target=self._run, name="gpt2-serve-decoder", daemon=True)

    @property
    def max_batch(self) -> int:
        return self.cache.slots

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the loop after its current step; running and waiting jobs end as cancelled."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def stats(self) -> dict[str, int]:
        """Running and waiting jobs, the cache rows in use (equal to running between steps), tokens so far."""
        with self._wake:
            return {
                "running": len(self.running),
                "waiting": len(self.waiting),
                "rows_in_use": self.cache.batch,
                "max_batch": self.max_batch,
                "tokens_generated": self.tokens_generated,
            }

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs`` (all or none); QueueFull when the waiting queue has no room for them."""
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting already")
            for job in jobs:
                if job.sampling.seed is not None:
                    job.generator = torch.Generator(self.device).manual_seed(job.sampling.seed)
            self.waiting.extend(jobs)
            self._wake.notify()

    def cancel(self, jobs: Sequence[Job]) -> None:
        """Stop ``jobs`` (their client left, or a stop string ended them): they leave before the next step."""
        with self._wake:
            for job in jobs:
                job.done = True
            self.waiting = collections.deque(job for job in self.waiting if not job.done)
            self._wake.notify()

    # --- the loop thread ---

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not (self._stopping or self.running or self.waiting):
                        self._wake.wait()
                    if self._stopping:
                        break
                    admitted = []
                    while self.waiting and self.cache.batch + len(admitted) < self.max_batch:
                        admitted.append(self.waiting.popleft())
                try:
                    self._admit(admitted)
                    self._leave()
                    if self.running:
                        self._step()
                        self._leave()
                except Exception:  # a failed step must not take the server down: its jobs end with an error
                    log.exception("decoding step failed; ending %d running requests", len(self.running))
                    for job in self.running + [j for j in admitted if j not in self.running]:
                        job._send(End(job.index, "error"))
                    self.running.clear()
                    self.cache.lengths.clear()
        with self._wake:
            for job in self.running + list(self.waiting):
                job._send(End(job.index, "cancelled"))
            self.running.clear()
            self.waiting.clear()
            self.cache.lengths.clear()

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill each job's prompt into a free row and sample its first token (jobs of one prompt share
        one prefill: the ``n`` choices of a request)."""
        prefilled: list[int] | None = None
        for job in jobs:
            if job.done:
                continue
            if job.prompt != prefilled:
                self._prefill.truncate(0)
                logits, _ = self.model(
                    torch.tensor([job.prompt], dtype=torch.long, device=self.device), kv_cache=self._prefill
                )
                prefilled = job.prompt
            self.cache.add(self._prefill)
            self.running.append(job)
            self._emit(job, self._sample(logits[:, -1], job))

    def _step(self) -> None:
        """Feed every running job its last token, as one batch, and sample each one's next token."""
        last = torch.tensor([[job.last] for job in self.running], dtype=torch.long, device=self.device)
        logits, _ = self.model(last, kv_cache=self.cache)
        self.cache.advance(1)
        for row, job in enumerate(self.running):
            self._emit(job, self._sample(logits[row : row + 1, -1], job))

    def _sample(self, logits: torch.Tensor, job: Job) -> int:
        return int(sample_next(logits, job.sampling, self.model.config.vocab_size, job.generator)[0])

    def _emit(self, job: Job, token: int) -> None:
        job.last = token
        job.generated += 1
        self.tokens_generated += 1
        if token in job.stop_ids:
            job.done = True
            job._send(End(job.index, "stop"))
            return
        job._send(Token(job.index, token))
        if job.generated >= job.max_tokens:
            job.done = True
            job._send(End(job.index, "length"))

    def _leave(self) -> None:
        """Free the rows of finished and cancelled jobs."""
        for row in reversed(range(len(self.running))):
            job = self.running[row]
            if not job.done:
                continue
            self.cache.remove(row)
            self.running[row] = self.running[-1]
            self.running.pop()
