"""End to end on CPU: a tiny model pre-trained by `gpt2 train` on the built-in corpus, fine-tuned by `gpt2 sft`
on 300 synthetic instructions whose answers follow a rule ("say WORD twice" -> "WORD WORD"), follows the
rule in `gpt2 chat`'s session on fresh prompts far more often than before.

The rule's words are ones the pre-training corpus (Python's standard library) uses often. Words it never
shows ("apple", "dragon") come out of pre-training with near-identical embeddings (mean cosine 0.90 after
50 steps, against ~0 for these): a tied softmax pushes every unseen token's row the same way. The model can
then no longer tell them apart, and SFT has nothing to copy: in trials it stayed at 0%.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli_helpers import metrics
from gpt2_cli.main import main
from gpt2_core.chat import ChatSampling, ChatSession
from gpt2_core.chat_template import add_chat_template
from gpt2_core.config import GPTConfig
from gpt2_core.model import GPT

WORDS = [
    "list",
    "string",
    "value",
    "file",
    "name",
    "error",
    "class",
    "return",
    "object",
    "number",
    "module",
    "function",
    "default",
    "result",
    "data",
    "line",
    "path",
    "type",
    "text",
    "key",
]
PHRASES = [
    "Say {w} twice.",
    "Repeat the word {w} two times.",
    "Please say {w} twice",
    "Twice: {w}",
    "Can you say {w} two times?",
]


def instruction(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(WORDS)
    return rng.choice(PHRASES).format(w=w), f"{w} {w}"


def follows_rule(model: GPT, n: int = 30) -> float:
    """Share of fresh prompts whose greedy chat reply is exactly the rule's answer."""
    rng = random.Random(1234)
    ok = 0
    for _ in range(n):
        prompt, answer = instruction(rng)
        session = ChatSession(model, ChatSampling(max_new_tokens=8, temperature=0))
        ok += "".join(session.reply(prompt)).strip() == answer
    return ok / n


@pytest.fixture
def one_thread() -> Iterator[None]:
    # A model this small is dominated by per-op overhead; a second thread only adds waits (and on a busy
    # CI machine, far more than it saves).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pretrained(tmp_path: Path) -> Path:
    """A 2-layer, 64-wide model after 50 steps (51K tokens) of `gpt2 train` on python-stdlib."""
    from gpt2_data.prepare import prepare

    data = tmp_path / "stdlib"
    prepare(
        "python-stdlib", data, max_tokens=1_000_000, shard_tokens=250_000, val_tokens=50_000, progress=False
    )
    torch.manual_seed(0)
    base = tmp_path / "init"
    GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64).padded(64)).save_pretrained(str(base))
    run = tmp_path / "pretrain"
    argv = ["train", "--init-from", str(base), "--data-dir", str(data), "--run-dir", str(run)]
    argv += ["--seq-len", "64", "--micro-batch", "16", "--total-batch-tokens", "1024", "--max-steps", "50"]
    argv += ["--lr", "3e-3", "--warmup-steps", "10", "--eval-every", "0", "--checkpoint-every-seconds", "0"]
    argv += ["--logger", "jsonl", "--device", "cpu"]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    losses = [r["train/loss"] for r in metrics(run) if "train/loss" in r]
    assert losses[-1] < losses[0] - 3  # it learned the corpus (10.5 -> ~6.3)
    return run / "latest"


@pytest.mark.slow
def test_sft_makes_chat_follow_the_rule(tmp_path: Path, pretrained: Path, one_thread: None) -> None:
    # Before: the pre-trained model with the chat template, as `gpt2 sft` starts from it.
    before = follows_rule(add_chat_template(GPT.from_pretrained(pretrained)))

    rng = random.Random(0)
    data = tmp_path / "rule.jsonl"
    with data.open("w") as f:
        for _ in range(300):
            prompt, answer = instruction(rng)
            f.write(json.dumps({"instruction": prompt, "output": answer}) + "\n")
    run = tmp_path / "sft"
    argv = [
        "sft",
        "--from",
        str(pretrained),
        "--dataset",
        "alpaca",
        "--path",
        str(data),
        "--run-dir",
        str(run),
    ]
    argv += ["--seq-len", "32", "--micro-batch", "16", "--total-batch-tokens", "512", "--max-steps", "240"]
    argv += [
        "--lr",
        "5e-3",
        "--warmup-steps",
        "10",
        "--eval-every",
        "120",
        "--logger",
        "jsonl",
        "--device",
        "cpu",
    ]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    vals = [r["val/loss"] for r in metrics(run) if "val/loss" in r]  # on the 15 held-out conversations
    assert len(vals) == 2 and vals[-1] < vals[0]

    # After: the fine-tuned model directory, loaded as `gpt2 chat` loads it.
    tuned = GPT.from_pretrained(run / "latest")
    assert (
        tuned.config.chat_template == add_chat_template(GPT.from_pretrained(pretrained)).config.chat_template
    )
    after = follows_rule(tuned)
    print(
        f"rule followed: {before:.0%} before SFT, {after:.0%} after (val loss {vals[0]:.2f} -> {vals[-1]:.2f})"
    )
    assert before <= 0.1 and after >= 0.6
