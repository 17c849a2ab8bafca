"""End to end on CPU: `gpt2 sft` fine-tunes a tiny model on 300 synthetic instructions whose answers follow
a rule ("say WORD twice" -> "WORD WORD"), and `gpt2 chat`'s session follows the rule on fresh prompts far
more often than before.

The tiny model starts from random weights, saved as a model directory. Pre-training it first with
gpt2-train for the seconds a CPU test can spare taught it nothing this task uses, and in trials it made the
rule slower to learn (random word sequences teach "any word may follow"), so the test leaves it out.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from gpt2_cli.main import main
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.weights import load_model
from gpt2_sft.chat import ChatSampling, ChatSession
from gpt2_sft.template import add_chat_template

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "green",
    "music",
    "table",
    "window",
    "garden",
    "silver",
    "paper",
    "orange",
    "winter",
    "summer",
    "rabbit",
    "yellow",
    "forest",
    "castle",
    "dragon",
    "pencil",
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


@pytest.mark.slow
def test_sft_makes_chat_follow_the_rule(tmp_path: Path, one_thread: None) -> None:
    torch.manual_seed(0)
    base = tmp_path / "base"
    GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64).padded(64)).save_pretrained(str(base))
    # Before: the model with the chat template, as `gpt2 sft` starts from it.
    before = follows_rule(add_chat_template(load_model(base)))

    rng = random.Random(0)
    data = tmp_path / "rule.jsonl"
    with data.open("w") as f:
        for _ in range(300):
            prompt, answer = instruction(rng)
            f.write(json.dumps({"instruction": prompt, "output": answer}) + "\n")
    run = tmp_path / "sft"
    argv = (
        ["sft", "--from", str(base), "--dataset", "alpaca", "--path", str(data), "--run-dir", str(run)]
        + ["--seq-len", "32", "--micro-batch", "16", "--total-batch-tokens", "512", "--max-steps", "120"]
        + [
            "--lr",
            "5e-3",
            "--warmup-steps",
            "10",
            "--eval-every",
            "60",
            "--logger",
            "jsonl",
            "--device",
            "cpu",
        ]
    )
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val/loss"] for r in rows if "val/loss" in r]  # on the 15 held-out conversations
    assert len(vals) == 2 and vals[-1] < vals[0]

    # After: the fine-tuned model directory, loaded as `gpt2 chat` loads it.
    tuned = load_model(run / "latest")
    assert tuned.config.chat_template == add_chat_template(load_model(base)).config.chat_template
    after = follows_rule(tuned)
    print(
        f"rule followed: {before:.0%} before SFT, {after:.0%} after (val loss {vals[0]:.2f} -> {vals[-1]:.2f})"
    )
    assert before <= 0.1 and after >= 0.6
