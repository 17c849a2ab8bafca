"""OpenAI's wire format: request fields checked into jobs, and responses, chunks and errors built from them.

Reference: OpenAI's API reference for ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``
(request fields, ``text_completion`` / ``chat.completion`` / ``chat.completion.chunk`` objects, the
``{"error": {"message", "type", "param", "code"}}`` body). Only what a GPT-2 can honour is accepted:
``max_tokens``, ``temperature``, ``top_p``, ``n``, ``stop``, ``seed``, ``stream`` (and ``top_k``, as
vLLM does); other fields OpenAI defines are ignored, as other compatible servers do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from gpt2_core.chat_template import ChatTemplate
from gpt2_core.errors import UserError
from gpt2_core.sampling import SamplingConfig
from gpt2_core.tokenizer import Tokenizer

MAX_STOPS = 4  # OpenAI's limit on ``stop``


class APIError(Exception):
    """An error a client gets in OpenAI's shape, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Generation:
    """A checked request: its prompts (ids), how each choice samples, and how the answer is shaped."""

    chat: bool
    prompts: list[list[int]]
    n: int
    max_tokens: int
    sampling: SamplingConfig
    stop: list[str]
    stream: bool
    include_usage: bool
    id: str
    created: int


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise APIError(400, f"{name} must be a number from {low} to {high}, got {value!r:.40}", param=name)
    return float(value)


def _integer(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise APIError(400, f"{name} must be an integer from {low} to {high}, got {value!r:.40}", param=name)
    return value


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOPS
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise APIError(
            400, f"stop must be a string or a list of up to {MAX_STOPS} non-empty strings", param="stop"
        )
    return stops


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise APIError(400, f"messages[{i}].content must be a string or a list of text parts", param="messages")


def chat_prompt(body: dict[str, Any], template: ChatTemplate | None) -> list[int]:
    """The prompt ids of a chat request: its messages rendered by the model's template."""
    if template is None:
        raise APIError(
            400,
            "this model has no chat template (it is pre-trained only): use /v1/completions",
            param="messages",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content}", param="messages")
    rendered = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object", param="messages")
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ("system", "user", "assistant"):
            raise APIError(
                400,
                f"messages[{i}].role must be system, developer, user or assistant, got {m.get('role')!r:.40}",
                param="messages",
            )
        rendered.append({"role": role, "content": _content(m, i)})
    try:
        return template.encode(rendered, add_generation_prompt=True)
    except UserError as e:
        raise APIError(400, str(e), param="messages") from e


def completion_prompts(body: dict[str, Any], tokenizer: Tokenizer, vocab_size: int) -> list[list[int]]:
    """The prompt ids of a completion request: a string, a list of strings, or token ids (one or a list)."""
    prompt = body.get("prompt", "")

    def ids(p: Any) -> list[int]:
        if isinstance(p, str):
            return tokenizer.encode(p) or [tokenizer.eot_id]
        if isinstance(p, list) and p and all(isinstance(t, int) and 0 <= t < vocab_size for t in p):
            return list(p)
        raise APIError(400, "prompt must be a string, a list of strings, or token ids", param="prompt")

    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return [ids(p) for p in prompt]
    return [ids(prompt)]


def parse(
    body: Any,
    *,
    chat: bool,
    model_name: str,
    tokenizer: Tokenizer,
    template: ChatTemplate | None,
    context: int,
    vocab_size: int,
    max_n: int,
    aliases: Collection[str] = (),
) -> Generation:
    """Check a request body; an APIError (400 or 404) names the field at fault. ``aliases``: other names
    the model answers to."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model", model_name)
    if model != model_name and model not in aliases:
        raise APIError(
            404,
            f"the model {model!r:.60} does not exist; this server has {model_name!r}",
            param="model",
            code="model_not_found",
        )
    prompts = chat_prompt(body, template) if chat else completion_prompts(body, tokenizer, vocab_size)
    prompts = [prompts] if chat else prompts
    longest = max(len(p) for p in prompts)
    default_max = max(1, context - longest) if chat else 16  # OpenAI's: the rest of the context; 16
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, key, default_max, 1, context)
    assert max_tokens is not None
    if longest + max_tokens > context:
        raise APIError(
            400,
            f"this model's maximum context length is {context} tokens, but {longest + max_tokens} were "
            f"requested ({longest} in the prompt, {max_tokens} for the completion): shorten the prompt or "
            f"lower {key}",
            param=key if longest < context else ("messages" if chat else "prompt"),
            code="context_length_exceeded",
        )
    n = _integer(body, "n", 1, 1, max_n)
    assert n is not None
    if n * len(prompts) > max_n:
        raise APIError(400, f"n x prompts must be at most {max_n}, got {n * len(prompts)}", param="n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "stream must be true or false", param="stream")
    options = body.get("stream_options") or {}
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    sampling = SamplingConfig(
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0) if top_p > 0 else 0.0,  # top_p 0: greedy
        top_p=top_p or 1.0,
        top_k=_integer(body, "top_k", 0, 0, vocab_size) or 0,
        seed=_integer(body, "seed", None, -(2**63), 2**63 - 1),
    )
    prefix = "chatcmpl" if chat else "cmpl"
    return Generation(
        chat=chat,
        prompts=prompts,
        n=n,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=_stops(body),
        stream=stream,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        id=f"{prefix}-{uuid.uuid4().hex}",
        created=int(time.time()),
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def choice(gen: Generation, index: int, text: str | None, finish: str | None, first: bool = False) -> dict:
    """One choice: of a response (``first`` unused), or of a streamed chunk (``text`` None: no delta)."""
    if not gen.chat:
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
    if gen.stream:
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    message = {"role": "assistant", "content": text or "", "refusal": None}
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def envelope(gen: Generation, model_name: str, choices: list[dict], **extra: Any) -> dict[str, Any]:
    """A response (``stream`` false) or one chunk of a stream, around ``choices``."""
    kinds = {(True, True): "chat.completion.chunk", (True, False): "chat.completion"}
    return {
        "id": gen.id,
        "object": kinds.get((gen.chat, gen.stream), "text_completion"),
        "created": gen.created,
        "model": model_name,
        "choices": choices,
        "system_fingerprint": None,
        **extra,
    }
