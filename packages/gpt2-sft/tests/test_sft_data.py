"""Instruction datasets (alpaca and chat schemas, jsonl and parquet) and `gpt2 sft prepare`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gpt2_cli.main import main
from gpt2_core.chat_template import ChatTemplate, add_chat_template, chat_config
from gpt2_core.model import GPT
from gpt2_core.presets import get_preset
from gpt2_core.tokenizer import Tokenizer
from gpt2_sft.datasets import AlpacaDataset, ChatDataset
from gpt2_sft.examples import fit_conversation, load_split, read_meta

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    {"instruction": "Name a color.", "output": "Blue."},  # no input field at all
]
CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "How are you?"},
            {"role": "assistant", "content": "Fine."},
        ]
    },
    {"messages": [{"from": "human", "value": "Ping"}, {"from": "gpt", "value": "Pong"}]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def template() -> ChatTemplate:
    cfg = chat_config(get_preset("nano").padded(64))
    return ChatTemplate(cfg.chat_template, Tokenizer(cfg.special_tokens))


def test_alpaca_records_become_conversations(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    convs = list(AlpacaDataset(AlpacaDataset.Options(path=str(path))).conversations())
    assert convs[0] == [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert convs[1][0]["content"] == "Say hi."
    assert len(convs) == 3


def test_parquet_and_chat_schema(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    path = tmp_path / "c.parquet"
    pd.DataFrame(CHAT).to_parquet(path)
    convs = list(ChatDataset(ChatDataset.Options(path=str(path))).conversations())
    assert [m["role"] for m in convs[0]] == ["system", "user", "assistant", "user", "assistant"]
    assert convs[1] == [{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}]


def test_truncation_by_whole_turns() -> None:
    t = template()
    conv = CHAT[0]["messages"]
    full, _, status = fit_conversation(t, conv, 1000)
    assert status == "ok"
    first_exchange = len(t.encode(conv[:3]))
    ids, mask, status = fit_conversation(t, conv, len(full) - 1)
    assert status == "truncated" and len(ids) == first_exchange
    assert ids == full[:first_exchange] and mask[-1]  # ends with the first reply's end-of-turn
    assert fit_conversation(t, conv, first_exchange - 1)[2] == "too_long"
    assert fit_conversation(t, conv[:2], 1000)[2] == "no_reply"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_command_reports_and_writes_masked_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ALPACA * 10 + [{"instruction": "word " * 200, "output": "too long"}]
    path = write_jsonl(tmp_path / "a.jsonl", rows)
    model_dir = tmp_path / "model"
    GPT(get_preset("nano").padded(64)).save_pretrained(str(model_dir))
    out = tmp_path / "sft"
    code, stdout, err = run_cli(
        [
            "sft",
            "prepare",
            "--dataset",
            "alpaca",
            "--path",
            str(path),
            "--model",
            str(model_dir),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "28 train + 2 val examples from 31 conversations" in stdout
    assert "1 too long" in stdout
    meta = read_meta(out)
    assert meta["max_len"] == 65  # nano's 64-token window + 1
    assert meta["chat_template"]["kind"] == "special"
    train = load_split(out, "train")
    assert len(train) == 28
    tok = Tokenizer(meta["special_tokens"])
    ids, mask = train.example(0)
    assert ids[0] == tok.eot_id and not mask[:3].any() and mask[-1]
    answers = {tok.decode(ids[mask].tolist()) for ids, mask in map(train.example, range(len(train)))}
    assert answers == {"5<|end|>", "Hi!<|end|>", "Blue.<|end|>"}
    assert np.asarray(train.tokens).max() < 50261


def test_prepare_errors_name_the_flag_or_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        [
            "sft",
            "prepare",
            "--dataset",
            "alpaca",
            "--path",
            str(tmp_path / "nope.jsonl"),
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 2 and "nope.jsonl" in err and "Traceback" not in err
    path = write_jsonl(tmp_path / "c.jsonl", CHAT)
    code, _, err = run_cli(
        ["sft", "prepare", "--dataset", "alpaca", "--path", str(path), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "--instruction-field" in err
    code, _, err = run_cli(
        ["sft", "prepare", "--dataset", "chat", "--path", str(path), "--bogus", "1"], capsys
    )
    assert code == 2


def test_masked_positions_never_contribute_to_the_loss() -> None:
    torch.manual_seed(0)
    model = add_chat_template(GPT(get_preset("nano").padded(64)))
    t = ChatTemplate.for_model(model)
    ids, mask = t.render(CHAT[0]["messages"])
    x = torch.tensor([ids[:-1]])
    y = torch.tensor([[tok if m else -100 for tok, m in zip(ids[1:], mask[1:])]])
    logits, loss = model(x, y)
    assert loss is not None
    logits.retain_grad()
    loss.backward()
    grad = logits.grad[0].abs().sum(-1)
    masked = torch.tensor(mask[1:]) == 0
    assert torch.all(grad[masked] == 0) and torch.all(grad[~masked] > 0)
