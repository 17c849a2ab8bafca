"""Batched sampling equals sampling each row alone; GPTConfig imports without torch."""

from __future__ import annotations

import subprocess
import sys

import torch
from gpt2_core.generation import sample_next, sample_rows
from gpt2_core.sampling import SamplingConfig


def test_batched_sampling_equals_each_row_alone() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 120) * 3
    configs = [
        SamplingConfig(temperature=0),
        SamplingConfig(temperature=0.7, top_k=5, seed=1),
        SamplingConfig(temperature=1.3, top_k=0, top_p=0.8, seed=2),
        SamplingConfig(temperature=1.0, top_k=40, top_p=0.5),
        SamplingConfig(temperature=0.9, top_k=0, seed=3),
    ]
    gens = [torch.Generator().manual_seed(c.seed) if c.seed is not None else None for c in configs]
    shared = torch.Generator().manual_seed(99)
    picked = []
    for _ in range(20):  # several draws: the generators advance as they would alone
        picked.append(sample_rows(logits, 100, configs, gens, shared).tolist())
    gens = [torch.Generator().manual_seed(c.seed) if c.seed is not None else None for c in configs]
    shared = torch.Generator().manual_seed(99)
    for step in range(20):
        for b, cfg in enumerate(configs):
            # The unseeded rows share one generator: alone, row 3 draws after no other row of its step.
            if gens[b] is None and cfg.temperature > 0:
                continue
            one = sample_next(logits[b : b + 1], cfg, 100, gens[b])
            assert picked[step][b] == int(one), (step, b)
    assert all(t < 100 for row in picked for t in row)


def test_one_generator_for_all_rows_is_torch_multinomial() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 50)
    cfg = SamplingConfig(temperature=1.0, top_k=0)
    ours = sample_rows(logits, 50, [cfg] * 3, generator=torch.Generator().manual_seed(5))
    probs = torch.softmax(logits, dim=-1)
    theirs = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(5)).squeeze(-1)
    assert ours.tolist() == theirs.tolist()


def test_gpt_config_imports_without_torch() -> None:
    code = (
        "import sys; from gpt2_core.config import GPTConfig; GPTConfig(); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
