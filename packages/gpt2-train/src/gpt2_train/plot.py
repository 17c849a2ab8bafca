"""``gpt2 plot``: a run's curves as a picture, several runs overlaid to compare recipes.

Reads what the jsonl logger wrote (``RUN/metrics.jsonl``) and the run's config (the ``config`` text in
``RUN/texts.jsonl``, else a checkpoint's ``state.json``) for the tokens per step; draws training and val loss,
and HellaSwag accuracy when the run measured it, against tokens seen, with matplotlib's headless Agg backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpt2_core.errors import UserError

HELLASWAG = "eval/hellaswag_acc_norm"


def read_metrics(run: Path) -> list[dict[str, float]]:
    """The rows of ``run/metrics.jsonl`` (a last line a kill cut short is skipped).

    Raises ``UserError`` when the run directory or its metrics.jsonl is missing.
    """
    path = run / "metrics.jsonl"
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    if not path.is_file():
        raise UserError(f"{run}: no metrics.jsonl (every run writes one; is this a run directory?)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def tokens_per_step(run: Path) -> int | None:
    """``total_batch_tokens`` of the run's config, or None when the run directory does not say."""
    texts = run / "texts.jsonl"
    if texts.is_file():
        for line in texts.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                if row.get("tag") == "config":
                    return int(json.loads(row["text"])["total_batch_tokens"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    for state in sorted(run.glob("step_*/state.json"), reverse=True):
        try:
            return int(json.loads(state.read_text())["config"]["total_batch_tokens"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return None


def series(rows: list[dict[str, float]], key: str, scale: int) -> tuple[list[float], list[float]]:
    """(x, y) of ``key`` over the rows that hold it: x is the step times ``scale`` (tokens per step), or, counting
    tokens (``scale`` > 1), the tokens trained by that step where the run logged them (``train/tokens``: fewer
    than steps x batch during a batch-size warm-up)."""
    logged = {r["step"]: r["train/tokens"] for r in rows if "train/tokens" in r} if scale > 1 else {}
    points = [(logged.get(r["step"], r["step"] * scale), r[key]) for r in rows if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(runs: list[Path], out: Path | None = None) -> Any:
    """Draw ``runs`` (run directories) on one figure and save it to ``out`` (PNG, SVG, PDF: by its suffix).

    Left: training loss (thin line) and val loss (markers) against tokens seen; right, when any run has
    HellaSwag points: acc_norm against tokens. Lines are labelled ``NAME train``, ``NAME val`` and
    ``NAME hellaswag``, NAME being the run directory's name. Returns the matplotlib Figure.

    Raises ``UserError`` when a run has no metrics.jsonl. A run whose config is not found is drawn
    against steps, and the x axis says so.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a cluster node or in CI
    import matplotlib.pyplot as plt

    data = [(run, read_metrics(run), tokens_per_step(run)) for run in runs]
    with_hellaswag = any(HELLASWAG in r for _, rows, _ in data for r in rows)
    fig, axes = plt.subplots(1, 2 if with_hellaswag else 1, figsize=(11 if with_hellaswag else 6.5, 4.2))
    loss_ax = axes[0] if with_hellaswag else axes
    unit = "tokens" if all(tps for *_, tps in data) else "steps"
    for i, (run, rows, tps) in enumerate(data):
        color = f"C{i % 10}"
        name = run.resolve().name
        scale = tps if unit == "tokens" and tps else 1
        loss_ax.plot(
            *series(rows, "train/loss", scale), color=color, lw=0.8, alpha=0.8, label=f"{name} train"
        )
        x, y = series(rows, "val/loss", scale)
        if x:
            loss_ax.plot(x, y, color=color, marker="o", ms=4, lw=1.5, ls="--", label=f"{name} val")
        if with_hellaswag:
            x, y = series(rows, HELLASWAG, scale)
            if x:
                axes[1].plot(x, y, color=color, marker="o", ms=4, label=f"{name} hellaswag")
    from matplotlib.ticker import EngFormatter

    for ax in fig.axes:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 400k tokens, 10G tokens
    loss_ax.set(xlabel=unit, ylabel="loss (nats/token)", title="loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    if with_hellaswag:
        axes[1].set(xlabel=unit, ylabel="acc_norm", title="HellaSwag")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
    return fig
