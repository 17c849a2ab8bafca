"""The decoding loop: sequences batched step by step give the tokens each gives alone; they join while
others run, stop at stop ids and max_tokens, and leave (cancelled) without leaking cache rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from gpt2_core.generation import generate_ids
from gpt2_core.model import GPT
from gpt2_core.sampling import SamplingConfig
from gpt2_serve.engine import End, Engine, Job, QueueFull, Token
from waiting import wait_until_async

GREEDY = SamplingConfig(temperature=0, stop_at_eot=False)


@pytest.fixture(scope="module")
def model(make_chat_model) -> GPT:
    return make_chat_model()


def alone(model: GPT, prompt: list[int], n: int) -> list[int]:
    cfg = SamplingConfig(max_new_tokens=n, temperature=0, stop_at_eot=False)
    return [int(t[0]) for t in generate_ids(model, prompt, cfg)]


async def drain(job: Job) -> tuple[list[int], str]:
    tokens = []
    while True:
        event = await job.events.get()
        if isinstance(event, End):
            return tokens, event.reason
        assert isinstance(event, Token)
        tokens.append(event.id)


def rows_free(engine: Engine) -> Callable[[], dict[str, int] | bool]:
    """A probe: the engine's stats once nothing runs, waits or holds a row, else False."""

    def probe() -> dict[str, int] | bool:
        stats = engine.stats()
        return stats["running"] == stats["waiting"] == stats["rows_in_use"] == 0 and stats

    return probe


def job(prompt: list[int], max_tokens: int, stop_ids: frozenset[int] = frozenset()) -> Job:
    return Job(prompt, max_tokens, GREEDY, stop_ids, asyncio.Queue(), asyncio.get_running_loop())


def test_batched_sequences_match_decoding_alone(model: GPT) -> None:
    prompts = [list(range(100, 103)), list(range(200, 230)), [9], list(range(300, 311))]
    lengths = [20, 8, 25, 12]

    async def main() -> list[tuple[list[int], str]]:
        engine = Engine(model, max_batch=3, max_queue=8)  # 4 jobs, 3 rows: the last waits for a free row
        engine.start()
        try:
            jobs = [job(p, n) for p, n in zip(prompts[:2], lengths[:2])]
            engine.submit(jobs)
            first = await jobs[0].events.get()  # the others join while these two run
            later = [job(p, n) for p, n in zip(prompts[2:], lengths[2:])]
            engine.submit(later)
            results = await asyncio.gather(*(drain(j) for j in jobs + later))
            results[0] = ([first.id, *results[0][0]], results[0][1])
            # Each job's end is sent before the loop frees its row: wait for that, not for a while.
            await wait_until_async(rows_free(engine), "the rows to be free")
            return results
        finally:
            engine.stop()

    results = asyncio.run(main())
    for (tokens, reason), p, n in zip(results, prompts, lengths):
        assert reason == "length" and tokens == alone(model, p, n)


def test_stop_ids_queue_limit_and_cancel(model: GPT) -> None:
    prompt = [5, 6, 7]
    expected = alone(model, prompt, 6)

    async def main() -> None:
        engine = Engine(model, max_batch=1, max_queue=2)
        engine.start()
        try:
            stopped = job(prompt, 30, stop_ids=frozenset({expected[3]}))
            engine.submit([stopped])
            tokens, reason = await drain(stopped)
            assert reason == "stop" and tokens == expected[: expected.index(expected[3])]

            running, *waiting = [job(prompt, 60) for _ in range(3)]
            engine.submit([running])
            await running.events.get()
            engine.submit(waiting)  # the one row is taken: both wait
            with pytest.raises(QueueFull):
                engine.submit([job(prompt, 5)])
            engine.cancel([running, *waiting])  # clients gone: the row and the queue free at once
            assert engine.stats()["waiting"] == 0
            again = job(prompt, 6)
            engine.submit([again])
            assert (await drain(again)) == (expected, "length")
            await wait_until_async(rows_free(engine), "the rows to be free")
        finally:
            engine.stop()

    asyncio.run(main())


def run_jobs(model: GPT, make: Callable[[], list[list[Job]]], **options: object) -> list[list[int]]:
    """Submit each batch of jobs ``make()`` builds once the previous batch has its first token; every
    job's tokens, with a deadline."""

    async def main() -> list[list[int]]:
        batches = make()
        engine = Engine(model, **options)  # type: ignore[arg-type]
        engine.start()
        try:
            firsts = []
            for batch in batches:
                engine.submit(batch)
                firsts.append(await batch[0].events.get())  # the next batch joins while this one runs
            results = await asyncio.wait_for(
                asyncio.gather(*(drain(j) for batch in batches for j in batch)), timeout=120
            )
            out = [tokens for tokens, _ in results]
            k = 0
            for batch, first in zip(batches, firsts):
                out[k] = [first.id, *out[k]]
                k += len(batch)
            return out
        finally:
            engine.stop()

    return asyncio.run(main())


def test_chunked_prefill_gives_the_whole_prefill_tokens(model: GPT) -> None:
    assert model.lm_head.weight.dtype == torch.float32  # fp32: no greedy tie may depend on rounding
    long, short = list(range(400, 450)), [11, 12]

    def tokens(step_tokens: int) -> list[list[int]]:
        def jobs() -> list[list[Job]]:
            return [[job(short, 12)], [job(long, 10), job(list(range(60, 80)), 9)]]

        return run_jobs(model, jobs, max_batch=4, step_tokens=step_tokens)

    whole = tokens(1000)
    assert whole == [alone(model, short, 12), alone(model, long, 10), alone(model, list(range(60, 80)), 9)]
    for step_tokens in (1, 3, 7):  # prompts read in slices of 1..6 tokens beside the running stream
        assert tokens(step_tokens) == whole, step_tokens


def test_a_requests_tokens_do_not_depend_on_what_shares_the_batch(model: GPT) -> None:
    prompt = list(range(30, 45))
    seeded = SamplingConfig(temperature=0.8, top_k=20, top_p=0.9, seed=7)
    greedy_alone = alone(model, prompt, 15)
    # `gpt2 generate`'s sample with the same seed: the engine's draws come from the request's own generator.
    seeded_alone = [
        int(t[0]) for t in generate_ids(model, prompt, replace(seeded, max_new_tokens=15, stop_at_eot=False))
    ]

    def jobs() -> list[list[Job]]:
        loop = asyncio.get_running_loop()
        others = [
            Job([5, 6, 7], 30, SamplingConfig(temperature=1.2, top_k=0), frozenset(), asyncio.Queue(), loop),
            Job(list(range(200, 240)), 20, GREEDY, frozenset(), asyncio.Queue(), loop),
            Job(
                [1],
                25,
                SamplingConfig(temperature=0.5, top_p=0.5, seed=3),
                frozenset(),
                asyncio.Queue(),
                loop,
            ),
        ]
        mine = [job(prompt, 15), Job(prompt, 15, seeded, frozenset(), asyncio.Queue(), loop)]
        return [others[:1], mine, others[1:]]

    out = run_jobs(model, jobs, max_batch=6, step_tokens=16)
    assert out[1] == greedy_alone
    assert out[2] == seeded_alone
