"""A real server on a free local port, in a thread of the test process, for each test module."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import uvicorn
from gpt2_core.chat_template import add_chat_template
from gpt2_core.llm import LLM
from gpt2_core.model import GPT
from gpt2_core.presets import get_preset
from gpt2_core.tokenizer import EOT_ID
from gpt2_serve.app import create_app
from waiting import wait_until

MODEL_NAME = "nano-chat"


def chat_model(block_size: int = 64) -> GPT:
    """A nano GPT (64-token window by default) with the special-token chat template; random weights."""
    torch.manual_seed(0)
    return add_chat_template(GPT(get_preset("nano", block_size=block_size).padded(64))).eval()


class Pacer:
    """A forward-pass hook: while ``budget`` is a number, that many more passes run and the next one waits
    until the test gives more (``allow(None)``: no limit). The test decides how far the engine has got when it
    looks, so the machine's speed cannot change what it sees."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.budget: int | None = None

    def __call__(self, *_: object) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.budget is None or self.budget > 0)
            if self.budget:
                self.budget -= 1

    def allow(self, passes: int | None) -> None:
        with self.cond:
            self.budget = passes
            self.cond.notify_all()


def paced_chat_model(block_size: int = 64) -> GPT:
    """``chat_model`` whose forward passes wait on ``model.pacer`` (a :class:`Pacer`), and whose replies never
    end early: its random weights' end-of-turn and end-of-text logits are pushed to -inf."""
    model = chat_model(block_size)
    model.pacer = Pacer()
    model.lm_head.register_forward_pre_hook(
        model.pacer
    )  # on the head: the engine may skip GPT.forward's hooks
    ends = torch.tensor(sorted({EOT_ID, *model.config.special_tokens.values()}))
    model.lm_head.register_forward_hook(lambda _m, _i, out: out.index_fill(-1, ends, float("-inf")))
    return model


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
    """Run ``create_app`` on ``model`` (its ``LLM.from_model`` handle) with ``options`` under uvicorn until the
    block ends."""
    app = create_app(LLM.from_model(model), model_name=MODEL_NAME, **options)  # type: ignore[arg-type]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the test server stopped before it started"
        return server.started

    wait_until(started, "the test server to start")
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


@pytest.fixture(scope="session")
def make_paced_chat_model() -> object:
    return paced_chat_model


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving(chat_model(), max_batch=4) as s:
        yield s
