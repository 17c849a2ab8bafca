"""gpt2-serve's implementation of the gpt2 hooks: the ``gpt2 serve`` command."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import typer
from gpt2_cli.options import CPU_MATMUL_HELP
from gpt2_core.errors import UserError
from gpt2_core.hookspecs import hookimpl

API_KEY_ENV = "GPT2_SERVE_API_KEY"


def serve(
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
        "", "--model-name", help="The model's id in the API (default: the directory name)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, mps, or auto."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="float32, bfloat16, float16, or auto: bfloat16 on a GPU or CPU that computes in it natively.",
    ),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: its default)."),
    cpu_matmul: str = typer.Option("auto", "--cpu-matmul", help=CPU_MATMUL_HELP),
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with a chat page at /."""
    import logging

    import torch
    import uvicorn
    from gpt2_core.cpu_matmul import apply as route_matmuls
    from gpt2_core.cpu_matmul import check_mode
    from gpt2_core.device import pick_device, pick_dtype
    from gpt2_core.model import GPT

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
    if threads < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    check_mode(cpu_matmul)
    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("gpt2_serve")
    if not api_key and not _is_loopback(host):
        log.warning("listening on %s without --api-key: anyone who can reach it can use the model", host)

    where = pick_device(device)
    gpt = GPT.from_pretrained(model, device=where, dtype=pick_dtype(dtype, where))
    # Each decoding step runs 1 to --step-tokens rows: oneDNN only if it is faster at both ends.
    choice = route_matmuls(gpt, cpu_matmul, rows=sorted({1, max(max_batch, step_tokens)}))
    if where.type == "cpu":
        log.info("cpu matmul: %s", choice)
    name = model_name or Path(model).resolve().name
    app = create_app(
        gpt,
        model_name=name,
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
    app.command("serve")(serve)
