"""The API key (401 without it, in OpenAI's shape), 503 when the queue is full, one log line per request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import torch
from gpt2_core.tokenizer import EOT_ID

KEY = "s3cret-key"


class Gate:
    """A forward-pass hook: 50 ms a pass, and while ``passes`` is a number, only that many more passes run;
    the next one waits (the model's one row stays taken) until ``open()``. A timer alone raced a busy CI
    machine: a request could finish before the test had queued the next one."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.passes: int | None = None

    def __call__(self, *_: Any) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.passes is None or self.passes > 0, timeout=60)
            if self.passes:
                self.passes -= 1
        time.sleep(0.05)

    def allow(self, passes: int | None) -> None:
        with self.cond:
            self.passes = passes
            self.cond.notify_all()


@pytest.fixture(scope="module")
def guarded(serve, make_chat_model) -> Iterator[Any]:
    model = make_chat_model()
    model.gate = gate = Gate()
    model.lm_head.register_forward_pre_hook(gate)  # on the head: the engine may skip GPT.forward's hooks
    # Its random weights must not end a reply early: the end-of-turn and end-of-text logits are pushed to -inf.
    ends = torch.tensor(sorted({EOT_ID, *model.config.special_tokens.values()}))
    model.lm_head.register_forward_hook(lambda _m, _i, out: out.index_fill(-1, ends, float("-inf")))
    with serve(model, api_key=KEY, max_batch=1, max_queue=1) as server:
        yield server


def test_the_api_key_is_required_on_the_api(guarded: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.get(guarded.api + "/models", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.api, api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=guarded.api, api_key=KEY, max_retries=0)
    assert client.completions.create(model=guarded.name, prompt="Hi", max_tokens=2).choices[0].text
    # The page and the health check carry no model output: they stay open.
    assert httpx.get(guarded.url + "/").status_code == 200
    assert httpx.get(guarded.url + "/health").status_code == 200


def test_a_full_queue_is_503_and_frees_when_clients_leave(guarded: Any) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": "Hello", "max_tokens": 60, "stream": True}
    before = httpx.get(guarded.url + "/health").json()["tokens_generated"]
    gate = guarded.model.gate
    with httpx.Client(base_url=guarded.api, headers=headers, timeout=30) as http:
        try:
            gate.allow(1)  # the first request's prefill, then the engine waits: it holds the one row
            with http.stream("POST", "/completions", json=body) as running:
                next(running.iter_lines())
                with http.stream("POST", "/completions", json=body) as waiting:
                    assert waiting.status_code == 200  # queued: its first token comes when the row frees
                    assert httpx.get(guarded.url + "/health").json()["waiting"] == 1
                    full = http.post("/completions", json=body)
                    assert full.status_code == 503
                    assert full.json()["error"] == {
                        "message": full.json()["error"]["message"],
                        "type": "server_error",
                        "param": None,
                        "code": "overloaded",
                    }
        finally:
            gate.allow(None)
        # both clients left mid-stream: their row and queue place are free again
        deadline = time.monotonic() + 10
        while (stats := httpx.get(guarded.url + "/health").json())["running"] + stats["waiting"]:
            assert time.monotonic() < deadline, stats
            time.sleep(0.05)
        assert stats["rows_in_use"] == 0
        # Leaving stopped the generation: far fewer than the 2 x 60 tokens asked for were decoded.
        assert stats["tokens_generated"] - before < 60
        assert http.post("/completions", json={**body, "stream": False, "max_tokens": 2}).status_code == 200


def test_one_log_line_per_request(guarded: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpt2_serve")
    httpx.get(guarded.url + "/health")
    httpx.post(guarded.api + "/completions", content=b"{", headers={"Authorization": f"Bearer {KEY}"})
    time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "gpt2_serve"]
    assert len(lines) == 2, lines
    assert '"GET /health" 200' in lines[0] and '"POST /v1/completions" 400' in lines[1]
