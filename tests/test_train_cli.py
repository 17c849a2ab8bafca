"""End-to-end ``gpt2 train`` / ``gpt2 eval hellaswag`` / ``gpt2 tensorboard`` flows, as a user runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import gpt2, gpt2_here, metrics
from gpt2_train.config import PRESETS

HELLASWAG = Path(__file__).parents[1] / "packages" / "gpt2-train" / "tests" / "data" / "hellaswag_mini.jsonl"
# The nano model on short sequences: a step takes a fraction of a second on one core.
SMALL = ["--model", "nano", "--micro-batch", "2", "--seq-len", "32", "--total-batch-tokens", "128"]
QUIET = ["--checkpoint-every-seconds", "0", "--eval-every", "0", "--device", "cpu"]


@pytest.mark.slow
def test_train_then_generate_then_evaluate(data_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", *SMALL, *QUIET, "--data-dir", str(data_dir), "--run-dir", str(run)]
    code, _, err = gpt2_here(
        capsys,
        *args,
        "--max-steps",
        "6",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--eval-every",
        "3",
        "--eval-batches",
        "2",
        "--logger",
        "jsonl",
        "--logger",
        "console",
        "--cpu-matmul",
        "torch",
    )
    assert code == 0, err
    assert "step 6/6 | loss" in err and "val" in err and "(cpu matmul: torch)" in err
    rows = metrics(run)
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert os.readlink(run / "latest") == "step_00000006"

    code, out, err = gpt2_here(
        capsys,
        "generate",
        "--model",
        str(run / "latest"),
        "--prompt",
        "def ",
        "--max-tokens",
        "8",
        "--seed",
        "0",
    )
    assert code == 0 and out.startswith("def "), err

    code, out, err = gpt2_here(
        capsys,
        "eval",
        "hellaswag",
        "--model",
        str(run / "latest"),
        "--hellaswag-file",
        str(HELLASWAG),
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "acc_norm" in out and "(6 examples)" in out

    # The same run directory again, without --resume: refused, naming the way out.
    code, _, err = gpt2_here(capsys, *args, "--max-steps", "6")
    assert code == 2 and "--resume auto" in err and len(err.strip().splitlines()) == 1

    # Resuming with another model shape: refused, naming the difference.
    code, _, err = gpt2_here(capsys, *args, "--max-steps", "8", "--resume", "latest", "--model", "tiny")
    assert code == 2 and "n_layer: checkpoint 2, this run 4" in err, err

    # Corrupt the newest checkpoint: resume warns and falls back to the previous one (step 3, kept as best).
    (run / "step_00000006" / "optimizer.pt").write_bytes(b"garbage")
    code, _, err = gpt2_here(capsys, *args, "--max-steps", "8", "--resume", "latest", "--logger", "jsonl")
    assert code == 0, err
    assert "warning: checkpoint step_00000006 is unreadable" in err and "at step 3" in err
    assert os.readlink(run / "latest") == "step_00000008"


def test_user_errors_are_one_line(data_dir: Path, tmp_path: Path, capsys) -> None:
    base = ["train", *QUIET, "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r"), "--model", "nano"]
    cases = [
        (
            ["--micro-batch", "3", "--seq-len", "32", "--total-batch-tokens", "128"],
            "--total-batch-tokens 128 is not",
        ),
        (["--seq-len", "128"], "--seq-len 128 exceeds the model's context window (64)"),
        (["--logger", "nope", *SMALL], "--logger: unknown logger 'nope'"),
        (["--cpu-matmul", "mkl", *SMALL], "--cpu-matmul must be one of auto, onednn, torch, got 'mkl'"),
        (["--preset", "nope"], "--preset: unknown training preset"),
        (["--resume", str(tmp_path / "missing"), *SMALL], "not a checkpoint directory"),
        (["--data-dir", str(tmp_path / "nodata"), *SMALL], "data directory not found"),
    ]
    for extra, message in cases:
        code, _, err = gpt2_here(capsys, *base, *extra)
        assert code == 2 and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
    code, _, err = gpt2_here(capsys, "tensorboard", str(tmp_path / "none"))
    assert code == 2 and "no such run directory" in err


def test_config_file_and_preset(data_dir: Path, tmp_path: Path, capsys) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[train]\ndata_dir = "{data_dir}"\nmax_steps = 2\nloggers = ["jsonl"]\n'
        "[train.model_overrides]\nn_layer = 1\nblock_size = 32\n"
    )
    run = tmp_path / "run"
    code, _, err = gpt2_here(
        capsys, "train", "--preset", "tiny", "--config", str(toml), *SMALL, *QUIET, "--run-dir", str(run)
    )
    assert code == 0, err
    assert (
        f"model: {run / 'latest'}\nsample from it: gpt2 generate --model {run / 'latest'} --prompt '" in err
    )
    saved = json.loads((run / "latest" / "config.json").read_text())
    assert saved["n_layer"] == 1 and saved["n_embd"] == 32 and saved["padded_vocab_size"] == 50304
    assert saved["info"]["train"]["lr"] == PRESETS["tiny"]["lr"]  # from the tiny preset


@pytest.mark.parametrize(("optimizer", "train_vocab"), [("adamw", "full"), ("muon", "data")])
def test_an_untied_head_from_model_overrides_trains_and_resumes(
    data_dir: Path, tmp_path: Path, capsys, optimizer: str, train_vocab: str
) -> None:
    """``model_overrides = {tie_word_embeddings = false}`` in a TOML file: the run trains a head of its own
    (under AdamW, Muon's split included; through the data vocabulary too), saves it, and resumes it."""
    import torch
    from gpt2_core.model import GPT
    from safetensors.torch import load_file

    toml = tmp_path / "run.toml"
    toml.write_text("model_overrides = {tie_word_embeddings = false}\n")
    run = tmp_path / "run"
    args = ["train", "--config", toml, *SMALL, *QUIET, "--data-dir", data_dir, "--run-dir", run]
    args += [
        "--optimizer",
        optimizer,
        "--train-vocab",
        train_vocab,
        "--logger",
        "jsonl",
        "--warmup-steps",
        "1",
    ]
    code, _, err = gpt2_here(capsys, *args, "--max-steps", "2")
    assert code == 0, err
    first = GPT.from_pretrained(run / "latest")
    assert first.config.tie_word_embeddings is False
    assert "lm_head.weight" in load_file(run / "latest" / "model.safetensors")
    assert not torch.equal(first.lm_head.weight, first.transformer.wte.weight)

    code, _, err = gpt2_here(capsys, *args, "--max-steps", "3", "--resume", "latest")
    assert code == 0 and "resumed from" in err, err
    assert json.loads((run / "latest" / "config.json").read_text())["tie_word_embeddings"] is False
    last = GPT.from_pretrained(run / "latest")
    assert not torch.equal(last.lm_head.weight, first.lm_head.weight)  # the head trained on
    assert [r["step"] for r in metrics(run) if "train/loss" in r] == [1, 2, 3]
    assert json.loads((run / "latest" / "state.json").read_text())["config"]["train_vocab"] == train_vocab


def test_third_party_logger_and_dataset(fixture_plugin, tmp_path: Path) -> None:
    """Entry-point discovery end to end: a logger and a dataset from packages outside the workspace."""
    fixture_plugin("gpt2-example-logger")
    env = fixture_plugin("gpt2-example-dataset")
    env["GPT2_CACHE_DIR"] = str(tmp_path / "cache")
    run = tmp_path / "run"
    r = gpt2(
        "train",
        "--dataset",
        "example-tales",
        "--model",
        "nano",
        "--micro-batch",
        "2",
        "--seq-len",
        "16",
        "--total-batch-tokens",
        "32",
        "--max-steps",
        "3",
        "--eval-every",
        "3",
        "--eval-batches",
        "1",
        "--checkpoint-every-seconds",
        "0",
        "--logger",
        "example-csv",
        "--run-dir",
        str(run),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cache" / "data" / "example-tales-shards100000000" / "manifest.json").is_file()
    csv = (run / "example.csv").read_text().splitlines()
    assert csv[0] == "# max_steps=3"
    assert "3,train/loss," in "\n".join(csv) and any(",val/loss," in line for line in csv)
    assert not (run / "tensorboard").exists()  # the chosen logger replaces the defaults
    assert (run / "metrics.jsonl").is_file()  # but for the run's own record, kept always


def test_third_party_optimizer(fixture_plugin, data_dir: Path, tmp_path: Path) -> None:
    """An optimizer from a package outside the workspace: listed by gpt2 plugins, chosen by --optimizer,
    checkpointed, refused when resumed under another --optimizer, and resumed when none is named."""
    env = fixture_plugin("gpt2-example-optimizer")
    r = gpt2("plugins", env=env)
    assert r.returncode == 0 and "example-sgd" in r.stdout and "adamw, muon" in r.stdout, r.stdout
    run = tmp_path / "run"
    args = ["train", *SMALL, *QUIET, "--data-dir", str(data_dir), "--run-dir", str(run), "--max-steps", "3"]
    r = gpt2(*args, "--optimizer", "example-sgd", "--logger", "jsonl", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "latest" / "state.json").read_text())["config"]["optimizer"] == "example-sgd"
    import torch

    saved = torch.load(run / "latest" / "optimizer.pt", weights_only=True)
    assert saved["param_groups"][0]["momentum"] == 0.9  # SGD's state, not AdamW's
    r = gpt2(*args, "--max-steps", "4", "--resume", "latest", "--optimizer", "adamw", env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "trained with --optimizer example-sgd" in r.stderr
    # Named nowhere on the command line, the optimizer is the run's own (the checkpoint's config).
    r = gpt2(*args, "--max-steps", "4", "--resume", "latest", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "latest" / "state.json").read_text())["config"]["optimizer"] == "example-sgd"


def test_a_plugin_optimizers_own_flag_reaches_it_and_survives_a_resume(
    fixture_plugin, data_dir: Path, tmp_path: Path
) -> None:
    """The example optimizer's --sgd-momentum: listed under its own heading, reaching torch's SGD, saved in the
    checkpoint's config, kept by a resume that does not name it, read from its TOML table, and refused in one
    line for another optimizer or a bad value."""
    import torch

    env = fixture_plugin("gpt2-example-optimizer")
    r = gpt2("train", "--help", env=env)
    assert "Optimizer example-sgd:\n  --sgd-momentum <float>" in r.stdout, r.stdout
    run = tmp_path / "run"
    args = ["train", *SMALL, *QUIET, "--data-dir", str(data_dir), "--run-dir", str(run), "--logger", "jsonl"]
    r = gpt2(*args, "--max-steps", "3", "--optimizer", "example-sgd", "--sgd-momentum", "0.5", env=env)
    assert r.returncode == 0, r.stderr
    config = json.loads((run / "latest" / "state.json").read_text())["config"]
    assert config["optimizer_options"]["example-sgd"] == {"sgd_momentum": 0.5}
    r = gpt2(*args, "--max-steps", "4", "--resume", "latest", env=env)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "--sgd-momentum" not in r.stderr  # the run's own value, unchanged
    saved = torch.load(run / "latest" / "optimizer.pt", weights_only=True)
    assert (saved["param_groups"][0]["momentum"], saved["state"] != {}) == (0.5, True)

    toml = tmp_path / "run.toml"
    toml.write_text('optimizer = "example-sgd"\n\n[example-sgd]\nsgd_momentum = 0.6\n')
    r = gpt2("train", "--config", str(toml), "--show-config", env=env)
    assert r.returncode == 0 and "[example-sgd]\nsgd_momentum = 0.6  # default: 0.9" in r.stdout, r.stdout
    for bad, says in [
        (
            ["--sgd-momentum", "0.5"],
            "--sgd-momentum is an option of --optimizer example-sgd, not of this run's",
        ),
        (
            ["--optimizer", "example-sgd", "--sgd-momentum", "1.5"],
            "--sgd-momentum must be in [0, 1), got 1.5",
        ),
    ]:
        r = gpt2("train", *bad, "--show-config", env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and says in lines[0], r.stderr
