"""The HTTP application: OpenAI-compatible endpoints, the chat page, auth and one log line per request.

Handlers only check requests, queue jobs on the ``Engine`` and relay its tokens as text: the engine's
thread owns the model. A streamed answer is ``text/event-stream`` in OpenAI's chunk format ending with
``data: [DONE]``; Starlette's ``StreamingResponse`` cancels the stream when the client disconnects (it
listens for ``http.disconnect`` under uvicorn), and the stream's ``finally`` frees the jobs' rows. A
non-streamed answer races the client's disconnect the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib.resources import files
from typing import Any

from gpt2_core.generation import TextPieces
from gpt2_core.llm import LLM
from gpt2_core.tokenizer import Tokenizer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpt2_serve.api import APIError, Generation, choice, envelope, parse, usage
from gpt2_serve.engine import STEP_TOKENS, End, Engine, Job, QueueFull, Token

log = logging.getLogger("gpt2_serve")

MAX_BODY = 1 << 20
"""Largest request body accepted (bytes); a larger one gets 413. 1 MiB holds ~250k tokens of text."""


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


class Guard:
    """ASGI middleware: the API key on /v1/ paths (compared in constant time), one log line per request."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = f"Bearer {api_key}".encode() if api_key else None

    def _authorized(self, scope: Scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, self.key or b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.key and scope["path"].startswith("/v1/") and not self._authorized(scope):
                error = APIError(
                    401,
                    "invalid or missing API key: send the header 'Authorization: Bearer KEY'",
                    type="authentication_error",
                    code="invalid_api_key",
                )
                await error_response(error)(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        except BaseException:
            status = status or 500
            raise
        finally:
            client = scope.get("client") or ("-", 0)
            log.info(
                '%s "%s %s" %s %.0f ms',
                client[0],
                scope["method"],
                scope["path"],
                status or "-",  # no status: the client left before an answer was started
                (time.perf_counter() - start) * 1000,
            )


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body; 413 past ``limit`` bytes (announced or sent), 400 when it is not JSON."""
    too_large = APIError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    try:
        if int(request.headers.get("content-length", 0)) > limit:
            raise too_large
    except ValueError as e:
        raise APIError(400, "invalid Content-Length header") from e
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}"[:200]) from e


async def client_gone(request: Request) -> None:
    """Return when the client disconnects (the body has been read: uvicorn's next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Run:
    """The jobs of one request, turned back into text as their tokens arrive."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer, gen: Generation, jobs: list[Job]) -> None:
        self.engine, self.gen, self.jobs = engine, gen, jobs
        self.pieces = [TextPieces(tokenizer, gen.stop) for _ in jobs]
        self.tokens = [0] * len(jobs)

    def usage(self) -> dict[str, int]:
        return usage(sum(len(p) for p in self.gen.prompts), sum(self.tokens))

    async def choices(self) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice index, new text, finish reason or None) as the engine produces them."""
        events = self.jobs[0].events
        open_ = set(range(len(self.jobs)))
        while open_:
            event = await events.get()
            i = event.index
            if i not in open_:
                continue  # a token decoded before a stop string's cancel reached the engine
            if isinstance(event, Token):
                self.tokens[i] += 1
                text = self.pieces[i].add(event.id)
                if self.pieces[i].stopped:
                    self.engine.cancel([self.jobs[i]])
                    open_.discard(i)
                    yield i, text, "stop"
                elif text:
                    yield i, text, None
                continue
            assert isinstance(event, End)
            if event.reason == "error":
                raise APIError(500, "generation failed on the server", type="server_error")
            if event.reason == "cancelled":
                raise APIError(503, "the server is shutting down", type="server_error")
            open_.discard(i)
            yield i, self.pieces[i].finish(), event.reason


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(
    llm: LLM,
    *,
    model_name: str,
    aliases: tuple[str, ...] = (),
    model_root: str | None = None,
    api_key: str | None = None,
    max_batch: int = 8,
    max_queue: int = 64,
    max_body: int = MAX_BODY,
    step_tokens: int = STEP_TOKENS,
) -> Starlette:
    """The server's ASGI app; its engine starts and stops with the app (lifespan). ``step_tokens``: the
    token budget of one decoding step (see ``Engine``). ``aliases``: other names requests may give the model
    (the folder a ``latest`` link points to); ``model_root``: the model's directory as the user gave it,
    ``root`` in the model card as vLLM has it, and what the chat page shows."""
    model, tokenizer, template = llm.model, llm.tokenizer, llm.template
    engine = Engine(model, max_batch=max_batch, max_queue=max_queue, step_tokens=step_tokens)
    created = int(time.time())
    page = files("gpt2_serve").joinpath("static/index.html").read_text(encoding="utf-8")
    stop_ids = {tokenizer.eot_id} | ({template.end_id} if template else set())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        log.info(
            "serving %s (%s chat template), at most %d sequences at once",
            model_name,
            "with a" if template else "without a",
            max_batch,
        )
        yield
        await asyncio.to_thread(engine.stop)

    def model_card() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "gpt2"}
        return card | ({"root": model_root} if model_root else {})

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "model": model_name, "chat": template is not None, **engine.stats()}
        )

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def one_model(request: Request) -> Response:
        if request.path_params["model"] not in (model_name, *aliases):
            raise APIError(
                404,
                f"the model {request.path_params['model']!r:.60} does not exist",
                param="model",
                code="model_not_found",
            )
        return JSONResponse(model_card())

    async def generate(request: Request, chat: bool) -> Response:
        gen = parse(
            await read_json(request, max_body),
            chat=chat,
            model_name=model_name,
            aliases=aliases,
            tokenizer=tokenizer,
            template=template,
            context=model.config.block_size,
            vocab_size=model.config.vocab_size,
            max_n=max_batch,
        )
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        jobs = []
        for prompt in gen.prompts:
            for k in range(gen.n):
                seed = gen.sampling.seed
                sampling = gen.sampling if seed is None else replace(gen.sampling, seed=seed + k)
                jobs.append(
                    Job(prompt, gen.max_tokens, sampling, frozenset(stop_ids), events, loop, len(jobs))
                )
        try:
            engine.submit(jobs)
        except QueueFull as e:
            raise APIError(
                503, f"the server is busy: {e}; retry later", type="server_error", code="overloaded"
            ) from e
        run = Run(engine, tokenizer, gen, jobs)
        if gen.stream:
            return StreamingResponse(
                stream(run), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        answer = asyncio.ensure_future(collect(run))
        gone = asyncio.ensure_future(client_gone(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answer.done():
                answer.cancel()
            engine.cancel(jobs)
        if not answer.done() or answer.cancelled():
            return Response(status_code=499)  # nobody reads it: the client closed the connection
        return JSONResponse(answer.result())

    async def collect(run: Run) -> dict[str, Any]:
        texts = [""] * len(run.jobs)
        finishes: list[str | None] = [None] * len(run.jobs)
        async for i, text, finish in run.choices():
            texts[i] += text
            finishes[i] = finish or finishes[i]
        choices = [choice(run.gen, i, t, f) for i, (t, f) in enumerate(zip(texts, finishes))]
        return envelope(run.gen, model_name, choices, usage=run.usage())

    async def stream(run: Run) -> AsyncIterator[str]:
        gen = run.gen
        extra = {"usage": None} if gen.include_usage else {}
        try:
            if gen.chat:  # OpenAI's first chunk of each choice carries the role
                for i in range(len(run.jobs)):
                    yield sse(envelope(gen, model_name, [choice(gen, i, "", None, first=True)], **extra))
            async for i, text, finish in run.choices():
                if text:
                    yield sse(envelope(gen, model_name, [choice(gen, i, text, None)], **extra))
                if finish:
                    yield sse(envelope(gen, model_name, [choice(gen, i, None, finish)], **extra))
            if gen.include_usage:
                yield sse(envelope(gen, model_name, [], usage=run.usage()))
            yield "data: [DONE]\n\n"
        except APIError as e:  # the status is sent already: the error goes in the stream, as OpenAI's does
            yield sse(e.body())
        finally:
            run.engine.cancel(run.jobs)

    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"unknown request URL: {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(APIError(exc.status_code, message, code="unknown_url"))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(APIError(500, "internal server error", type="server_error"))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/models/{model:path}", one_model),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ],
        middleware=[Middleware(Guard, api_key=api_key)],
        exception_handlers={APIError: api_error, HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
