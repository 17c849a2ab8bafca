"""The OpenAI-compatible endpoints through the official openai client (streamed and not), and every error
in OpenAI's shape with its status."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from gpt2_core.tokenizer import Tokenizer
from gpt2_serve.api import APIError, parse

MODEL_NAME = "nano-chat"  # the conftest server's
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0)


def test_models_health_and_the_chat_page(server: Any, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["chat"] is True and health["running"] == 0
    page = httpx.get(server.url + "/")
    assert page.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in page.text and "New chat" in page.text and "Stop" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere


def test_completions_streamed_and_not(client: openai.OpenAI) -> None:
    kw = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
    whole = client.completions.create(**kw)
    (only,) = whole.choices
    assert only.finish_reason == "length" and only.text
    assert whole.usage.prompt_tokens == len(Tokenizer().encode("Once upon a time"))
    assert whole.usage.completion_tokens == 12
    chunks = list(client.completions.create(**kw, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == only.text
    assert chunks[-1].choices[0].finish_reason == "length"
    # n samples of one prompt, and two prompts: one choice each, numbered in order
    many = client.completions.create(model=MODEL_NAME, prompt=["a", "b"], max_tokens=3, n=2, seed=1)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.usage.completion_tokens == 12


def test_chat_streamed_and_not(client: openai.OpenAI) -> None:
    kw = {"model": MODEL_NAME, "messages": CHAT, "max_tokens": 10, "temperature": 0}
    whole = client.chat.completions.create(**kw)
    message = whole.choices[0].message
    assert message.role == "assistant" and message.content
    assert whole.usage.completion_tokens <= 10
    stream = client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    seeded = [
        client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=8, seed=3, n=2)
        for _ in range(2)
    ]
    assert [c.message.content for c in seeded[0].choices] == [c.message.content for c in seeded[1].choices]


def test_a_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    kw = {"model": MODEL_NAME, "prompt": "The", "max_tokens": 16, "temperature": 0}
    text = client.completions.create(**kw).choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = client.completions.create(**kw, stop=[stop]).choices[0]
    assert cut.text == text[: text.index(stop)] and cut.finish_reason == "stop"
    streamed = list(client.completions.create(**kw, stop=stop, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == cut.text


def post(server: Any, path: str, body: object, **kw: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.api + path, content=content, headers={"Content-Type": "application/json"}, **kw)


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/completions", b"{not json", 400, None),
        ("/completions", [1, 2], 400, None),
        ("/completions", {"prompt": "x", "temperature": 5}, 400, "temperature"),
        ("/completions", {"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
        ("/completions", {"prompt": "x", "n": 99}, 400, "n"),
        ("/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("/completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
        ("/completions", {"prompt": {"a": 1}}, 400, "prompt"),
        ("/completions", {"prompt": "word " * 60, "max_tokens": 10}, 400, "max_tokens"),
        ("/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
        ("/chat/completions", {"messages": []}, 400, "messages"),
        ("/chat/completions", {"messages": [{"role": "user", "content": 3}]}, 400, "messages"),
        ("/chat/completions", {"messages": [{"role": "user", "content": "hi " * 70}]}, 400, "messages"),
        ("/completions", {"model": "gpt-4o", "prompt": "x"}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(
    server: Any, path: str, body: object, status: int, param: str
) -> None:
    response = post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert "Traceback" not in response.text


def test_context_overflow_is_a_400_the_client_understands(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="maximum context length is 64 tokens"):
        client.completions.create(model=MODEL_NAME, prompt="word " * 40, max_tokens=30)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=CHAT)


def test_too_large_bodies_unknown_urls_and_methods(server: Any) -> None:
    big = post(server, "/completions", {"prompt": "x" * (1 << 20)})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    chunked = httpx.post(server.api + "/completions", content=iter([b"[" + b"1," * (1 << 19), b"1]"]))
    assert chunked.status_code == 413  # no Content-Length: counted while reading
    missing = httpx.get(server.api + "/engines")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    assert httpx.get(server.api + "/completions").status_code == 405


def test_a_model_without_a_chat_template_refuses_chat() -> None:
    with pytest.raises(APIError, match="no chat template") as e:
        parse(
            {"messages": CHAT},
            chat=True,
            model_name="m",
            tokenizer=Tokenizer(),
            template=None,
            context=64,
            vocab_size=50257,
            max_n=4,
        )
    assert e.value.status == 400
