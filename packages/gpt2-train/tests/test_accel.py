"""The GPU speed-up flags: refusals on the wrong hardware (everywhere), and the real paths (CUDA only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gpt2_core import cpu_matmul
from gpt2_core.errors import UserError
from gpt2_core.onednn_linear import OneDNNLinear, onednn_built
from gpt2_train import accel
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, small_config, small_model


def test_fp8_is_refused_off_gpu(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, fp8=True)
    with pytest.raises(UserError, match="--fp8 needs an NVIDIA GPU"):
        Trainer(cfg, model=small_model(), train_source=CountingSource())


def test_compile_defaults_to_cuda_only_and_is_honoured_on_cpu(tmp_path: Path) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not accel.compiles(small_config(tmp_path), cpu) and accel.compiles(small_config(tmp_path), cuda)
    assert accel.compiles(small_config(tmp_path, compile=True), cpu)
    assert not accel.compiles(small_config(tmp_path, compile=False), cuda)
    model = small_model()
    assert accel.apply(model, small_config(tmp_path), cpu) is model
    compiled = accel.apply(model, small_config(tmp_path, compile=True), cpu)
    assert compiled is not model and compiled._orig_mod is model  # traced lazily: nothing compiled yet


LINEARS = 5
"""``small_model``'s nn.Linear layers: one block of four, and the head."""


def onednn_layers(model: torch.nn.Module) -> int:
    return sum(type(m) is OneDNNLinear for m in model.modules())


@pytest.mark.skipif(not onednn_built(), reason="no oneDNN fp32 linear in this build")
def test_cpu_matmul_route_is_applied_for_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    model = small_model()
    assert accel.apply(model, small_config(tmp_path, cpu_matmul="onednn"), cpu) is model
    assert onednn_layers(model) == LINEARS and cpu_matmul.route_of(model) == "onednn"
    accel.apply(model, small_config(tmp_path, cpu_matmul="torch"), cpu)
    assert onednn_layers(model) == 0

    asked = []

    def measure(shapes: object, rows: int, backward: bool) -> dict[str, float]:
        asked.append((rows, backward))
        return {"torch": 1.0, "onednn": 0.5}

    monkeypatch.setenv("GPT2_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_matmul, "_measured", {})
    monkeypatch.setattr(cpu_matmul, "measure", measure)
    accel.apply(model, small_config(tmp_path), cpu)  # auto, at this run's micro-batch rows, training
    assert asked == [(4 * 16, True)] and onednn_layers(model) == LINEARS
    accel.apply(
        model, small_config(tmp_path), cpu, autocast=torch.bfloat16
    )  # bf16 autocast: moot, not measured
    assert asked == [(4 * 16, True)] and onednn_layers(model) == 0
    monkeypatch.setattr(torch, "compile", lambda m: m)  # compiled graphs choose their own kernels
    accel.apply(model, small_config(tmp_path, cpu_matmul="onednn", compile=True), cpu)
    assert onednn_layers(model) == 0


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    x, y = CountingSource().next_batch()
    grads = []
    for recompute in (False, True):
        model = small_model(seed=3)
        model.activation_checkpointing = recompute
        _, loss = model(x, y)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.cuda
def test_cuda_fast_path_learns(tmp_path: Path) -> None:
    """bf16 autocast, TF32, fused AdamW and torch.compile together, as gpt2 train runs on a GPU."""
    cfg = small_config(tmp_path, device="cuda", max_steps=30, compile=True)
    tr = Trainer(cfg, model=small_model(), train_source=CountingSource(cfg.micro_batch, cfg.seq_len, seed=1))
    assert tr.autocast_dtype is torch.bfloat16
    assert tr.optimizer.defaults.get("fused")
    result = tr.fit()
    assert result.last_loss < 3.0


@pytest.mark.cuda
def test_fp8_on_gpu(tmp_path: Path) -> None:
    """Accepted and learning on Ada/Hopper with torchao; refused with the capability named elsewhere."""
    capable = torch.cuda.get_device_capability() >= accel.FP8_MIN_CAPABILITY
    # float8 GEMMs need 16-divisible shapes: a wider model than the CPU tests use.
    model = small_model(n_embd=64, n_head=4, n_layer=2, block_size=32)
    cfg = small_config(tmp_path, device="cuda", fp8=True, max_steps=30, seq_len=32, total_batch_tokens=256)
    if not capable:
        with pytest.raises(UserError, match="compute capability"):
            Trainer(cfg, model=model, train_source=CountingSource(cfg.micro_batch, cfg.seq_len))
        return
    pytest.importorskip("torchao")
    tr = Trainer(cfg, model=model, train_source=CountingSource(cfg.micro_batch, cfg.seq_len, seed=1))
    assert any("Float8" in type(m).__name__ for m in tr.model.modules())
    assert tr.fit().last_loss < 3.5


def preset_steps(model_name: str, device: str, steps: int, lr: float, tmp_path: Path) -> list[float]:
    """The losses of ``steps`` steps at ``lr`` of preset ``model_name`` built and wrapped as the trainer does,
    on learnable batches (bf16 autocast on a GPU; no checkpoint written)."""
    from gpt2_core.model import GPT
    from gpt2_core.presets import get_preset
    from gpt2_train.distributed import DistEnv
    from gpt2_train.optimizers import build_optimizer
    from gpt2_train.parallel import parallelize
    from gpt2_train.precision import autocast_dtype
    from gpt2_train.step import TrainStep

    env = DistEnv(device=torch.device(device))
    torch.manual_seed(0)
    with env.device:  # built where it trains: gpt2-xl's 6 GB of weights never pass through CPU memory
        model = GPT(get_preset(model_name))
    seq_len = min(256, model.config.block_size)
    shape = dict(micro_batch=4, seq_len=seq_len, total_batch_tokens=4 * seq_len)
    # Eager (whether it trains, not how fast: the bench times the compiled step), no CPU route measured.
    cfg = small_config(tmp_path, device=device, compile=False, cpu_matmul="torch", **shape)
    dtype = autocast_dtype(cfg.precision, env.device)
    wrapped = parallelize(model, cfg, env, autocast=dtype)
    step = TrainStep(
        wrapped,
        build_optimizer(model, cfg, env.device),
        grad_accum=1,
        grad_clip=cfg.grad_clip,
        device=env.device,
        autocast_dtype=dtype,
    )
    source = CountingSource(cfg.micro_batch, cfg.seq_len, seed=1)
    return [float(step(source, lr).loss) for _ in range(steps)]


def test_a_preset_trains_in_steps_built_as_the_trainer_builds_them(tmp_path: Path) -> None:
    """The CPU counterpart of the gpt2-xl check below: the same code path, on the nano preset."""
    losses = preset_steps("nano", "cpu", 3, 1e-3, tmp_path)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.cuda
@pytest.mark.slow
def test_gpt2_xl_trains_on_one_gpu(tmp_path: Path) -> None:
    """gpt2-xl (1.56B parameters, fp32 weights and AdamW state: about 25 GB) trains on one GPU: finite losses
    that fall. Its speed is a figure of bench/gpu_acceptance.py."""
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("gpt2-xl with AdamW needs a GPU of 40 GiB or more")
    losses = preset_steps("gpt2-xl", "cuda", 10, 1e-4, tmp_path)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
