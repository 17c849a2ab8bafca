"""gpt2 train and gpt2 sft build their config once: defaults < preset < TOML < the flags typed, validated
once on the merged result; model-dependent defaults come from the model, and checks run before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import gpt2_here
from gpt2_train.config import PRESETS

TINY = PRESETS["tiny"]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces the training entry points so the commands stop at the config they built."""
    import gpt2_sft.sft
    import gpt2_train.pretrain

    seen: dict[str, Any] = {}

    def capture(cfg: Any, *args: Any) -> None:
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(gpt2_train.pretrain, "train", capture)
    monkeypatch.setattr(gpt2_sft.sft, "run_sft", capture)
    return seen


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "args,toml_text,expect",
    [
        # The preset sets max_steps, so --epochs 0 is valid once merged (it failed against the defaults).
        (
            ["--preset", "tiny", "--epochs", "0"],
            None,
            {"epochs": 0.0, "max_steps": TINY["max_steps"], "model": "tiny"},
        ),
        (["--preset", "tiny", "--lr", "1e-3"], None, {"lr": 1e-3, "warmup_steps": TINY["warmup_steps"]}),
        (
            ["--preset", "tiny"],
            "lr = 3e-3\nmax_steps = 7\n",
            {"lr": 3e-3, "max_steps": 7, "micro_batch": TINY["micro_batch"]},
        ),
        (["--preset", "tiny", "--max-steps", "9"], "[train]\nmax_steps = 7\n", {"max_steps": 9}),
        (["--epochs", "0"], "max_steps = 5\n", {"epochs": 0.0, "max_steps": 5, "model": "gpt2"}),
        (["--preset", "tiny", "--no-compile"], "compile = true\n", {"compile": False}),
    ],
)
def test_train_layers(
    captured, capsys, tmp_path: Path, args: list[str], toml_text: str | None, expect: dict
) -> None:
    extra = ["--config", toml(tmp_path, toml_text)] if toml_text else []
    code, _, err = gpt2_here(capsys, "train", *args, *extra)
    assert code == 0, err
    for field, value in expect.items():
        assert getattr(captured["cfg"], field) == value, field


@pytest.mark.parametrize(
    "args,toml_text,error",
    [
        (["--preset", "tiny", "--max-steps", "0", "--epochs", "0"], None, "give --max-steps or --epochs"),
        (["--epochs", "0"], None, "give --max-steps or --epochs"),
        (["--preset", "tiny"], "max_steps = -1\n", "--max-steps must be >= 0"),
    ],
)
def test_train_invalid_merge_is_one_line(captured, capsys, tmp_path, args, toml_text, error) -> None:
    extra = ["--config", toml(tmp_path, toml_text)] if toml_text else []
    code, _, err = gpt2_here(capsys, "train", *args, *extra)
    assert code == 2 and error in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "args,toml_text,expect",
    [
        (
            ["--from", "m", "--epochs", "0", "--max-steps", "3"],
            None,
            {"max_steps": 3, "lr": 3e-5, "seq_len": 0},
        ),
        (["--from", "m"], "lr = 1e-4\nepochs = 0\nmax_steps = 4\n", {"lr": 1e-4, "max_steps": 4}),
        (["--from", "m", "--lr", "5e-5"], "lr = 1e-4\n", {"lr": 5e-5, "epochs": 2.0}),
    ],
)
def test_sft_layers(captured, capsys, tmp_path: Path, args, toml_text, expect) -> None:
    extra = ["--config", toml(tmp_path, toml_text)] if toml_text else []
    code, _, err = gpt2_here(capsys, "sft", *args, *extra)
    assert code == 0, err
    for field, value in expect.items():
        assert getattr(captured["cfg"], field) == value, field
