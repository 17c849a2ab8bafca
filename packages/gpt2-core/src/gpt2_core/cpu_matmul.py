"""The route of a model's fp32 CPU matrix products: plain torch (MKL) or oneDNN, chosen by measurement.

The model holds plain ``nn.Linear`` layers; :func:`apply` is what a caller (``gpt2 train``, ``gpt2
generate``, ``gpt2 chat``, ``gpt2 serve``, a script) runs on the model it built for a run::

    choice = cpu_matmul.apply(model, "auto", rows=micro_batch * seq_len, backward=True)

- ``torch``: ``F.linear`` as PyTorch dispatches it (MKL for fp32 on x86).
- ``onednn``: every ``nn.Linear`` becomes a :class:`~gpt2_core.onednn_linear.OneDNNLinear` in place
  (parameters, ties, state-dict keys and an optimizer built before are unaffected).
- ``auto``: times the model's own Linear shapes at the run's row counts (forward, and backward when
  training) both ways, and takes oneDNN only where it is at least ``MARGIN`` faster at every row count.
  Which one wins depends on the CPU, not its vendor: on a 2-core AMD EPYC with AVX-512 oneDNN trained
  GPT-2 1.8x faster than MKL; on one with AVX2 only its training step was slower (BENCHMARKS.md).

Where the route cannot matter it stays ``torch`` without measuring: a model off the CPU or not in fp32,
bf16 autocast (PyTorch already runs bf16 products on oneDNN), a PyTorch build without the oneDNN op.
``OneDNNLinear`` itself falls back to ``F.linear`` under torch.compile, tracing and autocast.

Measurements are kept for the process and in ``cache_dir()/cpu_matmul.json``, keyed by the CPU (torch's
``cpu_capabilities``: model, instruction sets, caches), the torch version, the thread count,
``ONEDNN_MAX_CPU_ISA``, the shapes and the row counts; so a run that restarts takes the route it took,
and the next run on the machine starts without measuring. Delete the file to measure again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2_core.device import cpu_capabilities
from gpt2_core.errors import UserError
from gpt2_core.onednn_linear import OneDNNLinear, onednn_built, onednn_linear, swap_in, swap_out
from gpt2_core.paths import cache_dir

MODES = ("auto", "onednn", "torch")
ROUTES = {"torch": F.linear, "onednn": onednn_linear}
MARGIN = 0.10
"""How much faster oneDNN must measure to be chosen: best-of-3 timings on a shared 2-core machine moved by
a few percent from run to run, and a tie is not worth a second code path."""
MAX_TIMED_ROWS = 512
"""Row counts above this are timed at this many rows, to keep ``auto`` short. Not fewer: on a 2-core AVX2
EPYC, ``gpt2``'s products at 128 rows measured oneDNN level with MKL (958 vs 972 ms) while its training
step at 512 rows was 15-18% slower through oneDNN (BENCHMARKS.md); its weight gradients of the 50257-wide
head fall behind MKL's as rows grow."""
REPEATS = 3
"""Timed passes per route and shape; the best counts (the first one also builds oneDNN's kernels)."""
CACHE_FILE = "cpu_matmul.json"

Shape = tuple[int, int, bool]
"""(in_features, out_features, has bias) of a Linear layer."""

clock: Callable[[], float] = time.perf_counter
"""The timer (tests replace it)."""
_measured: dict[str, dict[str, float]] = {}


@dataclass(frozen=True)
class Choice:
    """What :func:`apply` did: the route taken, why, and the seconds measured when ``auto`` timed it."""

    route: str
    """``onednn`` or ``torch``."""
    reason: str
    seconds: dict[int, dict[str, float]] | None = None
    """Row count -> route -> seconds of one pass over the model's Linear layers (``auto`` only)."""

    def __str__(self) -> str:
        return f"{self.route} ({self.reason})"


def apply(
    model: nn.Module,
    mode: str = "auto",
    *,
    rows: int | Sequence[int] = 1,
    backward: bool = False,
    autocast: torch.dtype | None = None,
) -> Choice:
    """Route ``model``'s ``nn.Linear`` products as ``mode`` says (see the module docstring), in place.

    ``rows``: the rows one product sees in this run (micro-batch x sequence length for training, 1 for
    batch-1 decoding; several for a server whose batch varies). ``backward``: whether the run trains.
    ``autocast``: the autocast dtype the run computes in, if any. Applying again re-decides (``torch``
    undoes an earlier ``onednn``). Raises ``UserError`` for an unknown mode, or ``onednn`` on a PyTorch
    build without the op.
    """
    check_mode(mode)
    swap_out(model)
    if mode == "torch":
        return Choice("torch", "asked")
    moot = _route_is_moot(model, autocast)
    if moot:
        return Choice("torch", moot)
    if mode == "onednn":
        swap_in(model)
        return Choice("onednn", "asked")
    row_counts = [rows] if isinstance(rows, int) else list(rows)
    shapes = linear_shapes(model)
    seconds = {n: cached_measure(shapes, n, backward) for n in row_counts}
    faster = onednn_is_faster(seconds)
    if faster:
        swap_in(model)
    what = "fwd+bwd" if backward else "fwd"
    measured = ", ".join(
        f"{min(n, MAX_TIMED_ROWS)} rows {what}: oneDNN {s['onednn'] * 1e3:.1f} ms, torch {s['torch'] * 1e3:.1f} ms"
        for n, s in seconds.items()
    )
    return Choice("onednn" if faster else "torch", f"measured {measured}", seconds)


def route_of(model: nn.Module) -> str:
    """``onednn`` if :func:`apply` routed ``model``'s products through oneDNN, else ``torch``."""
    return "onednn" if any(isinstance(m, OneDNNLinear) for m in model.modules()) else "torch"


def check_mode(mode: str) -> None:
    """Raise ``UserError`` for a mode that is not one of ``MODES``, or ``onednn`` where it cannot run."""
    if mode not in MODES:
        raise UserError(f"--cpu-matmul must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "onednn" and not onednn_built():
        raise UserError(
            "--cpu-matmul onednn: this PyTorch build has no oneDNN linear op (x86 builds have it); "
            "use auto or torch"
        )


def onednn_is_faster(seconds: dict[int, dict[str, float]]) -> bool:
    """Whether oneDNN measured at least ``MARGIN`` faster than torch at every row count."""
    return all(s["onednn"] < (1 - MARGIN) * s["torch"] for s in seconds.values())


def _route_is_moot(model: nn.Module, autocast: torch.dtype | None) -> str | None:
    """Why the route cannot matter for ``model`` (a reason to stay on torch), or None."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    if not weights:
        return "no nn.Linear layers"
    if not onednn_built():
        return "no oneDNN linear op in this PyTorch build"
    devices = {w.device.type for w in weights}
    if devices != {"cpu"}:
        return f"the model is on {', '.join(sorted(devices))}"
    dtypes = {w.dtype for w in weights}
    if dtypes != {torch.float32}:
        return f"{', '.join(sorted(str(d).removeprefix('torch.') for d in dtypes))} weights, not fp32"
    if autocast is not None:
        return f"{str(autocast).removeprefix('torch.')} autocast, not fp32"
    return None


def linear_shapes(model: nn.Module) -> Counter[Shape]:
    """How many ``nn.Linear`` layers of each (in, out, bias) shape ``model`` holds."""
    return Counter(
        (m.in_features, m.out_features, m.bias is not None)
        for m in model.modules()
        if isinstance(m, nn.Linear)
    )


def cached_measure(shapes: Counter[Shape], rows: int, backward: bool) -> dict[str, float]:
    """:func:`measure`, or what it gave before for the same key (this process, then the cache file)."""
    key = _cache_key(shapes, rows, backward)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    if digest not in _measured:
        path = cache_dir() / CACHE_FILE
        stored = _read_cache(path)
        seconds = stored.get(digest, {}).get("seconds")
        if not (isinstance(seconds, dict) and set(seconds) == set(ROUTES)):
            seconds = measure(shapes, rows, backward)
            stored[digest] = {"key": key, "seconds": seconds}
            _write_cache(path, stored)
        _measured[digest] = seconds
    return _measured[digest]


def measure(shapes: Counter[Shape], rows: int, backward: bool, repeats: int = REPEATS) -> dict[str, float]:
    """Route -> wall seconds of one pass over ``shapes`` (each shape times its count) at ``rows`` rows,
    capped at ``MAX_TIMED_ROWS``: forward, plus backward to input, weight and bias when ``backward``.

    Each shape's time is the best of ``repeats``, the routes alternating so that a noisy neighbour slows
    both alike. Inputs are fp32 CPU tensors of their own; no model is touched.
    """
    rows = min(rows, MAX_TIMED_ROWS)
    gen = torch.Generator().manual_seed(0)
    total = dict.fromkeys(ROUTES, 0.0)
    for (n_in, n_out, has_bias), count in shapes.items():
        # Speed does not depend on the values (none are subnormal); filling is faster than drawing them.
        x = torch.randn(rows, n_in, generator=gen)
        w = torch.full((n_out, n_in), 0.02)
        b = torch.zeros(n_out) if has_bias else None
        grad = torch.full((rows, n_out), 1e-3) if backward else None
        best = dict.fromkeys(ROUTES, math.inf)
        for r in range(repeats):
            for route in list(ROUTES) if r % 2 else reversed(ROUTES):
                start = clock()
                _product(ROUTES[route], x, w, b, grad)
                best[route] = min(best[route], clock() - start)
        for route in ROUTES:
            total[route] += count * best[route]
    return total


def _product(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    grad: torch.Tensor | None,
) -> None:
    """One Linear product by ``fn``; with ``grad``, its backward to all three inputs too."""
    if grad is None:
        with torch.no_grad():
            fn(x, w, b)
        return
    leaves = [None if t is None else t.detach().requires_grad_() for t in (x, w, b)]
    # A scalar to call backward() on, as training does: backward(grad) would make torch import sympy
    # (seconds, once per process) to check the gradient's shape.
    (fn(*leaves) * grad).sum().backward()


def _cache_key(shapes: Counter[Shape], rows: int, backward: bool) -> dict[str, object]:
    return {
        "cpu": dict(cpu_capabilities()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "shapes": sorted([*shape, count] for shape, count in shapes.items()),
        "rows": min(rows, MAX_TIMED_ROWS),
        "backward": backward,
    }


def _read_cache(path: Path) -> dict[str, dict]:
    """The cache file's entries; none when it is missing or unreadable (it is only a cache)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, dict]) -> None:
    from gpt2_core.weights import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, entries)
    except OSError:
        pass  # a read-only cache directory: measure again next time
