"""A small model trained here for a few seconds, shared by the tests that measure what int8 costs (gpt2-core's
quantization, gpt2-train's HellaSwag): built once per test session. On the path through pytest's
``pythonpath`` setting."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import torch
from gpt2_core import GPT, get_preset
from gpt2_core.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
README_PROMPT = "Good morrow, my lord. I bring you news from the king:"  # the top README's example


def _corpus() -> torch.Tensor:
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("packages/*/README.md")))
    return torch.tensor(Tokenizer().encode(text))


@functools.cache
def trained_tiny() -> tuple[GPT, torch.Tensor, list[int], torch.Tensor]:
    """A model trained for 150 steps on this repository's READMEs, in eval mode; held-out tokens; the README
    prompt; and ``kept``, the GPT-2 ids the model's vocabulary stands for (its id i is GPT-2's ``kept[i]``).

    The vocabulary is cut to the ids the READMEs use (~2,500), padding included: a 50257-row head made each
    step take most of a second on a shared 2-core machine; the layers quantized are the same kind. Callers
    must not change the model (copy it first)."""
    ids = _corpus()
    kept, ids = torch.unique(ids, return_inverse=True)
    split = int(0.9 * len(ids))
    train, val = ids[:split], ids[split:]
    threads = torch.get_num_threads()
    # One thread: with two on two cores that other jobs share, each step's thread barriers waited out the
    # scheduler (seconds a step).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = len(kept)
    config = get_preset(
        "nano", block_size=64, n_embd=64, n_head=4, vocab_size=n, padded_vocab_size=n, special_tokens={}
    )
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, len(train) - 65, (16,), generator=gen)
        batch = torch.stack([train[s : s + 65] for s in starts])
        _, loss = model(batch[:, :-1], targets=batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    prompt = torch.tensor(Tokenizer().encode(README_PROMPT))
    prompt = torch.searchsorted(kept, prompt[torch.isin(prompt, kept)])  # its words the READMEs have
    return model.eval(), val, prompt.tolist(), kept


def full_vocabulary(model: GPT, kept: torch.Tensor) -> GPT:
    """``model`` with GPT-2's whole vocabulary, so that GPT-2's tokenizer reads its inputs: row ``kept[i]`` of
    the (tied) embedding is the model's row i, every other row zero (a logit of 0, an input of nothing)."""
    config = replace(
        model.config, vocab_size=50257, padded_vocab_size=50257, special_tokens={"<|endoftext|>": 50256}
    )
    full = GPT(config)
    state = {k: v for k, v in model.state_dict().items() if "wte" not in k and "lm_head" not in k}
    full.load_state_dict(state, strict=False)
    with torch.no_grad():
        full.transformer.wte.weight.zero_()
        full.transformer.wte.weight[kept] = model.transformer.wte.weight
    return full.eval()
