"""Optimizers by name (adamw, muon, a plugin's), the schedules (cosine, wsd, constant), training longer from a
WSD run's stable checkpoint, and early stopping."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_train.config import TrainConfig
from gpt2_train.config_layers import build_config
from gpt2_train.muon import Muon
from gpt2_train.optim import Optimizers, lr_at, muon_split, wsd_decay_start
from gpt2_train.optimizers import (
    MuonOptions,
    OptimizerPlugin,
    build_optimizer,
    optimizer_plugin,
    optimizer_registry,
)
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, small_config, small_model


def trainer(run_dir: Path, **overrides: object) -> Trainer:
    cfg = small_config(run_dir, **overrides)
    return Trainer(
        cfg,
        model=small_model(n_layer=2),
        train_source=CountingSource(4, 16, seed=1),
        val_source=CountingSource(4, 16, seed=2),
    )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_losses(run_dir: Path) -> list[float]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["train/loss"] for r in rows if "train/loss" in r]


def assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- optimizers -----------------------------------------------------------------------------------------


def test_builtins_are_registered_and_unknown_names_listed() -> None:
    registry = optimizer_registry()
    assert {"adamw", "muon"} <= set(registry)
    with pytest.raises(UserError, match=r"--optimizer: unknown optimizer 'sgd'; available: .*adamw.*muon"):
        build_optimizer(small_model(), TrainConfig(optimizer="sgd"), torch.device("cpu"))


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest() -> None:
    model = small_model(n_layer=2)
    muon, adamw = muon_split(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in muon) == sorted(
        f"transformer.h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    )
    assert "transformer.wte.weight" in {names[id(p)] for p in adamw}  # the tied head with it
    assert "transformer.wpe.weight" in {names[id(p)] for p in adamw}
    assert len(muon) + len(adamw) == len(list(model.parameters()))

    muon_options = dict(muon_lr=0.04, muon_momentum=0.9, muon_weight_decay=0.01)
    cfg = TrainConfig(optimizer="muon", lr=1e-3, optimizer_options={"muon": muon_options})
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, Optimizers)
    m, a = opt.optimizers
    assert isinstance(m, torch.optim.Muon) and isinstance(a, torch.optim.AdamW)
    (group,) = m.param_groups
    assert group["lr_scale"] == pytest.approx(40.0)  # the schedule's lr (AdamW's) times 40 = --muon-lr
    assert group["momentum"] == 0.9 and group["weight_decay"] == 0.01 and group["nesterov"]
    decayed, plain = a.param_groups
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert a.defaults["fused"]


def test_muon_groups_follow_the_schedule_at_their_own_scale(tmp_path: Path) -> None:
    muon_options = {"muon": {"muon_lr": 0.02}}
    tr = trainer(tmp_path / "run", optimizer="muon", lr=1e-3, optimizer_options=muon_options, max_steps=1)
    tr.fit()
    muon, adamw = tr.optimizer.optimizers
    lr = lr_at(0, tr.cfg, 1)
    assert muon.param_groups[0]["lr"] == pytest.approx(lr * 20)
    assert all(g["lr"] == pytest.approx(lr) for g in adamw.param_groups)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])  # torch's Muon step, and ours in fp32
def test_muon_learns_and_resumes_bit_identical(tmp_path: Path, precision: str) -> None:
    ref = trainer(tmp_path / "ref", optimizer="muon", max_steps=8, precision=precision)
    ref.fit()
    assert ref.optimizer.optimizers[0].ns_dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    losses = train_losses(tmp_path / "ref")
    assert losses[-1] < losses[0] - 0.3

    trainer(
        tmp_path / "run", optimizer="muon", max_steps=8, checkpoint_every_steps=3, precision=precision
    ).fit()
    # A later run killed after step 3 leaves step_3 as the newest finished checkpoint; resume from it.
    resumed = trainer(
        tmp_path / "run",
        optimizer="muon",
        max_steps=8,
        precision=precision,
        resume=str(tmp_path / "run" / "step_00000003"),
    )
    resumed.fit()
    assert resumed.step == 8
    assert_equal(weights(resumed.model), weights(ref.model))
    for a, b in zip(ref.optimizer.optimizers, resumed.optimizer.optimizers, strict=True):
        for sa, sb in zip(a.state.values(), b.state.values(), strict=True):
            for k in sa:
                assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k


def test_muon_momentum_warm_up_is_a_function_of_the_step() -> None:
    ramp = MuonOptions(muon_momentum_warmup_steps=4, muon_momentum_start=0.85, muon_momentum=0.95)
    assert [ramp.momentum_at(s) for s in range(7)] == pytest.approx(
        [0.85, 0.875, 0.9, 0.925, 0.95, 0.95, 0.95]
    )
    assert ramp.momentum_at(0) == 0.85 and ramp.momentum_at(4) == 0.95  # the ends exactly
    assert {MuonOptions(muon_momentum=0.9).momentum_at(s) for s in (0, 1, 300)} == {0.9}  # no warm-up


def test_muon_momentum_warm_up_follows_the_step_and_resumes_bit_identical(tmp_path: Path) -> None:
    """The momentum each step runs with (in Muon's param groups, where every --parallel mode's step reads it)
    follows the warm-up, and a run resumed inside the warm-up sets what the uninterrupted one did (cautious
    weight decay on, so that it resumes bit-identical too)."""
    muon = {"muon_momentum_warmup_steps": 4, "muon_weight_decay": 0.1, "muon_cautious_weight_decay": True}
    opts = dict(optimizer="muon", optimizer_options={"muon": muon}, max_steps=6)

    def momenta(tr: Trainer) -> list[float]:
        seen: list[float] = []
        tr.optimizer.register_step_post_hook(lambda opt, *_: seen.append(opt.param_groups[0]["momentum"]))
        return seen

    ref = trainer(tmp_path / "run", checkpoint_every_steps=2, **opts)
    ref_momenta = momenta(ref)
    ref.fit()
    assert ref_momenta == [MuonOptions(**muon).momentum_at(s) for s in range(6)]
    assert ref_momenta[0] == 0.85 and ref_momenta[4:] == [0.95, 0.95]
    assert ref.optimizer.optimizers[0].param_groups[0]["cautious_weight_decay"]

    resumed = trainer(tmp_path / "run", resume=str(tmp_path / "run" / "step_00000002"), **opts)
    resumed_momenta = momenta(resumed)
    resumed.fit()
    assert resumed.step == 6 and resumed_momenta == ref_momenta[2:]
    assert_equal(weights(resumed.model), weights(ref.model))


@pytest.mark.parametrize("ns_dtype", [torch.float32, torch.bfloat16])  # ours; torch's step without the mask
def test_cautious_weight_decay_spares_the_weights_the_update_pushes_away_from_zero(
    ns_dtype: torch.dtype,
) -> None:
    """A diagonal gradient orthogonalises to a multiple of itself, so the update's signs are the gradient's:
    with momentum 0, update * weight is [[+, 0], [0, -]] here. The decay applies where that is >= 0
    (modded-nanogpt's and nanochat's mask) and spares the last weight, which the update moves away from 0."""
    w0 = torch.tensor([[2.0, -1.0], [3.0, 4.0]])
    lr, wd = 0.1, 0.5

    def step(cautious: bool) -> torch.Tensor:
        w = torch.nn.Parameter(w0.clone())
        w.grad = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
        opt = Muon(
            [w], lr=lr, momentum=0.0, weight_decay=wd, ns_dtype=ns_dtype, cautious_weight_decay=cautious
        )
        opt.step()
        return w.detach()

    plain, cautious = step(False), step(True)
    spared = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(cautious - plain, lr * wd * w0 * spared)  # [[0, 0], [0, 0.2]]
    assert torch.equal(cautious[spared == 0], plain[spared == 0])  # decayed as plain decay does, bit for bit


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor needs a C++ compiler"
)
def test_muon_trains_a_compiled_model_as_the_eager_one(tmp_path: Path) -> None:
    """--compile --optimizer muon: Muon and AdamW split the parameters the compiled model shares with the plain
    one, so the run follows the eager run within inductor's rounding, and its checkpoints keep the plain names."""
    import torch._dynamo

    torch._dynamo.reset()
    opts = dict(optimizer="muon", precision="fp32", max_steps=4)
    eager = trainer(tmp_path / "eager", **opts)
    eager.fit()
    compiled = trainer(tmp_path / "compiled", compile=True, **opts)
    compiled.fit()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    a, b = train_losses(tmp_path / "compiled"), train_losses(tmp_path / "eager")
    assert len(a) == 4 and all(abs(x - y) < 1e-4 for x, y in zip(a, b, strict=True)), (a, b)
    saved = GPT.from_pretrained(tmp_path / "compiled" / "latest").state_dict()
    for name, value in weights(eager.model).items():
        torch.testing.assert_close(saved[name], value, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("first", "then"), [("adamw", "muon"), ("muon", "adamw")])
def test_resuming_with_another_optimizer_is_refused(tmp_path: Path, first: str, then: str) -> None:
    trainer(tmp_path / "run", optimizer=first, max_steps=2).fit()
    other = trainer(tmp_path / "run", optimizer=then, max_steps=4, resume="latest")
    with pytest.raises(UserError, match=f"trained with --optimizer {first}, this run has --optimizer {then}"):
        other.start()
    other.close()


def test_an_optimizer_is_refused_in_one_line_under_a_parallel_mode_it_does_not_support() -> None:
    class DdpOnly(OptimizerPlugin):
        """Whole matrices only."""

        parallel = ("ddp",)

    cfg = TrainConfig(optimizer="ddp-only", parallel="fsdp")
    with pytest.raises(UserError) as e:
        optimizer_plugin(cfg, {"ddp-only": DdpOnly})
    assert str(e.value) == "--optimizer ddp-only does not work with --parallel fsdp; use --parallel ddp"
    assert optimizer_plugin(TrainConfig(optimizer="muon", parallel="fsdp")).parallel is None  # Muon: any


def test_a_plugin_optimizer_is_built_from_the_registry(tmp_path: Path) -> None:
    seen = {}

    def sgd(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
        seen["device"] = device
        return torch.optim.SGD(model.parameters(), lr=config.lr)

    cfg = small_config(tmp_path / "run", optimizer="sgd")
    opt = build_optimizer(small_model(), cfg, torch.device("cpu"), registry={"sgd": sgd})
    assert isinstance(opt, torch.optim.SGD) and seen["device"] == torch.device("cpu")


# --- schedules ------------------------------------------------------------------------------------------


def test_wsd_warms_up_holds_then_decays_over_the_last_fraction() -> None:
    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, lr_schedule="wsd", decay_fraction=0.2)
    assert wsd_decay_start(cfg, 100) == 80
    assert lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert [lr_at(s, cfg, 100) for s in (9, 10, 50, 79)] == [1.0] * 4
    assert lr_at(90, cfg, 100) == pytest.approx(0.55)  # half-way down, linear
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)
    sqrt = TrainConfig(
        lr=1.0, min_lr_ratio=0.0, warmup_steps=10, lr_schedule="wsd", decay_fraction=0.2, decay_shape="1-sqrt"
    )
    assert lr_at(85, sqrt, 100) == pytest.approx(1 - 0.25**0.5)  # a quarter of the way: 1 - sqrt(1/4)
    assert lr_at(100, sqrt, 100) == 0.0


def test_constant_schedule() -> None:
    cfg = TrainConfig(lr=0.5, warmup_steps=4, lr_schedule="constant")
    assert lr_at(1, cfg, 50) == pytest.approx(0.25)
    assert {lr_at(s, cfg, 50) for s in range(3, 60)} == {0.5}


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"lr_schedule": "linear"}, "--lr-schedule"),
        ({"decay_fraction": 0.0}, "--decay-fraction"),
        ({"decay_shape": "cosine"}, "--decay-shape"),
        ({"muon_lr": 0.0}, "--muon-lr"),
        ({"muon_momentum": 1.0}, "--muon-momentum"),
        ({"muon_adjust_lr": "spectral"}, "--muon-adjust-lr"),
        ({"muon_momentum_warmup_steps": -1}, "--muon-momentum-warmup-steps"),
        ({"muon_momentum_start": 1.0}, "--muon-momentum-start"),
        ({"early_stop_patience": -1}, "--early-stop-patience"),
    ],
)
def test_validation_names_the_flag(options: dict, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        build_config(overrides={"optimizer": "muon", **options})


def test_cautious_weight_decay_without_weight_decay_is_refused_naming_both_flags() -> None:
    with pytest.raises(UserError) as e:
        build_config(overrides={"optimizer": "muon", "muon_cautious_weight_decay": True})
    assert str(e.value) == (
        "--muon-cautious-weight-decay masks --muon-weight-decay, which is 0: give a positive "
        "--muon-weight-decay, or leave --muon-cautious-weight-decay off"
    )
    on = {"optimizer": "muon", "muon_cautious_weight_decay": True, "muon_weight_decay": 0.1}
    assert build_config(overrides=on).optimizer_options["muon"]["muon_cautious_weight_decay"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon", "muon-warmup"])
def test_wsd_run_extended_from_its_stable_checkpoint_equals_a_longer_run(
    tmp_path: Path, optimizer: str
) -> None:
    """8 steps with the last quarter decaying keep step 6 (the end of the stable phase); resumed from there to
    16 steps, the run ends bit-identical to one planned for 16 steps from the start (with Muon's momentum
    still warming up at step 6 in ``muon-warmup``)."""
    options = {"muon": {"muon_momentum_warmup_steps": 10}} if optimizer == "muon-warmup" else {}
    wsd = dict(
        lr_schedule="wsd",
        decay_fraction=0.25,
        optimizer=optimizer.removesuffix("-warmup"),
        optimizer_options=options,
    )
    short = trainer(tmp_path / "run", max_steps=8, keep=1, **wsd)
    short.fit()
    stable = tmp_path / "run" / "stable"
    assert os.readlink(stable) == "step_00000006" and (tmp_path / "run" / "step_00000008").is_dir()
    longer = trainer(tmp_path / "run", max_steps=16, keep=1, resume=str(stable), **wsd)
    longer.fit()
    assert os.readlink(stable) == "step_00000012"  # the longer run's own stable end
    straight = trainer(tmp_path / "straight", max_steps=16, **wsd)
    straight.fit()
    assert_equal(weights(longer.model), weights(straight.model))


# --- early stopping -------------------------------------------------------------------------------------


def test_early_stop_after_patience_keeps_the_best(tmp_path: Path, capsys) -> None:
    # A min-delta no improvement reaches: every val loss after the first counts as no better.
    tr = trainer(
        tmp_path / "run",
        max_steps=20,
        eval_every=2,
        eval_batches=2,
        early_stop_patience=3,
        early_stop_min_delta=10.0,
    )
    result = tr.fit()
    assert result.stopped_early and result.step == 8  # evals at 2 (the first best), 4, 6, 8
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("early stop"))
    assert f"best checkpoint: {tmp_path / 'run' / 'best'}" in line
    vals = {
        r["step"]: r["val/loss"]
        for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if "val/loss" in r
    }
    best_step = min(vals, key=vals.get)
    assert os.readlink(tmp_path / "run" / "best") == f"step_{best_step:08d}"
    assert json.loads((tmp_path / "run" / "latest" / "state.json").read_text())["evals_since_best"] == 3


def test_early_stop_patience_survives_a_resume(tmp_path: Path) -> None:
    opts = dict(eval_every=2, eval_batches=2, early_stop_patience=3, early_stop_min_delta=10.0)
    trainer(tmp_path / "run", max_steps=6, **opts).fit()  # evals at 2, 4, 6: two without a better one
    resumed = trainer(tmp_path / "run", max_steps=20, resume="latest", **opts)
    result = resumed.fit()
    assert result.stopped_early and result.step == 8


def test_muon_in_another_dtype_is_torchs_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our step with its Newton-Schulz iteration put back in bf16 equals torch's Muon bit for bit (momentum,
    Nesterov, the iteration, the lr adjustment, weight decay); its state loads into torch's Muon."""
    from gpt2_train import muon

    iterate = muon.newton_schulz
    monkeypatch.setattr(muon, "newton_schulz", lambda u, c, s, e, dtype: iterate(u, c, s, e, torch.bfloat16))
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 64), (32, 32)]
    ours_params = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    torch_params = [torch.nn.Parameter(p.detach().clone()) for p in ours_params]
    settings = dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01)
    for adjust in ("original", "match_rms_adamw"):
        ours = muon.Muon(ours_params, ns_dtype=torch.float32, adjust_lr_fn=adjust, **settings)
        theirs = torch.optim.Muon(torch_params, adjust_lr_fn=adjust, **settings)
        for _ in range(3):
            for a, b in zip(ours_params, torch_params, strict=True):
                a.grad = torch.randn_like(a)
                b.grad = a.grad.clone()
            ours.step()
            theirs.step()
        for a, b in zip(ours_params, torch_params, strict=True):
            assert torch.equal(a, b), adjust
        theirs.load_state_dict(ours.state_dict())


def test_an_untied_head_goes_to_adamw_and_is_weight_decayed() -> None:
    """modded-nanogpt and nanochat give their untied head to AdamW; it is a matrix, so it is decayed."""
    model = small_model(n_layer=2, tie_word_embeddings=False)
    names = {id(p): n for n, p in model.named_parameters()}
    muon, adamw = muon_split(model)
    assert "lm_head.weight" not in {names[id(p)] for p in muon}
    assert {"lm_head.weight", "transformer.wte.weight"} <= {names[id(p)] for p in adamw}
    assert len(muon) + len(adamw) == len(list(model.parameters()))
    for optimizer in ("adamw", "muon"):
        built = build_optimizer(model, TrainConfig(optimizer=optimizer), torch.device("cpu"))
        adam = built.optimizers[-1] if isinstance(built, Optimizers) else built
        decayed, plain = adam.param_groups
        assert decayed["weight_decay"] > 0 and plain["weight_decay"] == 0
        assert "lm_head.weight" in {names[id(p)] for p in decayed["params"]}, optimizer
