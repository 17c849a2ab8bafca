"""A conversation with a model: its messages, the prompt that fits the context window, streamed replies.

``ChatSession.reply`` yields the reply's text as ``gpt2_core.generation.stream`` produces it; closing the
iterator (Ctrl-C in ``gpt2 chat``) stops generation and keeps the partial reply. The terminal loop around
it lives with the ``gpt2 chat`` command in gpt2-cli.

The session keeps the KV cache across turns: the next prompt usually starts with everything already fed
(the history only grows), so only the new user turn is computed before the first new token.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpt2_core.chat_template import ChatTemplate, Message
from gpt2_core.errors import UserError
from gpt2_core.sampling import SamplingConfig

if TYPE_CHECKING:
    from gpt2_core.model import GPT


@dataclass
class ChatSampling(SamplingConfig):
    """Sampling for chat: longer replies and a cooler temperature than ``gpt2 generate``'s defaults."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95


class ChatError(Exception):
    """A turn that cannot be answered (the message does not fit the context window); the chat goes on."""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ChatSession:
    """A conversation with ``model``: its messages, and a reply generator that streams text.

    A model without a chat template (pre-trained only) is used for plain completion: each message is
    continued as text, with no history.
    """

    def __init__(self, model: GPT, sampling: SamplingConfig | None = None, system: str | None = None) -> None:
        from gpt2_core.kv_cache import KVCache
        from gpt2_core.tokenizer import Tokenizer

        self.model = model.eval()
        self.sampling = sampling or ChatSampling()
        if self.sampling.num_return_sequences != 1:
            raise UserError("chat produces one reply at a time: --num-seq must be 1")
        self.template = ChatTemplate.for_model(model)
        self.tokenizer = self.template.tokenizer if self.template else Tokenizer.for_config(model.config)
        self.system = system or None
        self.messages: list[Message] = []
        self.trimmed_turns = 0
        """How many early turns the last prompt left out to fit the context window."""
        self._first = 0  # index of the first message the prompt still holds
        p = next(model.parameters())
        self.cache = KVCache(model.config, 1, p.device, p.dtype)
        self._cached: list[int] = []  # ids whose keys/values the cache holds (its first cache.length)
        self.last_prompt_len = 0
        self.last_reply_len = 0
        """Tokens in the prompt and in the reply of the last turn."""

    @property
    def is_chat(self) -> bool:
        return self.template is not None

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = []
        self._first = 0

    def transcript(self) -> list[Message]:
        """The whole conversation, the system message first."""
        return ([{"role": "system", "content": self.system}] if self.system else []) + list(self.messages)

    def _longest_prompt(self) -> int:
        """The context window less the tokens kept free for the reply (at most half of it)."""
        window = self.model.config.block_size
        return window - min(self.sampling.max_new_tokens, window // 2)

    def prompt_ids(self) -> list[int]:
        """The prompt for the next reply: the system message and as many of the latest turns as fit.

        Turns are dropped whole, oldest first; a user message that does not fit even alone is an error.
        Once turns must go, enough go to leave a quarter of the room free, so the next few prompts start
        with the same turn and the KV cache still holds them.
        """
        assert self.template is not None
        longest = self._longest_prompt()
        system = [{"role": "system", "content": self.system}] if self.system else []
        starts = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
        kept = [i for i in starts if i >= self._first]
        for n, start in enumerate(kept):
            ids = self.template.encode(system + self.messages[start:], add_generation_prompt=True)
            room = longest if n == 0 or start == kept[-1] else longest * 3 // 4
            if len(ids) <= room:
                self._first = start
                self.trimmed_turns = starts.index(start)
                return ids
        raise ChatError(
            f"the message is too long: the prompt needs {len(ids)} tokens, this model's context window "
            f"leaves {longest} for it (--max-tokens {self.sampling.max_new_tokens} are kept for the reply)"
        )

    def reply(self, text: str) -> Iterator[str]:
        """Send ``text`` and stream the reply, piece by piece (whole characters only).

        Closing the iterator early stops generation; what was generated so far stays in the history.
        """
        from gpt2_core.generation import stream

        if self.template is None:
            ids = (self.tokenizer.encode(text) or [self.tokenizer.eot_id])[-self._longest_prompt() :]
            stop_ids: list[int] = []
        else:
            self.messages.append({"role": "user", "content": text})
            try:
                ids = self.prompt_ids()
            except ChatError:
                self.messages.pop()
                raise
            stop_ids = [self.template.end_id]
        self.last_prompt_len = len(ids)
        # Reuse the cache for the prefix it shares with this prompt.
        self.cache.truncate(_common_prefix(self._cached[: self.cache.length], ids))
        cfg = dataclasses.replace(
            self.sampling,
            max_new_tokens=min(self.sampling.max_new_tokens, self.model.config.block_size - len(ids)),
        )
        out: list[int] = []
        try:
            yield from stream(
                self.model,
                self.tokenizer,
                "",
                cfg,
                prompt_ids=ids,
                kv_cache=self.cache,
                stop_ids=stop_ids,
                generated=out,
            )
        finally:  # also when the caller stops early: the cache holds ids + out but the last token
            self._cached = ids + out
            self.last_reply_len = len(out)
            if self.template is not None:
                content = [t for t in out if t not in stop_ids and t != self.tokenizer.eot_id]
                self.messages.append({"role": "assistant", "content": self.tokenizer.decode(content)})

    def save(self, path: str | Path) -> Path:
        """Write the transcript: JSON messages for .json/.jsonl (a chat dataset record), else text."""
        p = Path(path).expanduser()
        record = {"messages": self.transcript()}
        if p.suffix in (".json", ".jsonl"):
            text = json.dumps(record, ensure_ascii=False, indent=None if p.suffix == ".jsonl" else 2) + "\n"
        else:
            text = "".join(f"{m['role']}: {m['content']}\n\n" for m in record["messages"])
        try:
            p.write_text(text, encoding="utf-8")
        except OSError as e:
            raise ChatError(f"/save {path}: {e.strerror}") from e
        return p
