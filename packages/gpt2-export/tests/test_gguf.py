"""The GGUF export, checked by an independent reader: transformers' GGUF loader (gguf-py underneath), offline.

Tolerances on a nano model whose logits lie within +-1: f32 1e-5 (measured 2.4e-7), f16 1e-3 (measured
1.7e-4), q8_0 2e-2 (measured 5.2e-3). Greedy tokens: equal in f32; in f16 and q8_0 each token transformers
picks is ours or within twice the tolerance of our best (this random model has near-ties that rounding flips:
q8_0 took another token at step 20 of 30).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gpt2_core import GPT
from gpt2_core.errors import UserError
from gpt2_core.generation import SamplingConfig, generate_ids
from gpt2_core.tokenizer import Tokenizer
from gpt2_core.weights import save_model
from gpt2_export.exporters import run_export
from gpt2_export.gguf_export import GGUFExporter

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

REGISTRY = {"gguf": GGUFExporter}
SPECIALS = {"<|endoftext|>": 50256, "<|user|>": 50257, "<|assistant|>": 50258, "<|end|>": 50259}
JINJA = (
    "{{ '<|endoftext|>' }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
TOLERANCE = {"f32": 1e-5, "f16": 1e-3, "q8_0": 2e-2}


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[GPT, Path]:
    """A random nano SFT-style model (chat tokens 50257-50259, vocabulary padded to 50304) on disk.

    1024 positions: transformers reads ``gpt2.context_length`` into ``n_ctx`` and builds ``n_positions``
    (1024) position rows whatever the file says (see ``test_other_context_lengths_need_n_positions``)."""
    make_model = request.getfixturevalue("make_model")
    template = {"version": 1, "roles": {}, "end": "<|end|>", "jinja": JINJA}
    model = make_model(
        block_size=1024,
        vocab_size=50260,
        padded_vocab_size=50304,
        special_tokens=SPECIALS,
        chat_template=template,
    )
    return model, save_model(model, tmp_path_factory.mktemp("gguf") / "model")


def _export(src: Path, out: Path, gguf_type: str) -> Path:
    return run_export("gguf", src, out, registry=REGISTRY, options={"gguf_type": gguf_type})


def _load(path: Path, **config: object) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, **config
    ).eval()


def _check_logits_and_greedy(ours: GPT, theirs: torch.nn.Module, atol: float) -> None:
    ids = torch.randint(0, 50260, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine = ours(ids, targets=ids)[0][..., :50260]
        got = theirs(ids).logits
    assert got.shape == (2, 48, 50260)  # the padding rows cut, the chat tokens kept
    torch.testing.assert_close(got, mine, atol=atol, rtol=0)
    prompt = Tokenizer().encode("Once upon a time")
    with torch.no_grad():
        seq = theirs.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False, eos_token_id=None)[
            0
        ]
        mine = ours(seq[None], targets=seq[None])[0][0, len(prompt) - 1 : -1, :50260]
    # Each token transformers picked greedily is ours, or (in a reduced type) within the tolerance of our
    # best: a random model has near-ties that a rounding can flip.
    picked = mine.gather(1, seq[len(prompt) :, None])[:, 0]
    assert (picked >= mine.max(1).values - 2 * atol).all()
    if atol <= TOLERANCE["f32"]:
        cfg = SamplingConfig(max_new_tokens=30, temperature=0.0)
        assert [int(t[0]) for t in generate_ids(ours, prompt, cfg)] == seq[len(prompt) :].tolist()


@pytest.mark.slow
def test_f32_read_by_transformers_gives_our_logits_tokens_and_template(
    chat_model: tuple[GPT, Path], tmp_path: Path
) -> None:
    model, src = chat_model
    out = _export(src, tmp_path / "chat.gguf", "f32")
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == ["chat.gguf"]  # no staging left
    _check_logits_and_greedy(model, _load(out), TOLERANCE["f32"])

    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    ours = Tokenizer(SPECIALS)
    for text in ["Hello, world! 🤗 naïve café\n\n  x", "<|user|>Hi there<|end|><|assistant|>"]:
        assert tok(text)["input_ids"] == ours.encode(text, allow_special=True)
    assert tok.chat_template == JINJA
    messages = [{"role": "user", "content": "Hi there"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert ids["input_ids"] == ours.encode(
        "<|endoftext|><|user|>Hi there<|end|><|assistant|>", allow_special=True
    )


def test_metadata_is_llama_cpps_gpt2(chat_model: tuple[GPT, Path], tmp_path: Path) -> None:
    """The keys and tensor names llama.cpp's gpt2 loader reads, as gguf-py's reader sees them."""
    model, src = chat_model
    reader = gguf.GGUFReader(_export(src, tmp_path / "m.gguf", "q8_0"))

    def field(key: str) -> object:
        f = reader.fields[key]
        return f.contents()

    assert field("general.architecture") == "gpt2"
    assert field("gpt2.context_length") == 1024
    assert field("gpt2.embedding_length") == 32
    assert field("gpt2.feed_forward_length") == 128
    assert field("gpt2.block_count") == 2
    assert field("gpt2.attention.head_count") == 2
    assert field("general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "gpt-2"  # llama.cpp refuses "gpt2" (unknown pre-tokenizer type)
    assert len(field("tokenizer.ggml.tokens")) == 50260
    assert field("tokenizer.ggml.eos_token_id") == 50256
    assert field("tokenizer.ggml.eot_token_id") == 50259
    assert field("tokenizer.chat_template") == JINJA
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert set(types) == {
        "token_embd.weight",
        "position_embd.weight",
        "output_norm.weight",
        "output_norm.bias",
        *(
            f"blk.{i}.{part}.{kind}"
            for i in range(2)
            for part in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down")
            for kind in ("weight", "bias")
        ),
    }  # no output.weight: the head is the embedding
    assert types["blk.0.attn_qkv.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["position_embd.weight"] == gguf.GGMLQuantizationType.F32
    assert types["blk.0.attn_qkv.bias"] == gguf.GGMLQuantizationType.F32


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_reduced_types_within_tolerance(chat_model: tuple[GPT, Path], tmp_path: Path, gguf_type: str) -> None:
    model, src = chat_model
    out = _export(src, tmp_path / f"m-{gguf_type}.gguf", gguf_type)
    _check_logits_and_greedy(model, _load(out), TOLERANCE[gguf_type])
    assert out.stat().st_size < (src / "model.safetensors").stat().st_size


def test_other_context_lengths_need_n_positions(make_model, tmp_path: Path) -> None:
    """A model without biases and with 64 positions: llama.cpp reads the length from the file; transformers
    takes it from ``n_positions``, which its GGUF reader does not set, so the reader is told."""
    model = make_model(bias=False)
    src = save_model(model, tmp_path / "model")
    out = _export(src, tmp_path / "m.gguf", "f32")
    theirs = _load(out, n_positions=64)
    ids = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, model(ids, targets=ids)[0], atol=1e-5, rtol=0)


def test_an_untied_head_is_the_output_tensor(make_model, tmp_path: Path) -> None:
    """An untied head is written as ``output.weight`` (llama.cpp's gpt2 loader reads it when present, else
    duplicates ``token_embd``), its padding rows cut; transformers' GGUF loader reads it as an untied
    ``lm_head`` (``tie_word_embeddings`` false when the file has ``output.weight``) and gives our logits."""
    model = make_model(padded_vocab_size=50304, tie_word_embeddings=False)
    src = save_model(model, tmp_path / "model")
    out = _export(src, tmp_path / "m.gguf", "f32")
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert tensors["output.weight"].data.shape == (50257, 32)
    assert torch.equal(torch.from_numpy(tensors["output.weight"].data.copy()), model.lm_head.weight[:50257])
    theirs = _load(out, n_positions=64)
    assert not theirs.config.tie_word_embeddings
    assert theirs.lm_head.weight is not theirs.transformer.wte.weight
    ids = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine = model(ids, targets=ids)[0][..., :50257]
        torch.testing.assert_close(theirs(ids).logits, mine, atol=1e-5, rtol=0)


def test_out_is_a_file(model_dir, tmp_path: Path) -> None:
    src = model_dir()
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        _export(src, tmp_path / "dir", "f16")
    out = _export(src, tmp_path / "m.gguf", "f16")
    with pytest.raises(UserError, match="exists; use --force"):
        _export(src, out, "f16")
    run_export("gguf", src, out, registry=REGISTRY, force=True)  # f16 by default
    assert gguf.GGUFReader(out).fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16
    with pytest.raises(UserError, match="--gguf-type 'q4'"):
        _export(src, tmp_path / "q4.gguf", "q4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "m.gguf", "model"]
