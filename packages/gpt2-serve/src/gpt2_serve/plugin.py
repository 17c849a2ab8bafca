"""gpt2-serve's implementation of the gpt2 hooks: the ``gpt2 serve`` command."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import typer
from gpt2_cli.options import runtime_options
from gpt2_core.errors import UserError
from gpt2_core.hookspecs import hookimpl
from gpt2_core.runtime import RuntimeConfig

API_KEY_ENV = "GPT2_SERVE_API_KEY"


def serve(
    runtime: RuntimeConfig,
    model: Path = typer.Option(
        ...,
        "--model",
        "-m",
        help="Model directory (ours, a checkpoint, an SFT model, or Hugging Face GPT-2).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 opens the server to the network."
    ),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str = typer.Option(
        "",
        "--api-key",
        envvar=API_KEY_ENV,
        show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on every /v1/ request.",
    ),
    max_batch: int = typer.Option(
        8, "--max-batch", help="Sequences decoded together at most (KV cache rows)."
    ),
    max_queue: int = typer.Option(64, "--max-queue", help="Sequences waiting at most; past it, 503."),
    step_tokens: int = typer.Option(
        32,  # engine.STEP_TOKENS; not imported here: the engine imports torch, `gpt2 --help` must not
        "--step-tokens",
        help="Tokens of one decoding step at most: one per running sequence, prompt chunks in the rest.",
    ),
    model_name: str = typer.Option(
        "",
        "--model-name",
        help="The model's id in the API (default: the directory's name as typed, e.g. 'latest').",
    ),
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with a chat page at /."""
    import logging

    import uvicorn
    from gpt2_core.llm import LLM

    from gpt2_serve.app import create_app

    for flag, value, low in (
        ("--port", port, 0),
        ("--max-batch", max_batch, 1),
        ("--max-queue", max_queue, 0),
        ("--step-tokens", step_tokens, 1),
    ):
        if value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if port > 65535:
        raise UserError(f"--port must be <= 65535, got {port}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("gpt2_serve")
    if not api_key and not _is_loopback(host):
        log.warning("listening on %s without --api-key: anyone who can reach it can use the model", host)

    # Each decoding step runs 1 to --step-tokens rows: oneDNN only if it is faster at both ends.
    llm = LLM.from_runtime(model, runtime, batch_sizes=sorted({1, max(max_batch, step_tokens)}))
    if next(llm.model.parameters()).device.type == "cpu":
        log.info("cpu matmul: %s", llm.choice)
    # The name as typed (RUN/latest is "latest", as the README's requests say), not the folder a link
    # points to; that one is accepted too, so a request naming the checkpoint still finds it.
    typed, resolved = Path(os.path.abspath(model)).name, Path(model).resolve().name
    name = model_name or typed
    app = create_app(
        llm,
        model_name=name,
        aliases=() if model_name else tuple({resolved} - {typed}),
        model_root=str(model),
        api_key=api_key or None,
        max_batch=max_batch,
        max_queue=max_queue,
        step_tokens=step_tokens,
    )
    log.info("chat page and API at http://%s:%d/", host if ":" not in host else f"[{host}]", port)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@hookimpl
def register_commands(app: Any) -> None:
    app.command("serve")(runtime_options(serve))
