"""The tokenizer: GPT-2's BPE built offline, identical to Hugging Face's, with room for special tokens."""

from __future__ import annotations

import inspect

import pytest
from gpt2_core import GPT, GPTConfig
from gpt2_core.tokenizer import Tokenizer, bpe_files

CORPUS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return {'a': [x ** 2 for x in range(10)]}  # comment\n\tindented\r\n",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "CJK 日本語のテキスト, 中文文本, 한국어 텍스트",
    "whitespace   runs\n\n\n    and\t\ttabs      end   ",
    "numbers 1234567890 3.14159 and symbols ©®™ ∑∫√ ñäöü",
    "  leading spaces and trailing\n",
    "",
    "<|endoftext|> as plain text",
]


@pytest.fixture(scope="module")
def hf_tokenizer():  # noqa: ANN201
    transformers = pytest.importorskip("transformers")
    vocab_bpe, encoder_json = bpe_files()
    cls = transformers.GPT2TokenizerFast
    # transformers 5 renamed vocab_file/merges_file to vocab/merges and ignores the old names silently.
    if "vocab_file" in inspect.signature(cls.__init__).parameters:
        hf = cls(vocab_file=str(encoder_json), merges_file=str(vocab_bpe))
    else:
        hf = cls(vocab=str(encoder_json), merges=str(vocab_bpe))
    assert len(hf) == 50257
    return hf


@pytest.mark.parametrize("text", CORPUS)
def test_round_trip(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("text", CORPUS)
def test_ids_equal_hugging_face(tokenizer: Tokenizer, hf_tokenizer, text: str) -> None:  # noqa: ANN001
    if "<|endoftext|>" in text:
        # HF treats the special string as the special token; ours keeps user text ordinary unless asked.
        assert tokenizer.encode(text, allow_special=True) == hf_tokenizer.encode(text)
    else:
        assert tokenizer.encode(text) == hf_tokenizer.encode(text)


def test_whole_corpus_at_once(tokenizer: Tokenizer, hf_tokenizer) -> None:  # noqa: ANN001
    text = "\n".join(CORPUS[:-1])
    assert tokenizer.encode(text) == hf_tokenizer.encode(text)
    assert tokenizer.encode_batch(CORPUS[:-1]) == [tokenizer.encode(t) for t in CORPUS[:-1]]


def test_thread_encoding_is_a_separate_identical_encoding() -> None:
    tokenizer = Tokenizer({"<|user|>": 50257})
    own = tokenizer.thread_encoding()
    assert own is not tokenizer.encoding and own is not tokenizer.thread_encoding()
    text = "\n".join(CORPUS) + "<|user|>"
    assert own.encode(text, allowed_special="all") == tokenizer.encode(text, allow_special=True)
    assert own.encode_to_numpy(text, disallowed_special=()).tolist() == tokenizer.encode(text)


def test_endoftext(tokenizer: Tokenizer) -> None:
    assert tokenizer.eot_id == 50256
    assert tokenizer.encode("<|endoftext|>", allow_special=True) == [50256]
    assert tokenizer.encode("<|endoftext|>") != [50256]  # user text cannot inject it
    assert tokenizer.decode([50256]) == "<|endoftext|>"
    assert tokenizer.n_vocab == 50257


def test_bpe_files_come_from_the_installed_distribution() -> None:
    vocab_bpe, encoder_json = bpe_files()
    assert vocab_bpe.name == "vocab.bpe" and encoder_json.name == "encoder.json"
    assert vocab_bpe.is_file() and encoder_json.is_file()


def test_extra_special_tokens_above_endoftext(tokenizer: Tokenizer) -> None:
    special = {"<|im_start|>": 50257, "<|im_end|>": 50258}
    tok = Tokenizer(special)
    assert tok.n_vocab == 50259
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", allow_special=True)
    assert ids[0] == 50257 and ids[-1] == 50258
    assert ids[1:-1] == tokenizer.encode("user\nhi")
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>"
    assert 50257 not in tok.encode("<|im_start|>")  # not from ordinary text
    assert tok.special_tokens["<|endoftext|>"] == 50256


def test_a_saved_model_carries_its_tokenizer(tmp_path) -> None:  # noqa: ANN001
    cfg = GPTConfig(
        n_layer=1,
        n_head=1,
        n_embd=8,
        block_size=16,
        vocab_size=50259,
        special_tokens={"<|endoftext|>": 50256, "<|im_start|>": 50257, "<|im_end|>": 50258},
    )
    GPT(cfg).save_pretrained(tmp_path / "m")
    loaded = GPT.from_pretrained(tmp_path / "m")
    tok = Tokenizer.for_config(loaded.config)
    assert tok.encode("<|im_end|>", allow_special=True) == [50258]
