"""A load test: many concurrent clients, some leaving mid-stream or mid-request at random, some sending
malformed or oversized requests. The server answers each in OpenAI's terms and leaks no cache row."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from waiting import wait_until

CLIENTS = 48


@pytest.fixture(scope="module")
def loaded(serve, make_chat_model) -> Iterator[Any]:
    with serve(make_chat_model(), max_batch=4, max_queue=12) as server:
        yield server


async def one_client(http: httpx.AsyncClient, rng: random.Random, name: str) -> str:
    """Behave one way at random; return what happened ("ok", "left", "400", "503", ...)."""
    chat = {"model": name, "messages": [{"role": "user", "content": "Hi " * rng.randint(1, 8)}]}
    kind = rng.choice(["stream", "stream-leave", "whole", "whole-leave", "malformed", "huge"])
    if kind.startswith("stream"):
        body = {**chat, "stream": True, "max_tokens": rng.randint(5, 40)}
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return str(response.status_code)
            leave_after = rng.randint(0, 5) if kind == "stream-leave" else None
            lines = [line async for line in _lines(response, leave_after)]
        if leave_after is not None:
            return "left"
        assert lines[-1] == "data: [DONE]", lines[-3:]
        assert all(json.loads(line[6:])["choices"] for line in lines[:-1])
        return "ok"
    if kind.startswith("whole"):
        body = {**chat, "max_tokens": rng.randint(5, 40)}
        timeout = rng.uniform(0.001, 0.05) if kind == "whole-leave" else 60
        try:
            response = await http.post("/v1/chat/completions", json=body, timeout=timeout)
        except httpx.TimeoutException:
            return "left"
        if response.status_code == 200:
            assert response.json()["choices"][0]["message"]["role"] == "assistant"
            return "ok"
        return str(response.status_code)
    if kind == "malformed":
        content = rng.choice([b"{", b"[]", b'{"messages": 7}', b'{"messages": [{"role": "x"}]}', b"\xff\xfe"])
        response = await http.post("/v1/chat/completions", content=content)
    else:
        response = await http.post("/v1/completions", content=b'{"prompt": "' + b"x" * (2 << 20) + b'"}')
    assert "error" in response.json()
    return str(response.status_code)


async def _lines(response: httpx.Response, leave_after: int | None):
    n = 0
    async for line in response.aiter_lines():
        if not line:
            continue
        yield line
        n += 1
        if leave_after is not None and n > leave_after:
            return  # leaving the block closes the connection mid-stream


def test_random_disconnects_and_malformed_requests_leak_nothing(loaded: Any) -> None:
    async def main() -> list[str]:
        rng = random.Random(0)
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=loaded.url, limits=limits, timeout=60) as http:
            return await asyncio.gather(*(one_client(http, rng, loaded.name) for _ in range(CLIENTS)))

    outcomes = asyncio.run(main())
    assert set(outcomes) <= {"ok", "left", "400", "413", "503"}, outcomes
    assert {"ok", "left", "400", "413"} <= set(outcomes), outcomes

    def idle() -> dict | None:
        health = httpx.get(loaded.url + "/health").json()
        return health if health["running"] == health["waiting"] == health["rows_in_use"] == 0 else None

    health = wait_until(idle, "the server to drain (nothing running, waiting or holding a row)")
    assert health["status"] == "ok"
    body = {"model": loaded.name, "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 3}
    assert httpx.post(loaded.api + "/chat/completions", json=body, timeout=30).status_code == 200
