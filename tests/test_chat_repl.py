"""`gpt2 chat`: the session (history, trimming by whole turns, KV cache reuse), the REPL loop with
callbacks, piped stdin, and the real command in a pseudo-terminal (two turns, /save, /reset, Ctrl-C, Ctrl-D)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from gpt2_cli.chat import run_chat
from gpt2_core.chat import ChatSampling, ChatSession
from gpt2_core.chat_template import add_chat_template
from gpt2_core.model import GPT
from gpt2_core.presets import get_preset
from gpt2_core.tokenizer import Tokenizer
from waiting import DEADLINE

WORD = " yes"


def constant_model(chat: bool = True) -> GPT:
    """A nano model that always says WORD: the final LayerNorm outputs WORD's (enlarged) embedding."""
    torch.manual_seed(0)
    model = GPT(get_preset("nano").padded(64))
    if chat:
        add_chat_template(model)
    tid = Tokenizer().encode(WORD)[0]
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[tid] *= 100
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(wte[tid])
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat") / "model"
    constant_model().save_pretrained(str(path))
    return path


def sampling(**kw: object) -> ChatSampling:
    return ChatSampling(**{"max_new_tokens": 3, "seed": 0, **kw})  # type: ignore[arg-type]


def test_session_keeps_history_and_reuses_the_cache() -> None:
    model = constant_model()
    fed: list[int] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: fed.append(args[0].size(1)), with_kwargs=True)
    session = ChatSession(model, sampling(), system="Be brief.")
    assert "".join(session.reply("Hello")) == WORD * 3
    first_prompt = session.last_prompt_len
    assert fed[0] == first_prompt
    fed.clear()
    assert "".join(session.reply("Again")) == WORD * 3
    # The cache held the first prompt and the reply but its last token: only the rest is fed (that
    # token, the end-of-turn, and the new user turn), not the whole history.
    assert fed[0] == session.last_prompt_len - (first_prompt + 2) < 10
    assert [m["role"] for m in session.transcript()] == ["system", "user", "assistant", "user", "assistant"]
    session.reset()
    assert session.transcript() == [{"role": "system", "content": "Be brief."}]


def test_history_is_trimmed_by_whole_turns() -> None:
    model = constant_model()
    fed: list[int] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: fed.append(args[0].size(1)), with_kwargs=True)
    session = ChatSession(model, sampling(max_new_tokens=8))
    turns = []
    for i in range(6):
        fed.clear()
        "".join(session.reply(f"message number {i} " * 2))
        turns.append((session.trimmed_turns, fed[0], session.last_prompt_len))
    assert session.trimmed_turns > 0
    # Turns go in batches, so a turn after a trim still finds its prompt's start in the cache.
    assert any(trimmed > 0 and n < prompt for trimmed, n, prompt in turns)
    ids = session.prompt_ids()
    assert len(ids) <= 64 - 8
    # The prompt starts at a user turn: <|endoftext|><|user|>...
    assert ids[1] == session.tokenizer.special_tokens["<|user|>"]
    assert len(session.messages) == 12  # the transcript keeps everything
    with pytest.raises(Exception, match="too long"):
        "".join(session.reply("long " * 100))
    assert len(session.messages) == 12


def test_stopping_a_reply_keeps_the_partial_text_and_a_consistent_cache() -> None:
    session = ChatSession(constant_model(), sampling(max_new_tokens=20))
    pieces = session.reply("Hi")
    assert next(pieces) == WORD
    pieces.close()
    assert session.messages[-1] == {"role": "assistant", "content": WORD}
    assert session.cache.length == len(session._cached) - 1  # the prompt and every new id but the last
    assert "".join(session.reply("Go on")) == WORD * 20


def run_lines(session: ChatSession, lines: list[str], interactive: bool = False) -> tuple[str, list[str]]:
    feed = iter(lines)
    out: list[str] = []
    info: list[str] = []

    def read(prompt: str) -> str:
        line = next(feed, None)
        if line is None:
            raise EOFError
        if line == "^C":
            raise KeyboardInterrupt
        return line

    run_chat(session, read=read, write=out.append, info=info.append, interactive=interactive)
    return "".join(out), info


def test_loop_commands(tmp_path: Path) -> None:
    session = ChatSession(constant_model(), sampling())
    out, info = run_lines(
        session,
        [
            "hi",
            "",
            "^C",
            "/system Be nice.",
            f"/save {tmp_path / 't.json'}",
            "/bogus",
            "/reset",
            "/exit",
            "never",
        ],
        interactive=True,
    )
    assert out.count(WORD * 3 + "\n") == 1
    assert any("Ctrl-D or /exit" in line for line in info)
    assert any("unknown command /bogus" in line for line in info)
    saved = json.loads((tmp_path / "t.json").read_text())["messages"]
    assert [m["role"] for m in saved] == ["system", "user", "assistant"]
    assert session.messages == [] and session.system == "Be nice."


def test_model_without_template_is_plain_completion() -> None:
    session = ChatSession(constant_model(chat=False), sampling())
    out, info = run_lines(session, ["The answer is", "Again"])
    assert "no chat template" in info[0]
    assert out == (WORD * 3 + "\n") * 2
    assert session.messages == []


PINNED = ["--dtype", "float32", "--threads", "1", "--cpu-matmul", "torch"]
"""The route the terminal tests need: fp32 replies are WORD on every CPU, and nothing is measured at start-up
(bf16 is the default where the CPU has AMX; --cpu-matmul auto times both kernels first)."""


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def test_piped_stdin_gives_one_reply_per_line(model_dir: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt2_cli",
            "chat",
            "--model",
            str(model_dir),
            "--max-tokens",
            "3",
            "--threads",
            "1",
            "--cpu-matmul",
            "torch",
        ],
        input="first\nsecond\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (WORD * 3 + "\n") * 2
    assert "cpu matmul: torch (asked)" in proc.stderr


def at_prompt(child: Any) -> None:
    """Wait for the prompt before the next key, as a person would. readline prints "> " once it has put the
    terminal in its own (non-canonical) mode; a Ctrl-D sent before that, while the terminal is still canonical,
    is kept by the kernel as a NUL byte that only a canonical read turns into end-of-file, so readline reads the
    NUL, the end-of-file is lost and the chat waits for input forever (as it did on a loaded machine)."""
    child.expect("> ")


def test_chat_in_a_pseudo_terminal(model_dir: Path, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "gpt2_cli",
            "chat",
            "--model",
            str(model_dir),
            "--max-tokens",
            "3",
            "--system",
            "Be brief.",
            *PINNED,
        ],
        env=cli_env(),
        encoding="utf-8",
        timeout=DEADLINE,
    )
    try:
        child.expect("Ctrl-C stops a reply")
        at_prompt(child)
        child.sendline("Hello")
        child.expect(WORD * 3)
        at_prompt(child)
        child.sendline("And again")
        child.expect(WORD * 3)
        at_prompt(child)
        transcript = tmp_path / "t.jsonl"
        child.sendline(f"/save {transcript}")
        child.expect("saved to")
        at_prompt(child)
        child.sendline("/reset")
        child.expect("conversation cleared")
        at_prompt(child)
        child.sendcontrol("c")  # at the prompt: a hint, not an exit
        child.expect("/exit to quit")
        at_prompt(child)
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    messages = json.loads(transcript.read_text())["messages"]
    assert [m["content"] for m in messages] == ["Be brief.", "Hello", WORD * 3, "And again", WORD * 3]


HELD_CHAT = """
import signal, sys
import gpt2_core.generation as g
real = g.generate_ids
def held(*a, **kw):
    steps = real(*a, **kw)
    for _ in range(3):
        yield next(steps)
    signal.pause()  # the reply goes no further until Ctrl-C's SIGINT stops it
    yield from steps
g.generate_ids = held
from gpt2_cli.main import main
main(sys.argv[1:])
"""


def test_ctrl_c_stops_the_reply_and_ctrl_d_exits(model_dir: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-c", HELD_CHAT, "chat", "--model", str(model_dir), "--max-tokens", "40", *PINNED],
        env=cli_env(),
        encoding="utf-8",
        timeout=DEADLINE,
    )
    try:
        at_prompt(child)
        child.sendline("Talk for a long time")
        child.expect(WORD)
        child.sendcontrol("c")
        child.expect(r"\[stopped\]")
        at_prompt(child)  # still running
        child.sendline("/system short")
        child.expect("system message set")
        at_prompt(child)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_piped_stdin_with_undecodable_bytes(model_dir: Path) -> None:
    cmd = [sys.executable, "-m", "gpt2_cli", "chat", "--model", str(model_dir), "--max-tokens", "3"]
    data = b"first\ncaf\xe9 \xff\nthird\n"
    proc = subprocess.run(cmd, input=data, capture_output=True, env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == (WORD * 3 + "\n") * 3
    assert "warning: stdin line 2: 2 undecodable bytes read as U+FFFD" in proc.stderr.decode()
    proc = subprocess.run(
        [*cmd, "--encoding-errors", "strict"], input=data, capture_output=True, env=cli_env(), timeout=120
    )
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and err[-1].startswith("error: stdin line 2: byte 3 is not UTF-8"), err
    assert "Traceback" not in proc.stderr.decode()


def test_generate_prompt_with_undecodable_bytes(model_dir: Path) -> None:
    cmd = [sys.executable.encode(), b"-m", b"gpt2_cli", b"generate", b"--model", str(model_dir).encode()]
    cmd += [b"--max-tokens", b"2", b"--prompt", b"caf\xe9"]
    proc = subprocess.run(cmd, capture_output=True, env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith("caf\ufffd")
    assert "warning: --prompt: 1 undecodable byte read as U+FFFD" in proc.stderr.decode()
    proc = subprocess.run(
        [*cmd, b"--encoding-errors", b"strict"], capture_output=True, env=cli_env(), timeout=120
    )
    assert proc.returncode == 2 and b"error: --prompt: byte 3 is not UTF-8" in proc.stderr
