"""TrainConfig: layering of defaults, presets, TOML and flags; validation that names the flag."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from gpt2_core.errors import UserError
from gpt2_train.config import PRESETS, TrainConfig
from gpt2_train.config_layers import build_config
from gpt2_train.optim import lr_at
from gpt2_train.optimizers import build_optimizer, optimizer_registry


def test_flags_override_toml_override_preset(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nlr = 1e-3\nmax_steps = 7\nloggers = ["jsonl"]\n')
    cfg = build_config("tiny", str(toml), {"max_steps": 9})
    assert cfg.model == "tiny"  # from the preset
    assert cfg.lr == 1e-3  # TOML beats the preset
    assert cfg.max_steps == 9  # a flag beats TOML
    assert cfg.loggers == ["jsonl"]


def test_unknown_toml_key_names_file(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("learning_rate = 1\n")
    with pytest.raises(UserError, match=r"bad\.toml.*learning_rate"):
        build_config(None, str(toml), {})


def test_unknown_preset() -> None:
    with pytest.raises(UserError, match="--preset"):
        build_config("nope")


@pytest.mark.parametrize(
    "field,value,flag",
    [
        ("micro_batch", 0, "--micro-batch"),
        ("lr", -1.0, "--lr"),
        ("precision", "fp8", "--precision"),
        ("cpu_matmul", "mkl", "--cpu-matmul"),
    ],
)
def test_validation_names_flag(field: str, value: object, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build_with_their_values(name: str) -> None:
    cfg = build_config(name)
    assert isinstance(cfg, TrainConfig)
    # An optimizer's table (tiny's muon=dict(...)) lands in optimizer_options, filled in with its defaults.
    tables = {k: v for k, v in PRESETS[name].items() if k in optimizer_registry()}
    fields = {k: v for k, v in PRESETS[name].items() if k not in tables}
    assert {k: getattr(cfg, k) for k in fields} == fields
    for optimizer, table in tables.items():
        assert cfg.optimizer_options[optimizer].items() >= table.items()
    assert cfg.max_steps or cfg.epochs  # something to train


def test_schedule_warmup_cosine_floor() -> None:
    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg, 110) == pytest.approx(0.1)
    assert lr_at(9, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, cfg, 110) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(110, cfg, 110) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_only_on_matrices() -> None:
    import torch

    from .conftest import small_model

    model = small_model()
    opt = build_optimizer(
        model, TrainConfig(optimizer_options={"adamw": {"weight_decay": 0.1}}), torch.device("cpu")
    )
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()


def test_accumulation_must_divide(make_trainer) -> None:
    with pytest.raises(UserError, match=r"--total-batch-tokens 100 is not a multiple.*4 x 16 x 1 = 64"):
        make_trainer(total_batch_tokens=100)


def test_seq_len_beyond_context(make_trainer) -> None:
    with pytest.raises(UserError, match="--seq-len 32 exceeds"):
        make_trainer(seq_len=32, total_batch_tokens=128)


def test_cpu_matmul_modes_are_core_s() -> None:
    from gpt2_core import cpu_matmul
    from gpt2_train.config import CPU_MATMUL_MODES

    assert CPU_MATMUL_MODES == cpu_matmul.MODES


def test_presets_set_only_what_differs_from_the_defaults() -> None:
    """As config.py says: a preset is its changes (gpt2-124m-fineweb spells out build-nanogpt's recipe whole)."""
    defaults = TrainConfig()
    registry = optimizer_registry()
    for name, preset in PRESETS.items():
        if name != "gpt2-124m-fineweb":
            same = [k for k, v in preset.items() if k not in registry and getattr(defaults, k) == v]
            for optimizer in registry.keys() & preset.keys():  # its table, against its options' defaults
                own = dataclasses.asdict(registry[optimizer].Options())
                same += [f"{optimizer}.{k}" for k, v in preset[optimizer].items() if own[k] == v]
            assert not same, f"preset {name} repeats defaults: {same}"
