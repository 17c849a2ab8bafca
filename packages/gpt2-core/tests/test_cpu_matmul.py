"""``gpt2_core.cpu_matmul.apply``: the route asked for, or the faster one as measured (with a mocked timer
here: no test asserts a real timing), never a slower one, and no measuring where the route cannot matter."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from gpt2_core import GPT, cpu_matmul, get_preset
from gpt2_core.errors import UserError
from gpt2_core.onednn_linear import OneDNNLinear, onednn_built

needs_onednn = pytest.mark.skipif(not onednn_built(), reason="no oneDNN fp32 linear in this build")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Measurements cached in this test's own directory, none from earlier tests in this process."""
    monkeypatch.setenv("GPT2_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_matmul, "_measured", {})
    return tmp_path / "cache" / cpu_matmul.CACHE_FILE


def nano() -> GPT:
    torch.manual_seed(0)
    return GPT(get_preset("nano"))


def routed_to_onednn(model: nn.Module) -> list[bool]:
    return [type(m) is OneDNNLinear for m in model.modules() if isinstance(m, nn.Linear)]


def fake_measure(monkeypatch: pytest.MonkeyPatch, by_rows: dict[int, dict[str, float]]) -> list[int]:
    """``measure`` returning ``by_rows[rows]``; returns the row counts it was asked for."""
    asked: list[int] = []

    def measure(shapes: object, rows: int, backward: bool) -> dict[str, float]:
        asked.append(rows)
        return by_rows[rows]

    monkeypatch.setattr(cpu_matmul, "measure", measure)
    return asked


def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(*args: object) -> None:
        raise AssertionError("measured")

    monkeypatch.setattr(cpu_matmul, "measure", measure)


def test_unknown_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--cpu-matmul must be one of auto, onednn, torch"):
        cpu_matmul.apply(nano(), "mkl")


def test_onednn_without_the_op_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_matmul, "onednn_built", lambda: False)
    with pytest.raises(UserError, match="--cpu-matmul onednn: this PyTorch build has no oneDNN"):
        cpu_matmul.apply(nano(), "onednn")
    assert cpu_matmul.apply(nano(), "auto").route == "torch"  # auto just stays on torch


@needs_onednn
def test_asked_routes_are_taken_and_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    no_measuring(monkeypatch)
    model = nano()
    assert str(cpu_matmul.apply(model, "onednn")) == "onednn (asked)"
    assert all(routed_to_onednn(model)) and len(routed_to_onednn(model)) == 9  # 2 blocks x 4 + the head
    assert cpu_matmul.apply(model, "torch").route == "torch"
    assert not any(routed_to_onednn(model))


@needs_onednn
@pytest.mark.parametrize(
    ("torch_s", "onednn_s", "route"),
    [
        (1.0, 0.5, "onednn"),
        (1.0, 0.85, "onednn"),
        (1.0, 0.95, "torch"),
        (1.0, 1.0, "torch"),
        (1.0, 2.0, "torch"),
    ],
)
def test_auto_takes_onednn_only_when_measured_clearly_faster(
    monkeypatch: pytest.MonkeyPatch, torch_s: float, onednn_s: float, route: str
) -> None:
    asked = fake_measure(monkeypatch, {512: {"torch": torch_s, "onednn": onednn_s}})
    model = nano()
    choice = cpu_matmul.apply(model, rows=512, backward=True)
    assert asked == [512]
    assert choice.route == route and choice.seconds == {512: {"torch": torch_s, "onednn": onednn_s}}
    assert routed_to_onednn(model) == [route == "onednn"] * 9
    assert "fwd+bwd" in choice.reason


@needs_onednn
def test_auto_needs_onednn_faster_at_every_row_count(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    fake_measure(monkeypatch, {1: {"torch": 1.0, "onednn": 0.5}, 8: {"torch": 1.0, "onednn": 1.2}})
    assert cpu_matmul.apply(nano(), rows=(1, 8)).route == "torch"
    monkeypatch.setattr(cpu_matmul, "_measured", {})
    (tmp_path / "file").write_text("")
    # Unwritable even as root (a file where a folder should be): measured each time.
    monkeypatch.setenv("GPT2_CACHE_DIR", str(tmp_path / "file" / "cache"))
    fake_measure(monkeypatch, {1: {"torch": 1.0, "onednn": 0.5}, 8: {"torch": 1.0, "onednn": 0.8}})
    assert cpu_matmul.apply(nano(), rows=(1, 8)).route == "onednn"


def test_no_measuring_where_the_route_cannot_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    no_measuring(monkeypatch)
    assert "bfloat16 weights" in cpu_matmul.apply(nano().to(torch.bfloat16)).reason
    assert "bfloat16 autocast" in cpu_matmul.apply(nano(), autocast=torch.bfloat16).reason
    assert "bfloat16" in cpu_matmul.apply(nano().to(torch.bfloat16), "onednn").reason  # asked, but moot
    assert cpu_matmul.apply(nn.Sequential(nn.ReLU())).reason == "no nn.Linear layers"
    assert not any(routed_to_onednn(model := nano().to(torch.bfloat16))) and model is not None


class FakeClock:
    """A timer that each product advances by its route's cost times a random factor (a noisy machine)."""

    def __init__(self, cost: dict[str, float], seed: int) -> None:
        self.now = 0.0
        self.cost = cost
        self.rng = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    def route(self, name: str, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def timed(*args: torch.Tensor | None) -> torch.Tensor:
            self.now += self.cost[name] * self.rng.uniform(0.7, 1.6)
            return fn(*args)

        return timed


@needs_onednn
@pytest.mark.parametrize("seed", range(6))
def test_auto_never_picks_onednn_where_the_mocked_timer_measured_it_slower(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    clock = FakeClock({"torch": 1.0, "onednn": rng.uniform(0.6, 1.4)}, seed)
    monkeypatch.setattr(cpu_matmul, "clock", clock)
    for name, fn in list(cpu_matmul.ROUTES.items()):
        monkeypatch.setitem(cpu_matmul.ROUTES, name, clock.route(name, fn))
    model = nano()
    choice = cpu_matmul.apply(model, rows=4, backward=rng.random() < 0.5)
    (seconds,) = choice.seconds.values()
    # Each of nano's 3 block shapes is used twice, the head once: the total weighs each shape's best.
    assert 7 * 0.7 * clock.cost["onednn"] <= seconds["onednn"] <= 7 * 1.6 * clock.cost["onednn"]
    # oneDNN only where it measured faster (by the margin); plain torch is the default, also in a near tie.
    assert (choice.route == "onednn") == (seconds["onednn"] < 0.9 * seconds["torch"])
    assert routed_to_onednn(model) == [choice.route == "onednn"] * 9


@needs_onednn
def test_measurements_are_cached_in_process_and_on_disk(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    asked = fake_measure(monkeypatch, {16: {"torch": 1.0, "onednn": 0.5}})
    assert cpu_matmul.apply(nano(), rows=16).route == "onednn"
    assert cpu_matmul.apply(nano(), rows=16).route == "onednn"
    assert asked == [16]
    (entry,) = json.loads(own_cache.read_text()).values()
    assert entry["seconds"] == {"torch": 1.0, "onednn": 0.5} and entry["key"]["rows"] == 16

    monkeypatch.setattr(cpu_matmul, "_measured", {})  # a new process on the same machine
    assert cpu_matmul.apply(nano(), rows=16).route == "onednn"
    assert asked == [16]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # another CPU, as far as oneDNN is concerned
    fake_measure(monkeypatch, {16: {"torch": 1.0, "onednn": 2.0}})
    assert cpu_matmul.apply(nano(), rows=16).route == "torch"
    assert len(json.loads(own_cache.read_text())) == 2

    own_cache.write_text("{not json")  # a damaged cache is measured again, not an error
    monkeypatch.setattr(cpu_matmul, "_measured", {})
    asked = fake_measure(monkeypatch, {16: {"torch": 1.0, "onednn": 2.0}})
    assert cpu_matmul.apply(nano(), rows=16).route == "torch" and asked == [16]


@needs_onednn
def test_auto_measures_for_real_and_is_consistent(own_cache: Path) -> None:
    model = nano()
    params = dict(model.named_parameters())
    choice = cpu_matmul.apply(model, rows=(1, 32), backward=False)
    assert choice.route in ("onednn", "torch") and set(choice.seconds) == {1, 32}
    assert (choice.route == "onednn") == cpu_matmul.onednn_is_faster(choice.seconds)
    assert all(s > 0 for by_route in choice.seconds.values() for s in by_route.values())
    assert dict(model.named_parameters()) == params
    assert own_cache.exists()
