"""``gpt2 chat``: the terminal loop (``run_chat``) around a ``gpt2_core.chat.ChatSession``, and the command.

As in llm's ``_run_chat``, the loop knows nothing about models: it reads lines, runs commands, and prints
the pieces of text a ``reply`` iterator yields, through callbacks, so tests drive it with a list of lines
or a pseudo-terminal. Closing the reply iterator (Ctrl-C) stops generation; the partial reply is kept.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from gpt2_core.chat import ChatError, ChatSampling
from gpt2_core.runtime import RuntimeConfig

from gpt2_cli.options import ENCODING_ERRORS_HELP, dataclass_options, runtime_options

if TYPE_CHECKING:
    from gpt2_core.chat import ChatSession

HELP = "Commands: /reset, /system TEXT, /save FILE, /exit. Ctrl-C stops a reply, Ctrl-D exits."


def run_chat(
    session: ChatSession,
    *,
    read: Callable[[str], str],
    write: Callable[[str], None],
    info: Callable[[str], None],
    interactive: bool,
) -> None:
    """The REPL: read a line, run it as a command or send it, stream the reply.

    ``read(prompt)`` returns a line, raising EOFError at the end (Ctrl-D) and KeyboardInterrupt on
    Ctrl-C; ``write`` prints reply text; ``info`` prints notices. Non-interactive: one reply per line.
    """
    prompt = "> " if interactive else ""
    if not session.is_chat:
        info("This model has no chat template (pre-trained only): each line is continued as plain text.")
    if interactive:
        info(HELP)
    trimmed = 0
    while True:
        try:
            line = read(prompt)
        except EOFError:
            if interactive:
                write("\n")
            return
        except KeyboardInterrupt:
            write("\n")
            info("(Ctrl-D or /exit to quit)")
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, arg = text.partition(" ")
            arg = arg.strip()
            if command in ("/exit", "/quit"):
                return
            if command == "/reset":
                session.reset()
                info("(conversation cleared)")
            elif command == "/system":
                session.system = arg or None
                info(f"(system message {'set' if arg else 'cleared'})")
            elif command == "/save":
                if not arg:
                    info("usage: /save FILE")
                    continue
                try:
                    info(f"(saved to {session.save(arg)})")
                except ChatError as e:
                    info(f"error: {e}")
            elif command == "/help":
                info(HELP)
            else:
                info(f"unknown command {command}; {HELP}")
            continue
        pieces = session.reply(text)
        try:
            for piece in pieces:
                write(piece)
        except KeyboardInterrupt:
            pieces.close()
            write(" [stopped]")
        except ChatError as e:
            info(f"error: {e}")
            continue
        write("\n")
        if session.trimmed_turns > trimmed and interactive:
            info(f"({session.trimmed_turns} early turn(s) now left out to fit the context window)")
        trimmed = session.trimmed_turns


def _terminal_read(prompt: str) -> str:
    with contextlib.suppress(ImportError):  # no readline on Windows
        import readline  # noqa: F401  (line editing and history for input())
    return input(prompt)


def _pipe_read(prompt: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _info(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def chat(
    sampling: ChatSampling,
    runtime: RuntimeConfig,
    model: Path = typer.Option(
        ..., "--model", "-m", help="Model directory (fine-tuned by gpt2 sft, or any)."
    ),
    system: str = typer.Option("", "--system", help="System message that opens the conversation."),
    encoding_errors: str = typer.Option(
        "replace", "--encoding-errors", help=ENCODING_ERRORS_HELP.format(source="input line")
    ),
) -> None:
    """Chat with a model in the terminal (reads stdin line by line when it is not a terminal)."""
    from gpt2_core.decoding import Utf8Decoder, escape_stdin
    from gpt2_core.llm import LLM

    decoder = Utf8Decoder(encoding_errors)
    escape_stdin()
    lines = 0
    interactive = sys.stdin.isatty()
    raw_read = _terminal_read if interactive else _pipe_read
    if interactive:
        # Ctrl-C must stop a reply even when gpt2 was started with SIGINT ignored (from a background job of a
        # script, or nohup): Python keeps an inherited "ignore" and raises no KeyboardInterrupt then.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def read(prompt: str) -> str:
        nonlocal lines
        lines += 1
        source = f"stdin line {lines}"
        text = decoder.decode_os_text(raw_read(prompt), source)  # strict: a UserError ends the chat
        decoder.warn(source)
        return text

    llm = LLM.from_runtime(model, runtime, batch_sizes=1)
    if next(llm.model.parameters()).device.type == "cpu":
        _info(f"cpu matmul: {llm.choice}")
    session = llm.chat(system=decoder.decode_os_text(system, "--system"), sampling=sampling)
    run_chat(
        session,
        read=read,
        write=_write,
        info=_info,
        interactive=interactive,
    )


def chat_command() -> Callable[..., None]:
    """``chat`` with one flag per ``ChatSampling`` field a chat uses."""
    return dataclass_options(
        ChatSampling,
        into="sampling",
        flags={"max_new_tokens": "--max-tokens"},
        exclude=("num_return_sequences", "stop", "stop_at_eot"),
    )(runtime_options(chat))
