"""The loading thread's OpenMP pool is handed back when the engine starts, and torch computes on after it."""

from __future__ import annotations

import threading

import pytest
import torch
from gpt2_core.model import GPT
from gpt2_serve import engine as engine_module
from gpt2_serve.openmp import loaded_libgomp, release_openmp_threads


def test_a_released_pool_is_remade_when_the_thread_computes_again() -> None:
    big = torch.ones(4_000_000)
    assert float(big.sum()) == 4_000_000  # this thread has run a parallel region
    if loaded_libgomp() is None:
        assert not release_openmp_threads()  # nothing to do without libgomp
        pytest.skip("this torch does not run on GNU OpenMP")
    assert release_openmp_threads()
    assert float(big.sum()) == 4_000_000 and float((big * 2).sum()) == 8_000_000


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
