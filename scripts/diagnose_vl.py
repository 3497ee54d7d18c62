"""Why does one method learn faster than another? Training curves and adapter measurements of
several runs, grouped by method, on the same axes.

    python scripts/diagnose_vl.py runs/diagnose/lora/seed0 runs/diagnose/lora/seed1 \\
        runs/diagnose/mtl_lora/seed0 runs/diagnose/mtl_lora/seed1 --output runs/diagnose

Reads each run's ``train_log.jsonl`` (with the ``adapter/...`` measurements that
``train_vl.py`` logs by default, see ``--monitor-adapters``) and ``config.yaml``; runs of the
same method (and label, ``--label-by``) are one line: the mean over seeds, shaded between the
lowest and highest seed. Writes ``diagnosis.png``:

- the training loss of every task (smoothed), one panel per task;
- ‖ΔW_t‖, the size of the weight change each task has learned;
- the size of one optimizer step's change of ΔW_t, and of the up-projection a task sees
  (LoRA's scaling·B, MTL-LoRA's scaling·B̃_t), each divided by the step's learning rate
  (steps below 1 % of the peak rate left out);
- MTL-LoRA's mixing entropy (1: the B_i mixed uniformly), how far the logits w moved, and the
  mean cosine between the B_i (1: they are one matrix);

and ``diagnosis.md``, the same quantities at the start, middle and end of training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from vlmtl.cli.compare import MTL_LORA_ONLY  # noqa: E402
from vlmtl.cli.report import markdown_table  # noqa: E402

# (title, key pattern with {task}, divide by the learning rate)
MEASURES = [
    ("‖ΔW_t‖ (all layers)", "adapter/delta_norm/{task}", False),
    ("step change of ΔW_t / lr", "adapter/update/delta/{task}", True),
    ("step change of the up-projection / lr", "adapter/update/mixed_b/{task}", True),
    ("step change of A / lr", "adapter/update/A", True),
    ("mixing entropy (1 = uniform)", "adapter/mixing_entropy/{task}", False),
    ("mixing logits moved ‖w − w₀‖", "adapter/w_drift/{task}", False),
    ("cosine between the B_i", "adapter/up_projection_cosine", False),
]


def read_run(path: Path) -> tuple[dict, list[dict]]:
    log, config = path / "train_log.jsonl", path / "config.yaml"
    for needed in (log, config):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: is {path} a finished train_vl.py run folder?")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return yaml.safe_load(config.read_text()), rows


def label_of(config: dict, label_by: list[str]) -> str:
    """The method and the ``label_by`` options (those only MTL-LoRA reads left out for LoRA)."""
    shown = [k for k in label_by if config.get("method") == "mtl_lora" or k not in MTL_LORA_ONLY]
    parts = [str(config.get("method"))] + [f"{k}={config.get(k)}" for k in shown]
    return " ".join(parts)


def series(rows: list[dict], key: str, per_lr: bool) -> tuple[list[int], list[float]]:
    """``key`` over the steps; ``per_lr`` divides by the learning rate that step used, which is
    the rate the previous row logged (a row's ``lr`` is the rate of the step after it)."""
    used = {r["step"] + 1: r["lr"] for r in rows if "lr" in r}
    floor = 0.01 * max(used.values(), default=0.0)  # near the schedule's end a ratio of two tiny numbers
    points = [(r["step"], r[key] / used[r["step"]] if per_lr else r[key]) for r in rows
              if key in r and (not per_lr or used.get(r["step"], 0.0) > floor)]
    return [s for s, _ in points], [v for _, v in points]


def smooth(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1):i + 1]
        out.append(sum(part) / len(part))
    return out


def band(runs: list[list[dict]], key: str, per_lr: bool, window: int = 1):
    """Steps common to all runs, and the mean / min / max over runs there."""
    curves = [dict(zip(*series(rows, key, per_lr), strict=True)) for rows in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if not steps:
        return [], [], [], []
    values = [smooth([c[s] for s in steps], window) for c in curves]
    columns = list(zip(*values, strict=True))
    return steps, [sum(c) / len(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def task_mean_rows(rows: list[dict], tasks: list[str]) -> list[dict]:
    """Each row with its per-task measurements averaged over the tasks (key ``{task}`` → mean)."""
    out = []
    for row in rows:
        merged = dict(row)
        for _, pattern, _ in MEASURES:
            if "{task}" in pattern:
                values = [row[pattern.format(task=t)] for t in tasks if pattern.format(task=t) in row]
                if values:
                    merged[pattern.format(task="mean")] = sum(values) / len(values)
        out.append(merged)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="train_vl.py run folders")
    parser.add_argument("--label-by", default="", help="config options that also tell runs apart, e.g. mixing_lr,lr")
    parser.add_argument("--smooth", type=int, default=5, help="moving-average window of the loss curves (log rows)")
    parser.add_argument("--output", type=Path, default=Path("runs/diagnose"))
    args = parser.parse_args()
    label_by = [k for k in args.label_by.split(",") if k]
    groups: dict[str, list[list[dict]]] = defaultdict(list)
    tasks: list[str] = []
    for path in args.runs:
        config, rows = read_run(path)
        tasks = tasks or list(config["tasks"])
        if list(config["tasks"]) != tasks:
            parser.error(f"{path} trained {config['tasks']}, the first run {tasks}: compare runs of the same tasks")
        groups[label_of(config, label_by)].append(task_mean_rows(rows, tasks))
    args.output.mkdir(parents=True, exist_ok=True)
    draw(groups, tasks, args.smooth, args.output / "diagnosis.png")
    text = summary_table(groups, tasks)
    (args.output / "diagnosis.md").write_text(text)
    print(text)


def draw(groups: dict[str, list[list[dict]]], tasks: list[str], window: int, path: Path) -> None:
    measures = [m for m in MEASURES if any(m[1].format(task="mean") in r for runs in groups.values()
                                           for rows in runs for r in rows)]
    panels = len(tasks) + len(measures)
    cols = 4
    nrows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, task in zip(flat, tasks):
        for i, (label, runs) in enumerate(sorted(groups.items())):
            steps, mean, low, high = band(runs, task, False, window)
            ax.plot(steps, mean, color=f"C{i}", label=f"{label} ({len(runs)} seeds)")
            ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.2)
        ax.set_title(f"{task}: training loss")
        ax.set_yscale("log")
    for ax, (title, pattern, per_lr) in zip(flat[len(tasks):], measures):
        key = pattern.format(task="mean")
        for i, (label, runs) in enumerate(sorted(groups.items())):
            steps, mean, low, high = band(runs, key, per_lr)
            if steps:
                ax.plot(steps, mean, color=f"C{i}", label=label)
                ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.2)
        ax.set_title(title + (" (mean of tasks)" if "{task}" in pattern else ""), fontsize=9)
    for ax in flat[:panels]:
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    for ax in flat[panels:]:
        ax.axis("off")
    flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_table(groups: dict[str, list[list[dict]]], tasks: list[str]) -> str:
    """Each measurement (mean of tasks, mean of seeds) early, midway and at the end."""
    header = ["method", "quantity", "first logged step", "middle", "last"]
    lines = []
    for label, runs in sorted(groups.items()):
        for title, pattern, per_lr in [(f"{t} loss", t, False) for t in tasks] + MEASURES:
            steps, mean, _, _ = band(runs, pattern.format(task="mean"), per_lr)
            if steps:
                mid = len(steps) // 2
                lines.append([label, title, f"{mean[0]:.4g} (step {steps[0]})", f"{mean[mid]:.4g} (step {steps[mid]})",
                              f"{mean[-1]:.4g} (step {steps[-1]})"])
    return markdown_table(header, lines) + "\n"


if __name__ == "__main__":
    main()
