"""The decoding loop: one thread owns the model and decodes every running sequence together.

vLLM's continuous batching with chunked prefill, on ``gpt2_serve.slot_cache.SlotCache``. Each step is one
forward pass over a packed row of tokens: the last token of every decoding sequence, then slices of
prompts still being read, as many as the step's token budget (``step_tokens``) leaves room for. A long
prompt thus joins over several steps while the running streams keep their pace (vLLM's scheduler: decode
first, prefill with the rest of the budget). The tokens of every sequence that needs one are then sampled
at once, with one host sync. A sequence holds a fixed slot of the cache from admission to its end; leaving
frees the slot without copying anything (``Slots``, the one owner of that bookkeeping).

Request handlers run on the event loop: they ``submit`` jobs and read each job's events from an asyncio
queue (the loop thread hands them over with ``call_soon_threadsafe``); ``cancel`` marks a job whose client
went away, and the loop drops it before its next step. Torch releases the GIL while it computes, so the
event loop keeps serving while a step runs. ``submit`` returns with the jobs already counted as waiting
(``stats()["waiting"]``) or running, so a response sent after it never races the count.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from gpt2_core.generation import sample_rows
from gpt2_core.model import GPT
from gpt2_core.sampling import SamplingConfig

from gpt2_serve.openmp import release_openmp_threads
from gpt2_serve.slot_cache import Chunk, SlotCache

log = logging.getLogger("gpt2_serve")

Finish = Literal["stop", "length", "cancelled", "error"]

STEP_TOKENS = 32
"""Default token budget of one step (decode tokens plus prompt chunk tokens); see ``Engine``. Chosen so
that on a 2-core CPU in fp32 a step with seven streams and a prompt chunk stays under twice a plain
decoding step (BENCHMARKS.md: 57-token chunks made it 2.1x)."""


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
    """Finished, or cancelled: its slot is freed before the next step."""
    generator: torch.Generator | None = field(default=None, repr=False)
    slot: int = -1
    """Its slot of the cache, -1 while waiting."""
    fed: int = 0
    """Prompt tokens in the cache so far; the job decodes once all are."""
    admitted: int = -1
    """Order of admission: prompts are read first come, first served."""
    followers: list[Job] = field(default_factory=list, repr=False)
    """Jobs of the same prompt (a request's ``n`` choices) that take a copy of this job's prefill."""

    @property
    def decoding(self) -> bool:
        return self.fed == len(self.prompt)

    def _send(self, event: Token | End) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Slots:
    """Which job holds which slot of the cache; a free slot is taken lowest first (so the decoding slots
    stay packed at the low end and a pass covers few padding rows); freeing costs no copy."""

    def __init__(self, cache: SlotCache) -> None:
        self.cache = cache
        self.jobs: list[Job | None] = [None] * cache.slots
        self._free = list(range(cache.slots))

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self.jobs) - len(self._free)

    def take(self, job: Job) -> None:
        job.slot = heapq.heappop(self._free)
        self.jobs[job.slot] = job

    def release(self, job: Job) -> None:
        self.cache.release(job.slot)
        self.jobs[job.slot] = None
        heapq.heappush(self._free, job.slot)
        job.slot = -1

    def held(self) -> list[Job]:
        return [job for job in self.jobs if job is not None]


class Engine:
    """The decoding loop over ``model``: at most ``max_batch`` running sequences, ``max_queue`` waiting.

    ``step_tokens`` caps the tokens of one forward pass while sequences are decoding (vLLM's
    ``max_num_batched_tokens``): every decoding sequence's one token first, prompt chunks in the rest; at
    least one prompt token per step goes in while a prompt waits, so a budget below ``max_batch`` + 1 slows
    prefill but never stops it. With nothing decoding, waiting prompts are read whole in one pass: there is
    no stream to keep pace for, and a burst of requests gets its first tokens together.
    """

    def __init__(
        self, model: GPT, max_batch: int = 8, max_queue: int = 64, step_tokens: int = STEP_TOKENS
    ) -> None:
        if step_tokens < 1:
            raise ValueError(f"step_tokens must be >= 1, got {step_tokens}")
        self.model = model.eval()
        p = next(model.parameters())
        self.device = p.device
        self.cache = SlotCache(model.config, max_batch, p.device, p.dtype)
        self.slots = Slots(self.cache)
        self.step_tokens = step_tokens
        self.max_queue = max_queue
        self.waiting: collections.deque[Job] = collections.deque()
        self._generator = torch.Generator(self.device)
        self._generator.seed()
        self._wake = threading.Condition()
        self._stopping = False
        self._admissions = 0
        self.tokens_generated = 0
        self._thread = threading.Thread(target=self._run, name="gpt2-serve-decoder", daemon=True)

    @property
    def max_batch(self) -> int:
        return self.cache.slots

    def start(self) -> None:
        """Start the decoding thread. Call it from the thread that loaded the model: its OpenMP threads are
        handed back first (``gpt2_serve.openmp``), so the decoding thread's steps run at full speed."""
        release_openmp_threads()
        self._thread.start()

    def stop(self) -> None:
        """End the loop after its current step; running and waiting jobs end as cancelled."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def stats(self) -> dict[str, int]:
        """Jobs holding a slot (running: reading their prompt or decoding), jobs waiting for one, the slots
        in use (equal to running between steps), tokens generated so far."""
        with self._wake:
            held = self.slots.held()
            return {
                "running": len(held),
                "prefilling": sum(not job.decoding for job in held),
                "waiting": len(self.waiting),
                "rows_in_use": self.slots.in_use,
                "max_batch": self.max_batch,
                "tokens_generated": self.tokens_generated,
            }

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs`` (all or none); QueueFull when the waiting queue has no room for them. On return
        they are counted in ``stats()["waiting"]`` until a slot takes them."""
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
                    self._leave()
                    while not (self._stopping or self.slots.in_use or self.waiting):
                        self._wake.wait()
                    if self._stopping:
                        break
                    self._admit()
                try:
                    self._step()
                except Exception:  # a failed step must not take the server down: its jobs end with an error
                    with self._wake:
                        held = self.slots.held()
                        log.exception("decoding step failed; ending %d running requests", len(held))
                        for job in held:
                            job._send(End(job.index, "error"))
                            job.done = True
                        self._leave()
        with self._wake:
            for job in self.slots.held() + list(self.waiting):
                job._send(End(job.index, "cancelled"))
                job.done = True
            self._leave()
            self.waiting.clear()

    def _admit(self) -> None:
        """Give free slots to waiting jobs, in order. A job whose prompt equals the one admitted just before
        it (the ``n`` choices of a request) follows that job: it reads no prompt, and takes a copy of the
        leader's cache when the leader's prefill is done."""
        leader: Job | None = None
        while self.waiting and self.slots.free:
            job = self.waiting.popleft()
            self.slots.take(job)
            job.admitted, self._admissions = self._admissions, self._admissions + 1
            if leader is not None and job.prompt == leader.prompt:
                leader.followers.append(job)
                job.fed = -1  # neither prefilling nor decoding until its leader is
            else:
                leader = job

    def _leave(self) -> None:
        """Free the slots of finished and cancelled jobs; a follower of a cancelled leader reads its own prompt."""
        for job in self.slots.held():
            if job.done:
                for follower in job.followers:
                    if not follower.done:
                        follower.fed = 0
                job.followers = []
                self.slots.release(job)

    def _plan(self) -> tuple[list[Job], list[tuple[Job, Chunk]]]:
        """This step's decoding jobs and prompt chunks, within the token budget (decoding first)."""
        held = [job for job in self.slots.held() if not job.done]
        decode = [job for job in held if job.decoding]
        # The budget protects running streams' pace; with none running, prompts are read whole at once.
        budget = self.step_tokens - len(decode) if decode else sum(len(job.prompt) for job in held)
        chunks = []
        for job in sorted((j for j in held if 0 <= j.fed < len(j.prompt)), key=lambda j: j.admitted):
            count = min(len(job.prompt) - job.fed, max(budget, 0 if chunks else 1))
            if count <= 0:
                break
            chunks.append((job, Chunk(job.slot, job.fed, count)))
            budget -= count
        return decode, chunks

    def _step(self) -> None:
        """One forward pass over this step's tokens, then one batched sample for every job that needs one."""
        decode, chunks = self._plan()
        if not decode and not chunks:
            return
        N = self.cache.plan([job.slot for job in decode], [c for _, c in chunks])
        lo, hi = self.cache.decode_span
        ids = [0] * (hi - lo)
        for job in decode:
            ids[job.slot - lo] = job.last
        for job, c in chunks:
            ids += job.prompt[c.start : c.start + c.count]
        assert len(ids) == N
        x = self.model.hidden(torch.tensor([ids], dtype=torch.long, device=self.device), self.cache)
        # Which packed positions the head scores: each decode token, and the last prompt token of each
        # finished prefill (once per job that samples from it: the leader and its followers).
        rows, sampled = [job.slot - lo for job in decode], list(decode)
        at = hi - lo
        for job, c in chunks:
            at += c.count
            job.fed += c.count
            if job.decoding:
                for follower in job.followers:
                    if not follower.done:
                        self.cache.copy_slot(job.slot, follower.slot)
                        follower.fed = len(follower.prompt)
                for j in [job, *job.followers]:
                    if not j.done:
                        rows.append(at - 1)
                        sampled.append(j)
                job.followers = []
        if not sampled:
            return
        logits = self.model.lm_head(x[0, rows])
        picked = sample_rows(
            logits,
            self.model.config.vocab_size,
            [job.sampling for job in sampled],
            [job.generator for job in sampled],
            self._generator,
        ).tolist()  # the step's one host sync
        with self._wake:
            for job, token in zip(sampled, picked):
                if not job.done:
                    self._emit(job, token)

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
