"""The loading thread's OpenMP pool is handed back when the engine starts, and torch computes on after it."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from gpt2_core.model import GPT
from gpt2_serve import engine as engine_module
from gpt2_serve.openmp import loaded_libgomp, release_openmp_threads
from waiting import wait_until


def threads_of_this_process() -> int:
    return len(os.listdir("/proc/self/task"))


def test_a_released_pool_ends_its_threads_and_is_remade_when_needed() -> None:
    if loaded_libgomp() is None:
        assert not release_openmp_threads()  # nothing to do without libgomp
        pytest.skip("this torch does not run on GNU OpenMP")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a pool of one worker beside this thread, whatever the suite's setting
    try:
        big = torch.ones(4_000_000)
        assert float(big.sum()) == 4_000_000
        pooled = threads_of_this_process()
        assert release_openmp_threads()
        wait_until(lambda: threads_of_this_process() < pooled, "the pool's worker thread to end")
        assert float((big * 2).sum()) == 8_000_000  # computing again re-makes the pool
    finally:
        torch.set_num_threads(before)


def test_the_engine_hands_back_the_starting_threads_pool_before_decoding(
    make_chat_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    model: GPT = make_chat_model()
    calls: list[tuple[threading.Thread, bool]] = []
    engine = engine_module.Engine(model, max_batch=2)
    monkeypatch.setattr(
        engine_module,
        "release_openmp_threads",
        lambda: calls.append((threading.current_thread(), engine._thread.is_alive())) or True,
    )
    engine.start()
    try:
        assert calls == [(threading.current_thread(), False)]
    finally:
        engine.stop()
