"""Training-curve plots, written as PNG (no display needed).

Drawn on a bare ``Figure`` with the Agg canvas rather than through pyplot, so vlmtl never picks
or changes the user's matplotlib backend (``matplotlib.use``) and leaves no figure open in
pyplot's registry: a library must not change its host's global state.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_training_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """One line per loss key of ``history`` (a list of ``{"step": s, "<task>": loss, ...}``),
    raw in light colour and smoothed on top; the learning rate on a second panel. Measurements
    named with a slash (``adapter/...``) are not losses and are left to their own plots."""
    path = Path(path)
    keys = sorted({k for row in history for k in row if k not in ("step", "lr") and "/" not in k})
    fig = Figure(figsize=(8, 6))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: PNG rendering without any backend selection
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, key in enumerate(keys):
        points = [(row["step"], row[key]) for row in history if key in row]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        color = f"C{i}"
        ax_loss.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        ax_loss.plot(steps, _smooth(list(values), max(1, len(values) // 25)), color=color, label=key)
    if all(row[k] > 0 for row in history for k in keys if k in row):
        ax_loss.set_yscale("log")  # task losses differ by orders of magnitude
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right")
    ax_loss.grid(alpha=0.3)
    ax_loss.set_title(title or "training curves")
    lr_points = [(row["step"], row["lr"]) for row in history if "lr" in row]
    if lr_points:
        ax_lr.plot(*zip(*lr_points, strict=True), color="gray")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)  # nothing to close: the figure was never registered with pyplot
    return path
