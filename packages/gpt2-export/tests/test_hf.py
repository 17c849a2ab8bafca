"""The Hugging Face export, checked by its consumer: transformers, offline (see the root conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gpt2_core import GPT
from gpt2_core.errors import UserError
from gpt2_core.generation import SamplingConfig, generate_ids
from gpt2_core.tokenizer import Tokenizer
from gpt2_core.weights import model_state_dict, save_model
from gpt2_export.exporters import run_export
from gpt2_export.hf import HFExporter, import_from_hf
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

REGISTRY = {"hf": HFExporter}

MIXED_TEXT = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def f(x):\n\treturn x ** 2  # square\n\n\nclass A:\n    pass\n",
    "Emoji 🤗🚀👩‍👩‍👧 and flags 🇫🇷, CJK 你好，世界 こんにちは 안녕하세요",
    "   leading spaces, trailing spaces   \n\n\n  \t \r\n mixed   whitespace runs      ",
    "naïve café résumé — “quotes” ‘single’ … 1,234.56 3rd 10x don't I'll we've",
    '<html><body>&amp; &lt;tag&gt; {"json": [1, 2, 3]}</body></html>',
    "",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[GPT, Path]:
    """A padded random nano model with training facts, and its float32 Hugging Face export."""
    make_model = request.getfixturevalue("make_model")
    root = tmp_path_factory.mktemp("hf")
    info = {
        "dataset": "fineweb-edu/sample-10BT",
        "tokens": 10_000_000,
        "val_loss": 3.2875,
        "hellaswag": 0.2941,
        "train": {"lr": 6e-4},  # a checkpoint's training config
    }
    src = save_model(make_model(padded_vocab_size=50304), root / "model", extra=info)
    out = run_export("hf", src, root / "hf", registry=REGISTRY)
    return GPT.from_pretrained(src).eval(), out


def test_transformers_loads_it_with_equal_logits(exported: tuple[GPT, Path]) -> None:
    ours, out = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(ids).logits
        mine = ours(ids, targets=ids)[0][..., :50257]
    assert theirs.shape == (2, 64, 50257)  # padding rows trimmed
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=0)


def test_an_untied_head_is_exported_and_read_by_transformers(make_model, tmp_path: Path) -> None:
    """``tie_word_embeddings: false`` and ``lm_head.weight`` (its padding rows cut): transformers builds an
    untied GPT2LMHeadModel from them, with our logits; importing it back gives our head again."""
    model = make_model(padded_vocab_size=50304, tie_word_embeddings=False)
    src = save_model(model, tmp_path / "model")
    out = run_export("hf", src, tmp_path / "hf", registry=REGISTRY)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    assert load_file(out / "model.safetensors")["lm_head.weight"].shape == (50257, 32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert hf.lm_head.weight is not hf.transformer.wte.weight
    assert torch.equal(hf.lm_head.weight, model.lm_head.weight[:50257])
    ids = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(ids).logits
        mine = model(ids, targets=ids)[0][..., :50257]
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=0)

    back = import_from_hf(out)
    assert back.config == model.config and back.lm_head.weight is not back.transformer.wte.weight
    for key in ("lm_head.weight", "transformer.wte.weight"):
        assert torch.equal(back.state_dict()[key][:50257], model.state_dict()[key][:50257]), key
        assert not back.state_dict()[key][50257:].any()  # padding rows: zeros, never read


def test_greedy_generation_matches_ours(exported: tuple[GPT, Path]) -> None:
    ours, out = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    prompt = Tokenizer().encode("Once upon a time")
    cfg = SamplingConfig(max_new_tokens=40, temperature=0.0)
    mine = [int(t[0]) for t in generate_ids(ours, prompt, cfg)]
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)[0, len(prompt) :]
    assert theirs.tolist() == mine
    assert len(mine) > 1


def test_tokenizer_ids_equal_ours(exported: tuple[GPT, Path]) -> None:
    _, out = exported
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = Tokenizer()
    for text in MIXED_TEXT:
        ids = ours.encode(text)
        assert tok(text)["input_ids"] == ids, text
        assert tok.decode(ids) == text
    text = "one<|endoftext|>two"
    assert tok(text)["input_ids"] == ours.encode(text, allow_special=True)
    assert tok.eos_token_id == 50256 and len(tok) == 50257


def test_files_config_and_model_card(exported: tuple[GPT, Path]) -> None:
    _, out = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "README.md",
            "config.json",
            "generation_config.json",
            "merges.txt",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    # llama.cpp's convert_hf_to_gguf.py reads the context length from n_ctx (KeyError without it).
    assert config["n_ctx"] == config["n_positions"] == 64
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 50256
    card = (out / "README.md").read_text()
    facts = ("fineweb-edu/sample-10BT", "10,000,000", "3.288", "0.2941", "transformers", '"lr": 0.0006')
    for fact in facts:
        assert fact in card


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_exports(make_model, tmp_path: Path, dtype: str) -> None:
    model = make_model()
    src = save_model(model, tmp_path / "model")
    out = run_export("hf", src, tmp_path / dtype, dtype=dtype, registry=REGISTRY)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    torch_dtype = getattr(torch, dtype)
    assert hf.transformer.wte.weight.dtype == torch_dtype
    expected = model.transformer.h[1].attn.c_attn.weight.t().to(torch_dtype)
    assert torch.equal(hf.transformer.h[1].attn.c_attn.weight, expected)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == dtype


def test_refuses_a_non_empty_out(model_dir, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="--force"):
        run_export("hf", model_dir(), out, registry=REGISTRY)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_chat_model_tokens_and_template(make_model, tmp_path: Path) -> None:
    """Special tokens above 50256 get our ids, and a Jinja chat template is carried over as is."""
    specials = {"<|endoftext|>": 50256, "<|user|>": 50257, "<|assistant|>": 50258, "<|end|>": 50259}
    jinja = (
        "{{ '<|endoftext|>' }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )
    template = {"version": 1, "roles": {}, "end": "<|end|>", "jinja": jinja}
    model = make_model(
        vocab_size=50260, padded_vocab_size=50304, special_tokens=specials, chat_template=template
    )
    src = save_model(model, tmp_path / "model")
    out = run_export("hf", src, tmp_path / "hf", registry=REGISTRY)

    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = Tokenizer(specials)
    text = "<|endoftext|><|user|>Hi there<|end|><|assistant|>Hello!<|end|>"
    assert tok(text)["input_ids"] == ours.encode(text, allow_special=True)
    messages = [{"role": "user", "content": "Hi there"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert ids["input_ids"] == ours.encode(
        "<|endoftext|><|user|>Hi there<|end|><|assistant|>", allow_special=True
    )
    assert tok.decode([50259]) == "<|end|>"
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [50256, 50259]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert hf.transformer.wte.weight.shape == (50260, 32)

    back = import_from_hf(out)
    assert back.config.special_tokens == specials
    assert back.config.chat_template == template
    assert back.config.padded_vocab_size == 50304 and back.config.vocab_size == 50260
    assert torch.equal(back.transformer.wte.weight[:50260], model.transformer.wte.weight[:50260])


@pytest.mark.parametrize("tied", [True, False])
def test_export_then_import_gives_identical_tensors(make_model, tmp_path: Path, tied: bool) -> None:
    model = make_model(seed=3, tie_word_embeddings=tied)
    src = save_model(model, tmp_path / "model")
    out = run_export("hf", src, tmp_path / "hf", registry=REGISTRY)
    back = import_from_hf(out)
    assert back.config == model.config
    before, after = model_state_dict(model), model_state_dict(back)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_import_refuses_our_own_format(model_dir, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--from-hf .*not a Hugging Face GPT-2 config"):
        import_from_hf(model_dir())
    with pytest.raises(UserError, match="--from-hf .*no such directory"):
        import_from_hf(tmp_path / "nope")
