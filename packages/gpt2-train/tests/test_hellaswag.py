"""HellaSwag scoring on a small hand-made file in the official jsonl format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import gpt2_here, loaded_llms
from gpt2_core.errors import UserError
from gpt2_core.quantize import Int8Linear
from gpt2_core.tokenizer import Tokenizer
from gpt2_train import hellaswag
from trained_tiny import full_vocabulary, trained_tiny

from .conftest import small_model

FILE = Path(__file__).parent / "data" / "hellaswag_mini.jsonl"


def test_load_and_limit() -> None:
    assert len(hellaswag.load_examples(FILE)) == 6
    ex = hellaswag.load_examples(FILE, limit=2)
    assert len(ex) == 2 and ex[0].label == 0 and len(ex[0].endings) == 4


def test_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "h.jsonl"
    bad.write_text('{"ctx": "a", "label": 0}\n')
    with pytest.raises(UserError, match=r"h\.jsonl:1: not a HellaSwag example"):
        hellaswag.load_examples(bad)
    with pytest.raises(UserError, match="no such file"):
        hellaswag.load_examples(tmp_path / "missing.jsonl")


def test_scores_match_a_direct_computation() -> None:
    model = small_model(vocab_size=50257, special_tokens={"<|endoftext|>": 50256}, block_size=64).eval()
    tok = Tokenizer()
    examples = hellaswag.load_examples(FILE)
    expect_norm = 0
    for ex in examples:
        ctx = tok.encode(ex.ctx)
        means = []
        for ending in ex.endings:
            end = tok.encode(" " + ending)
            row = torch.tensor([ctx + end])
            with torch.no_grad():
                logits, _ = model(row, row)
            lp = F.cross_entropy(logits[0, len(ctx) - 1 : -1], row[0, len(ctx) :])
            means.append(float(lp))
        expect_norm += int(min(range(4), key=means.__getitem__) == ex.label)
    res = hellaswag.evaluate(model, examples)
    assert res.n == 6
    assert res.acc_norm == pytest.approx(expect_norm / 6)
    assert 0 <= res.acc <= 1


def test_the_command_loads_through_the_handle_with_int8(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = small_model(vocab_size=50257, special_tokens={"<|endoftext|>": 50256}, block_size=64)
    model.save_pretrained(tmp_path / "model")
    loaded = loaded_llms(monkeypatch)
    args = ["eval", "hellaswag", "--model", tmp_path / "model", "--hellaswag-file", FILE, "--device", "cpu"]
    code, out, err = gpt2_here(capsys, *args, "--quantize", "int8")
    assert code == 0 and "(6 examples)" in out, err
    assert isinstance(loaded[0].model.lm_head, Int8Linear)


def test_int8_scores_as_fp32_within_one_example(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The issue's quality bar for int8: on the bundled examples, a trained model (``trained_tiny``, given
    GPT-2's vocabulary) scored with ``--quantize int8`` gets acc_norm within one example of fp32."""
    model, val, _, kept = trained_tiny()
    full = full_vocabulary(model, kept)
    with torch.no_grad():  # the same model on the ids it knows
        torch.testing.assert_close(full(kept[val[None, :32]])[0][..., kept], model(val[None, :32])[0])
    full.save_pretrained(tmp_path / "model")
    args = ["eval", "hellaswag", "--model", tmp_path / "model", "--hellaswag-file", FILE, "--device", "cpu"]
    scores = []
    for quantize in ("none", "int8"):
        code, out, err = gpt2_here(capsys, *args, "--quantize", quantize)
        assert code == 0, err
        scores.append(float(re.search(r"acc_norm per token (\S+)", out)[1]))
    print(f"hellaswag acc_norm fp32 {scores[0]:.4f} int8 {scores[1]:.4f}")
    assert abs(scores[1] - scores[0]) * 6 <= 1 + 1e-9, scores
