"""The chat template: how a conversation becomes token ids, defined once and stored in the model's config.

A conversation renders as::

    <|endoftext|><|system|>You are terse.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|>

``<|endoftext|>`` opens it, as it opens every pre-training document. The role markers and ``<|end|>`` are
special tokens with ids just above 50256, inside the vocabulary padding (50257 real ids in 50304 rows), so
adding them costs no new embedding rows. A model without room for them (a Hugging Face GPT-2 import: 50257
rows) gets plain-text markers instead (``### User:\\n`` ...) and ``<|endoftext|>`` ends each turn.

The template is a plain dict in ``GPTConfig.chat_template`` (JSON in config.json), with the equivalent
Jinja string under ``"jinja"`` for Hugging Face's ``tokenizer_config.json``. Token ids are built so that
tokenizing the rendered text (special tokens allowed) gives exactly the same ids: every stretch of text
between two special tokens is encoded as one piece.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpt2_core.errors import UserError
from gpt2_core.tokenizer import EOT_TOKEN

if TYPE_CHECKING:
    from gpt2_core.config import GPTConfig
    from gpt2_core.model import GPT
    from gpt2_core.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")
TEMPLATE_VERSION = 1
BOS = EOT_TOKEN
SPECIAL_MARKERS = {
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
}
SPECIAL_END = "<|end|>"
PLAIN_MARKERS = {
    "system": "### System:\n",
    "user": "### User:\n",
    "assistant": "### Assistant:\n",
}
PLAIN_END = EOT_TOKEN

Message = dict[str, str]


def _jinja(markers: dict[str, str], end: str) -> str:
    """The Jinja equivalent of :func:`render_text` (what ``tokenizer.apply_chat_template`` runs)."""

    def lit(s: str) -> str:
        return json.dumps(s)  # a JSON string is a valid Jinja string literal (\n escapes included)

    branches = "".join(
        f"{'{% if' if i == 0 else '{% elif'} message['role'] == {lit(role)} %}}{{{{ {lit(markers[role])} }}}}"
        for i, role in enumerate(ROLES)
    )
    return (
        f"{{{{ {lit(BOS)} }}}}"
        "{% for message in messages %}"
        f"{branches}"
        "{% else %}{{ raise_exception('chat roles are system, user and assistant, not ' + message['role']) }}"
        "{% endif %}"
        f"{{{{ message['content'] + {lit(end)} }}}}"
        "{% endfor %}"
        f"{{% if add_generation_prompt %}}{{{{ {lit(markers['assistant'])} }}}}{{% endif %}}"
    )


def make_template(special: bool) -> dict[str, Any]:
    """The template dict stored in ``GPTConfig.chat_template``: special-token or plain-text markers."""
    markers, end = (SPECIAL_MARKERS, SPECIAL_END) if special else (PLAIN_MARKERS, PLAIN_END)
    return {
        "version": TEMPLATE_VERSION,
        "kind": "special" if special else "plain",
        "bos": BOS,
        "roles": dict(markers),
        "end": end,
        "jinja": _jinja(markers, end),
    }


@dataclass(frozen=True)
class ChatTemplate:
    """A template bound to a tokenizer: renders messages to text, or to ids with a loss mask."""

    template: dict[str, Any]
    tokenizer: Tokenizer

    @classmethod
    def for_model(cls, model: GPT) -> ChatTemplate | None:
        """The template of a fine-tuned model, or None for a model without one (pre-trained only)."""
        from gpt2_core.tokenizer import Tokenizer

        if model.config.chat_template is None:
            return None
        return cls(check_template(model.config.chat_template), Tokenizer.for_config(model.config))

    @property
    def end_id(self) -> int:
        """The id that ends a turn (generation stops there)."""
        return self.tokenizer.special_tokens[self.template["end"]]

    def render_text(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        """The conversation as text, exactly as the Jinja template renders it."""
        validate_messages(messages)
        roles, end = self.template["roles"], self.template["end"]
        text = self.template["bos"] + "".join(roles[m["role"]] + m["content"] + end for m in messages)
        return text + (roles["assistant"] if add_generation_prompt else "")

    def render(
        self, messages: Sequence[Message], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of the conversation, and for each id whether it is assistant output (counts in SFT).

        Assistant content and its end-of-turn token are targets; the markers, system and user text are
        not. With plain-text markers, a token straddling marker and content counts as content.
        """
        ids: list[int] = []
        mask: list[bool] = []
        for part_ids, part_mask in self.render_parts(messages, add_generation_prompt):
            ids += part_ids
            mask += part_mask
        return ids, mask

    def render_parts(
        self, messages: Sequence[Message], add_generation_prompt: bool = False
    ) -> list[tuple[list[int], list[bool]]]:
        """:meth:`render` cut into parts: the opening token, then one part per message (and the prompt).

        Parts concatenate to the whole, so a conversation can be cut after any message.
        """
        validate_messages(messages)
        special = self.tokenizer.special_tokens
        roles, end = self.template["roles"], self.template["end"]

        def part(marker: str, content: str, target: bool, end_id: int | None) -> tuple[list[int], list[bool]]:
            # The text between two special tokens is encoded whole, as a tokenizer of the rendered text
            # would; a token that ends inside ``content`` belongs to it.
            ids: list[int] = []
            mask: list[bool] = []
            if marker in special:
                ids.append(special[marker])
                mask.append(False)
                marker = ""
            boundary, pos = len(marker.encode()), 0
            for t in self.tokenizer.encode(marker + content):
                pos += len(self.tokenizer.encoding.decode_single_token_bytes(t))
                ids.append(t)
                mask.append(target and pos > boundary)
            if end_id is not None:
                ids.append(end_id)
                mask.append(target)
            return ids, mask

        parts = [([special[self.template["bos"]]], [False])]
        for m in messages:
            parts.append(part(roles[m["role"]], m["content"], m["role"] == "assistant", special[end]))
        if add_generation_prompt:
            parts.append(part(roles["assistant"], "", False, None))
        return parts

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> list[int]:
        """Token ids of the conversation (what ``gpt2 chat`` feeds the model)."""
        return self.render(messages, add_generation_prompt)[0]


def check_template(template: Any, source: str = "chat_template") -> dict[str, Any]:
    """``template`` if it is one this version understands, else a UserError naming ``source``."""
    if not isinstance(template, dict) or template.get("version") != TEMPLATE_VERSION:
        raise UserError(f"{source}: not a gpt2 chat template (version {TEMPLATE_VERSION})")
    missing = {"bos", "roles", "end"} - set(template)
    if missing or set(template["roles"]) != set(ROLES):
        raise UserError(f"{source}: chat template lacks {sorted(missing) or 'roles ' + str(ROLES)}")
    return template


def validate_messages(messages: Sequence[Message]) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserError(
                f"message {i}: expected {{'role': system|user|assistant, 'content': str}}, got {m!r:.80}"
            )


def chat_config(config: GPTConfig, kind: str = "auto") -> GPTConfig:
    """A copy of ``config`` with the chat template and its special tokens (unchanged if it has one).

    ``kind``: ``special`` (role tokens inside the vocabulary padding; an error if there is no room),
    ``plain`` (text markers), or ``auto`` (special where there is room).
    """
    from gpt2_core.config import GPTConfig

    if config.chat_template is not None:
        check_template(config.chat_template, "model config chat_template")
        return GPTConfig(**config.to_dict())
    if kind not in ("auto", "special", "plain"):
        raise UserError(f"--template must be auto, special or plain, got {kind!r}")
    new = [t for t in (*SPECIAL_MARKERS.values(), SPECIAL_END) if t not in config.special_tokens]
    room = config.padded_vocab_size - config.vocab_size >= len(new)
    if kind == "special" and not room:
        raise UserError(
            f"--template special: the model has {config.padded_vocab_size} embedding rows for "
            f"{config.vocab_size} ids, no room for {len(new)} chat tokens; use --template plain"
        )
    special = kind == "special" or (kind == "auto" and room)
    values = config.to_dict()
    if special:
        start = config.vocab_size
        values["special_tokens"] = {**config.special_tokens, **{t: start + i for i, t in enumerate(new)}}
        values["vocab_size"] = start + len(new)
    values["chat_template"] = make_template(special)
    return GPTConfig(**values)


def add_chat_template(model: GPT, kind: str = "auto") -> GPT:
    """Give ``model`` the chat template of :func:`chat_config` (in place) and return it.

    New token embeddings start at the mean of the existing ones plus a little noise: an "average token"
    the model already handles, with the new tokens still telling each other apart. An untied head's new rows
    start the same way from its own rows.
    """
    import torch

    old, config = model.config, chat_config(model.config, kind)
    if config.vocab_size > old.vocab_size:
        tables = [model.transformer.wte.weight]
        if not old.tie_word_embeddings:
            tables.append(model.lm_head.weight)
        n, start = config.vocab_size - old.vocab_size, old.vocab_size
        with torch.no_grad():
            for table in tables:
                seen = table[:start]
                noise = torch.randn(n, seen.size(1), generator=torch.Generator().manual_seed(0))
                table[start : start + n] = seen.mean(0) + 0.01 * seen.std(0) * noise.to(table)
    model.config = config
    return model
