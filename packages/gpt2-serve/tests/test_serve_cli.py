"""``gpt2 serve`` as a user runs it: a model directory, 127.0.0.1 by default, one log line per request,
user errors as one line with exit status 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cli_helpers import gpt2_here, loaded_llms
from waiting import wait_until


def gpt2(*args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GPT2_SERVE_API_KEY": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "gpt2_cli", *args], env=env, text=True, stderr=subprocess.PIPE, **kw
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_a_model_directory(tmp_path: Path, make_chat_model) -> None:
    """Served through a run's ``latest`` link, the model is named as typed (the README's requests say
    "latest"), and the folder the link points to is accepted too."""
    make_chat_model().save_pretrained(tmp_path / "run" / "step_00000003")
    (tmp_path / "run" / "latest").symlink_to("step_00000003")
    port = free_port()
    proc = gpt2(
        "serve",
        "--model",
        str(tmp_path / "run" / "latest"),
        "--port",
        str(port),
        "--threads",
        "1",
        "--cpu-matmul",
        "torch",
    )
    try:

        def health() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health")
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return None

        assert wait_until(health, "the server to answer /health").json()["model"] == "latest"
        card = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]
        assert (card["id"], card["root"]) == ("latest", str(tmp_path / "run" / "latest"))
        for name in ("latest", "step_00000003"):
            body = {"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            assert reply.json()["model"] == "latest"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert "cpu matmul: torch (asked)" in err
    assert "http://127.0.0.1:" in err  # where it listens: loopback unless --host says otherwise
    requests = [line for line in err.splitlines() if "gpt2_serve:" in line and '"' in line]
    assert len(requests) == 4, err
    assert '"GET /health" 200' in requests[0] and '"GET /v1/models" 200' in requests[1]
    assert all('"POST /v1/chat/completions" 200' in line for line in requests[2:])
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-batch", "0"], "error: --max-batch must be >= 1"),
        (["--port", "70000"], "error: --port must be <= 65535"),
        (["--cpu-matmul", "mkl"], "error: --cpu-matmul must be one of auto, onednn, torch"),
        ([], "error: {tmp}/missing: no such model directory"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = gpt2_here(capsys, "serve", "--model", str(tmp_path / "missing"), *args)
    assert code == 2
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1, err


def test_serve_quantize_int8(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_chat_model
) -> None:
    import uvicorn
    from gpt2_core.quantize import Int8Linear

    make_chat_model().save_pretrained(tmp_path / "model")
    loaded = loaded_llms(monkeypatch)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))  # built, not started
    code, _, err = gpt2_here(capsys, "serve", "--model", str(tmp_path / "model"), "--quantize", "int8")
    assert code == 0 and len(served) == 1, err
    assert isinstance(loaded[0].model.lm_head, Int8Linear) and loaded[0].template is not None
