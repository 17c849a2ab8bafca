"""A real server on a free local port, in a thread of the test process, for each test module."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import uvicorn
from gpt2_core.chat_template import add_chat_template
from gpt2_core.model import GPT
from gpt2_core.presets import get_preset
from gpt2_serve.app import create_app

MODEL_NAME = "nano-chat"


def chat_model(block_size: int = 64) -> GPT:
    """A nano GPT (64-token window by default) with the special-token chat template; random weights."""
    torch.manual_seed(0)
    return add_chat_template(GPT(get_preset("nano", block_size=block_size).padded(64))).eval()


@dataclass
class Server:
    url: str
    """http://127.0.0.1:PORT"""
    model: GPT
    name: str = MODEL_NAME
    """The model's id in the API."""

    @property
    def api(self) -> str:
        return self.url + "/v1"


@contextlib.contextmanager
def serving(model: GPT, **options: object) -> Iterator[Server]:
    """Run ``create_app(model, **options)`` under uvicorn until the block ends."""
    app = create_app(model, model_name=MODEL_NAME, **options)  # type: ignore[arg-type]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{sock.getsockname()[1]}", model)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="session")
def serve() -> object:
    """``serve(model, **create_app_options)``: a context manager running a server (see ``serving``)."""
    return serving


@pytest.fixture(scope="session")
def make_chat_model() -> object:
    return chat_model


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving(chat_model(), max_batch=4) as s:
        yield s
