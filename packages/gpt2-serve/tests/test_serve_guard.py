"""The API key (401 without it, in OpenAI's shape), 503 when the queue is full, one log line per request."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from waiting import wait_until

KEY = "s3cret-key"


@pytest.fixture
def guarded(serve, make_paced_chat_model) -> Iterator[Any]:
    # One server per test: the server logs a request once it is done with it, which may be after its client
    # has the answer and its test has ended, so a shared server's late line could land in the next test's
    # capture. Leaving the block waits for every request to end (uvicorn's graceful shutdown).
    model = make_paced_chat_model()
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


def requests_logged(caplog: pytest.LogCaptureFixture, request_line: str) -> list[str]:
    """The server's access-log lines for ``request_line`` (``"POST /v1/completions"``) so far: the server
    writes one when it is done with a request, after it has cancelled that request's jobs."""
    return [
        r.getMessage() for r in caplog.records if r.name == "gpt2_serve" and request_line in r.getMessage()
    ]


def test_a_full_queue_is_503_and_frees_when_clients_leave(
    guarded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpt2_serve")
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": "Hello", "max_tokens": 60, "stream": True}
    before = httpx.get(guarded.url + "/health").json()["tokens_generated"]
    pacer = guarded.model.pacer
    with httpx.Client(base_url=guarded.api, headers=headers, timeout=60) as http:
        try:
            pacer.allow(1)  # the first request's prefill, then the engine waits: it holds the one row
            with http.stream("POST", "/completions", json=body) as running:
                lines = running.iter_lines()  # kept: a dropped iterator closes the connection, and the server
                next(lines)  # would rightly cancel the request and free its row
                with http.stream("POST", "/completions", json=body) as waiting:
                    # The server's promise: a stream answered 200 is queued already (the job is submitted
                    # before the status goes out), so it is counted as waiting, and the next one is refused.
                    assert waiting.status_code == 200
                    assert httpx.get(guarded.url + "/health").json()["waiting"] == 1
                    full = http.post("/completions", json=body)
                    assert full.status_code == 503
                    assert full.json()["error"] == {
                        "message": full.json()["error"]["message"],
                        "type": "server_error",
                        "param": None,
                        "code": "overloaded",
                    }
            # Both clients left mid-stream while the engine still holds its step: once the server is done
            # with both requests (their log lines), the waiting one has left the queue already.
            wait_until(lambda: len(requests_logged(caplog, '"POST /v1/completions"')) == 3, "three requests")
            assert httpx.get(guarded.url + "/health").json()["waiting"] == 0
        finally:
            pacer.allow(None)
        # The running one leaves the row after the step it was in: at most that step's token was added to
        # its prefill's one, nowhere near the 2 x 60 tokens asked for.
        stats = wait_until(
            lambda: (s := httpx.get(guarded.url + "/health").json())["running"] + s["waiting"] == 0 and s,
            "the row and the queue to be free",
        )
        assert stats["rows_in_use"] == 0
        assert stats["tokens_generated"] - before <= 2
        assert http.post("/completions", json={**body, "stream": False, "max_tokens": 2}).status_code == 200


def test_one_log_line_per_request(guarded: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpt2_serve")
    httpx.get(guarded.url + "/health")
    httpx.post(guarded.api + "/completions", content=b"{", headers={"Authorization": f"Bearer {KEY}"})
    # The server logs a request once it is done with it, which may be just after the client has its answer.
    wait_until(lambda: len(requests_logged(caplog, '"POST /v1/completions"')) == 1, "the POST's log line")
    lines = [r.getMessage() for r in caplog.records if r.name == "gpt2_serve"]
    assert len(lines) == 2, lines
    assert '"GET /health" 200' in lines[0] and '"POST /v1/completions" 400' in lines[1]
