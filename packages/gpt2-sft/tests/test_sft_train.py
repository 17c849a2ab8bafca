"""SFT batches (masked targets, packing, ranks, exact resume) and `gpt2 sft` on gpt2-train's trainer
(checkpoints that are chat-ready model directories, --resume, one-line user errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import metrics
from gpt2_cli.main import main
from gpt2_core.chat_template import ChatTemplate, chat_config
from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.loss import IGNORE_INDEX as IGNORE
from gpt2_core.model import GPT
from gpt2_core.tokenizer import Tokenizer
from gpt2_sft.config import SFTConfig
from gpt2_sft.examples import Examples, load_split, prepare
from gpt2_sft.loader import SFTLoader


def examples(lengths: list[int]) -> Examples:
    """Example i: tokens 1000*i + 0..n-1, the second half marked as assistant output."""
    tokens = np.concatenate([1000 * i + np.arange(n) for i, n in enumerate(lengths)]).astype(np.uint16)
    mask = np.concatenate([np.arange(n) >= n // 2 for n in lengths])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Examples(tokens, mask, offsets)


def test_targets_are_next_assistant_tokens_and_padding_is_ignored() -> None:
    ex = examples([6, 4])
    x, y = SFTLoader(ex, batch_size=2, seq_len=8, shuffle=False, pack=False).next_batch()
    assert x.shape == (2, 5)  # the longest row, minus one
    assert x[0].tolist() == [0, 1, 2, 3, 4]
    assert y[0].tolist() == [IGNORE, IGNORE, 3, 4, 5]  # targets 3..5 are the assistant half
    assert x[1].tolist() == [1000, 1001, 1002, 50256, 50256]
    assert y[1].tolist() == [IGNORE, 1002, 1003, IGNORE, IGNORE]


def test_packing_keeps_conversations_whole_and_each_once_per_epoch() -> None:
    lengths = [5, 7, 3, 9, 4, 6, 8, 2, 5, 7, 3, 6]
    loader = SFTLoader(examples(lengths), batch_size=2, seq_len=10, seed=3)
    rows = loader._plan()
    assert all(sum(lengths[i] for i in row) <= 11 for row in rows)
    seen = sorted(i for row in rows for i in row)
    n = loader.batches_per_epoch()
    assert n == len(rows) // 2
    assert len(set(seen)) >= len(lengths) - 2  # only a last odd row may be left for the next epoch
    for _ in range(n):
        x, y = loader.next_batch()
        assert x.shape[1] <= 10
    loader.next_batch()
    assert loader.epoch == 1  # a new shuffle


def test_ranks_read_disjoint_rows_and_resume_exactly() -> None:
    ex = examples([4 + i % 5 for i in range(40)])
    a = SFTLoader(ex, batch_size=2, seq_len=12, rank=0, world_size=2, seed=1)
    b = SFTLoader(ex, batch_size=2, seq_len=12, rank=1, world_size=2, seed=1)
    assert a.batches_per_epoch() == b.batches_per_epoch()
    xa, _ = a.next_batch()
    xb, _ = b.next_batch()
    assert not set(xa[:, 0].tolist()) & set(xb[:, 0].tolist())
    for _ in range(7):
        a.next_batch()
    state = a.state_dict()
    want = a.next_batch()
    c = SFTLoader(ex, batch_size=2, seq_len=12, rank=0, world_size=2, seed=1)
    c.load_state_dict(state)
    got = c.next_batch()
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


ROWS = [
    {"instruction": f"Say {w} twice.", "output": f"{w} {w}"}
    for w in ["red", "green", "blue", "black", "white", "pink"] * 4
]


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    base = tmp_path / "base"
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64).padded(64)).save_pretrained(str(base))
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return {"base": base, "data": data, "run": tmp_path / "run"}


def sft(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(["sft", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def common(p: dict[str, Path]) -> list[str]:
    return ["--from", str(p["base"]), "--dataset", "alpaca", "--path", str(p["data"]), "--run-dir", str(p["run"])] + [
        "--seq-len", "32", "--micro-batch", "4", "--total-batch-tokens", "128", "--logger", "jsonl",
        "--device", "cpu", "--eval-every", "2", "--checkpoint-every-steps", "2",
    ]  # fmt: skip


def test_sft_checkpoints_are_chat_models_and_resume(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = sft([*common(setup), "--max-steps", "2"], capsys)
    assert code == 0, err
    latest = setup["run"] / "latest"
    model = GPT.from_pretrained(latest)
    assert model.config.chat_template["kind"] == "special"
    assert model.config.special_tokens["<|end|>"] == 50260
    # The data was prepared into the run (train + held-out val) and is reused on resume.
    meta = json.loads((setup["run"] / "data" / "meta.json").read_text())
    assert meta["stats"]["examples"] == {"val": 1, "train": 23}
    code, err = sft(["train", *common(setup), "--max-steps", "4", "--resume", "latest"], capsys)
    assert code == 0, err
    assert "resumed from" in err and "step_00000002" in err
    steps = [row.get("step") for row in metrics(setup["run"])]
    assert max(s for s in steps if s is not None) == 4
    # `gpt2 generate` takes the result as it is.
    with pytest.raises(SystemExit) as done:
        main(["generate", "--model", str(latest), "--max-tokens", "3", "--seed", "0"])
    assert done.value.code == 0


def test_sft_with_muon_keeps_its_optimizer_across_a_resume(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`gpt2 sft --optimizer muon` (gpt2 train's optimizer flags, one to one): Muon's state is in the checkpoint,
    so a resume that names another optimizer is one line, and one that names none goes on with the run's."""
    args = [*common(setup), "--optimizer", "muon", "--lr-schedule", "wsd"]
    code, err = sft([*args, "--max-steps", "2"], capsys)
    assert code == 0, err
    state = torch.load(setup["run"] / "latest" / "optimizer.pt", weights_only=True)
    assert len(state["optimizers"]) == 2  # Muon's and AdamW's, each whole
    code, err = sft(
        [*common(setup), "--optimizer", "adamw", "--max-steps", "4", "--resume", "latest"], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert (
        "trained with --optimizer muon, this run has --optimizer adamw; resume with --optimizer muon" in err
    )
    code, err = sft([*common(setup), "--max-steps", "4", "--resume", "latest"], capsys)
    assert code == 0, err
    assert "--optimizer" not in next(x for x in err.splitlines() if x.startswith("resumed from"))
    assert max(row["step"] for row in metrics(setup["run"]) if "train/loss" in row) == 4


def test_sft_user_errors(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sft(
        ["--dataset", "alpaca", "--path", str(setup["data"]), "--run-dir", str(setup["run"])], capsys
    )
    assert code == 2 and "--from" in err and "Traceback" not in err
    run = tmp_path / "early"
    early = [*common(setup), "--max-steps", "1", "--run-dir", str(run)]
    code, err = sft([*early, "--seq-len", "128"], capsys)
    assert code == 2 and "--seq-len 128 exceeds the model's context window (64)" in err
    code, err = sft([*early, "--total-batch-tokens", "100"], capsys)
    assert code == 2 and "--total-batch-tokens 100 is not a multiple" in err
    assert not run.exists()  # each check failed before any data was prepared
    # Examples prepared with plain-text markers do not fit a model that gets special tokens.
    cfg = chat_config(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64), "plain")
    template = ChatTemplate(cfg.chat_template, Tokenizer(cfg.special_tokens))
    convs = [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]] * 4
    prepare(iter(convs), template, tmp_path / "plain", max_len=33)
    assert len(load_split(tmp_path / "plain", "train")) == 3
    code, err = sft(
        [
            "--from",
            str(setup["base"]),
            "--data-dir",
            str(tmp_path / "plain"),
            "--run-dir",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 2 and "plain" in err and "gpt2 sft prepare" in err


def test_sft_seq_len_defaults_to_the_model_context(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for a in common(setup) if a not in ("--seq-len", "32")]
    run = tmp_path / "ctx"
    code, err = sft([*args, "--run-dir", str(run), "--max-steps", "1", "--total-batch-tokens", "256"], capsys)
    assert code == 0, err
    assert "micro-batch 4 x 64" in err  # the base model's 64-token window
    assert json.loads((run / "data" / "meta.json").read_text())["max_len"] == 65


def test_sft_from_a_hugging_face_gpt2_uses_plain_markers(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Hugging Face GPT-2 directory has exactly 50257 embedding rows: no room for chat tokens."""
    from gpt2_core.weights import (
        WEIGHTS_FILE,
        config_to_hf,
        model_state_dict,
        save_state_dict,
        state_dict_to_hf,
    )

    hf = tmp_path / "hf"
    hf.mkdir()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64))
    (hf / "config.json").write_text(json.dumps(config_to_hf(gpt.config)))
    save_state_dict(state_dict_to_hf(model_state_dict(gpt), gpt.config), hf / WEIGHTS_FILE)
    args = [*common(setup), "--max-steps", "1", "--eval-every", "0"]
    args[args.index("--from") + 1] = str(hf)
    code, err = sft(args, capsys)
    assert code == 0, err
    model = GPT.from_pretrained(setup["run"] / "latest")
    assert model.config.chat_template["kind"] == "plain" and model.config.vocab_size == 50257


def test_sft_sharded_in_one_process(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """--parallel fsdp without torchrun (a process group of one): a sharded checkpoint that is a chat model."""
    code, err = sft([*common(setup), "--max-steps", "2", "--parallel", "fsdp"], capsys)
    assert code == 0, err
    assert "1 rank(s) sharded (fsdp)" in err
    latest = setup["run"] / "latest"
    assert json.loads((latest / "state.json").read_text())["layout"] == "dcp"
    assert GPT.from_pretrained(latest).config.chat_template["kind"] == "special"


@pytest.mark.slow
def test_sft_under_torchrun_two_gloo_ranks(setup: dict[str, Path]) -> None:
    """Rank 0 prepares the data while rank 1 waits; both train on their own rows; rank 0 checkpoints. Then the
    same run sharded (--parallel fsdp): the same losses and weights, over masks that give each micro-batch and
    rank its own count of targets."""
    import subprocess
    import sys

    args = [*common(setup), "--max-steps", "2", "--total-batch-tokens", "256", "--eval-every", "2"]
    args += ["--precision", "fp32"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    r = subprocess.run(
        [*torchrun, "-m", "gpt2_cli", "sft", *args], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 rank(s)" in r.stderr and "accumulation 1" in r.stderr
    assert GPT.from_pretrained(setup["run"] / "latest").config.chat_template["kind"] == "special"
    ranks = torch.load(setup["run"] / "latest" / "ranks.pt", weights_only=True)
    # One epoch is a single batch per rank here: two steps end in the second epoch, on both ranks alike.
    assert [(s["source"]["epoch"], s["source"]["batch"]) for s in ranks] == [(1, 1), (1, 1)]

    sharded = setup["run"].with_name("sharded")
    args[args.index("--run-dir") + 1] = str(sharded)
    r = subprocess.run(
        [*torchrun, "-m", "gpt2_cli", "sft", *args, "--parallel", "fsdp"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 rank(s) sharded (fsdp)" in r.stderr
    a = [(row["step"], row) for row in metrics(sharded) if "train/loss" in row or "val/loss" in row]
    b = [(row["step"], row) for row in metrics(setup["run"]) if "train/loss" in row or "val/loss" in row]
    assert [step for step, _ in a] == [step for step, _ in b] == [1, 2, 2]
    for (_, x), (_, y) in zip(a, b):
        key = "train/loss" if "train/loss" in x else "val/loss"
        assert abs(x[key] - y[key]) < 1e-5, (x, y)
    mine, theirs = (
        GPT.from_pretrained(sharded / "latest").state_dict(),
        GPT.from_pretrained(setup["run"] / "latest").state_dict(),
    )
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=1e-5, msg=k)


def test_token_shard_options_are_refused_in_one_line() -> None:
    with pytest.raises(UserError, match="align_documents is gpt2 train's"):
        SFTConfig(align_documents=True)  # from a TOML: the flag itself is not offered
