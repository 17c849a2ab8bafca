"""``gpt2_core.LLM``: one handle holding the model, tokenizer, chat template and kernel choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpt2_core import GPT, LLM
from gpt2_core.errors import UserError
from gpt2_core.generation import generate
from gpt2_core.quantize import Int8Linear
from gpt2_core.sampling import SamplingConfig
from gpt2_core.tokenizer import Tokenizer


def test_load_generate_stream_and_chat(saved_nano: Path, nano: GPT) -> None:
    llm = LLM.load(saved_nano, device="cpu", dtype="float32", cpu_matmul="torch")
    assert llm.template is None and str(llm.choice) == "torch (asked)"
    cfg = SamplingConfig(max_new_tokens=8, temperature=0.0)
    expected = generate(nano, Tokenizer(), "Hello", cfg)
    assert llm.generate("Hello", cfg) == expected
    assert "".join(llm.stream("Hello", cfg)) == expected[0]
    session = llm.chat()
    assert session.model is llm.model


def test_load_int8_and_user_errors(saved_nano: Path) -> None:
    llm = LLM.load(saved_nano, device="cpu", quantize="int8")
    assert isinstance(llm.model.lm_head, Int8Linear)
    assert len(llm.generate("Hi", SamplingConfig(max_new_tokens=3))[0]) > 0
    with pytest.raises(UserError, match="--quantize"):
        LLM.load(saved_nano, quantize="fp4")
    with pytest.raises(UserError, match="--threads"):
        LLM.load(saved_nano, threads=-1)
