"""Compare MTLoRA with its baselines on one dense multi-task data set, and write one table.

    python scripts/compare_dense.py --config configs/dense_synthetic_small.yaml --output runs/compare_dense
    python scripts/compare_dense.py --config configs/dense_synthetic_small.yaml --max-steps 20 --mtlora-plus
    python scripts/compare_dense.py --config configs/pascal_mtlora_r16.yaml --data /path/PASCAL_MT --max-steps 40000

Rows (all from the same config, data, steps, batch size and seed): single-task training of
each task (full fine-tuning by default, as the paper's "single task" row; their metrics are
the measured single-task baselines of every Δm here), decoders only, full fine-tuning, one
shared LoRA, MTL-LoRA, MTLoRA, and MTLoRA+ with --mtlora-plus. Single-task parameters are
summed over the task models and their throughput is that of running all of them per image.
Throughputs: training images/s over the step compute, inference images/s over the forward
passes of the evaluation. Writes results.md, results.csv, results.png and one run folder per
row; a run folder already finished with the same config is reused, an interrupted one resumes.

``--seeds 0,1,2`` runs every row once per seed (``<output>/seed<s>/<row>``, each seed's Δm against
its own single-task rows) and reports each metric and Δm as mean ± standard deviation; ≈ marks a
value the seeds do not tell apart from its column's best (Welch's t-test, 5 %), * a best told apart
from every other row. results_seeds.csv keeps every seed's row; the figure shows the spread.

With the defaults (the small synthetic config: 120 steps of 8 images) this takes about 15
minutes on 2 idle CPU cores and about 25 under a concurrent job: timed at ~7 s per step for
all rows together (one compute thread, the other core loading data; up to ~1.75x that under
load), plus 2-3 minutes of evaluation, start-up and writing the synthetic set. MTLoRA+ adds
about 1 s per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from vlmtl.cli.report import SeedSummary, mark_unsupported, summarize, write_results  # noqa: E402
from vlmtl.train.checkpoint import RESUMABLE_CHANGES  # noqa: E402
from vlmtl.train.dense_config import DenseTrainConfig  # noqa: E402
from vlmtl.train.dense_trainer import train_dense  # noqa: E402
from vlmtl.train.engine import cpu_threads  # noqa: E402

COLUMNS = [  # (task, metric key, label)
    ("semseg", "mIoU", "SemSeg mIoU ↑"),
    ("human_parts", "mIoU", "Parts mIoU ↑"),
    ("saliency", "maxF", "Sal maxF ↑"),
    ("saliency", "Beta maxF", "Sal Beta maxF ↑"),
    ("saliency", "mIoU", "Sal mIoU ↑"),
    ("normals", "mean_angle", "Normals angle ↓"),
]
MULTI_TASK_ROWS = [  # (run folder, label, config changes)
    ("heads_only", "decoders only", {"method": "heads_only"}),
    ("full", "full fine-tuning", {"method": "full"}),
    ("lora", "one shared LoRA", {"method": "lora"}),
    ("mtl_lora", "MTL-LoRA", {"method": "mtl_lora"}),
    ("mtlora", "MTLoRA", {"method": "mtlora"}),
]
MTLORA_PLUS_ROW = ("mtlora_plus", "MTLoRA+", {"method": "mtlora", "mtlora_plus": True})


def _comparable(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in RESUMABLE_CHANGES}


def run(base: dict, name: str, out: Path, **changes) -> dict:
    """Train one row (or reuse its finished folder when its config is the same)."""
    cfg = DenseTrainConfig.from_sources(None, **{**base, **changes, "output": str(out / name)})
    folder = Path(cfg.output)
    done, saved = folder / "metrics.json", folder / "config.yaml"
    if done.is_file() and saved.is_file() and _comparable(yaml.safe_load(saved.read_text())) == _comparable(
        cfg.to_dict()
    ):
        logging.info("=== %s: reusing the finished run in %s", name, folder)
        return json.loads(done.read_text())
    logging.info("=== %s: method %s%s, tasks %s", name, cfg.method, "+" if cfg.mtlora_plus else "", cfg.tasks)
    return train_dense(cfg)


def _harmonic_speed(values: list[float | None]) -> float | None:
    """Images/s of running several models per image: 1 / Σ 1/speed_t."""
    if not values or any(v is None or v <= 0 for v in values):
        return None
    return 1.0 / sum(1.0 / v for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="default: the config layer's (configs/dense_synthetic_small.yaml)")
    parser.add_argument("--output", default="runs/compare_dense")
    parser.add_argument("--max-steps", type=int, dest="max_steps", help="steps per row (default: the config's)")
    parser.add_argument("--data", help="a PASCAL_MT folder, or 'synthetic' (default: the config's)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: --seed, or the config's)")
    parser.add_argument("--mtlora-plus", action="store_true", dest="mtlora_plus", help="add an MTLoRA+ row")
    parser.add_argument("--single-task-method", choices=["full", "single_task"], default="full",
                        help="single-task rows: full fine-tuning (the paper's) or one LoRA per task")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the cores the loader workers leave)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    base_cfg = DenseTrainConfig.from_sources(args.config or DenseTrainConfig.default_yaml({}),
                                             max_steps=args.max_steps, seed=args.seed, data=args.data)
    torch.set_num_threads(cpu_threads(base_cfg.workers, args.threads))
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds else [base_cfg.seed]
    tasks = base_cfg.tasks
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = {}
    for seed in seeds:
        base = {**base_cfg.to_dict(), "seed": seed}
        base.pop("single_task_baselines")
        per_seed[seed] = seed_rows(base, tasks, args, out / f"seed{seed}" if len(seeds) > 1 else out)
    rows = combine_seeds([per_seed[s] for s in seeds])

    command = " ".join(["python scripts/compare_dense.py"] + sys.argv[1:])
    steps = f"{base_cfg.max_steps} steps" if base_cfg.max_steps else f"{base_cfg.epochs} epochs"
    spread = f"mean ± std over seeds {', '.join(map(str, seeds))} (≈: not told apart from the column's best " \
        "by the seeds, Welch 5 %; *: best, told apart from all)" if len(seeds) > 1 else f"seed {seeds[0]}"
    note = (f"{steps} each, batch {base_cfg.batch_size}, {spread}, "
            f"{base_cfg.model} {base_cfg.timm_kwargs or ''} at {base_cfg.img_size} px, "
            f"{torch.get_num_threads()} CPU thread(s); Δm against the measured single-task rows "
            f"(saliency by mIoU, normals lower is better); made by `{command}`")
    write_tables(rows, tasks, out, note)
    write_seed_rows(per_seed, tasks, out / "results_seeds.csv")
    plot(rows, out / "results.png")
    print((out / "results.md").read_text())


def seed_rows(base: dict, tasks: list[str], args, out: Path) -> list[dict]:
    """Every row for one seed: single-task runs first (their headline metrics are the Δm baselines)."""
    single = {t: run(base, f"single_{t}", out, method=args.single_task_method, tasks=[t]) for t in tasks}
    measured = {t: single[t]["headline"][t] for t in tasks}
    if not all(v is not None and v != 0 for v in measured.values()):
        raise SystemExit(f"a single-task baseline is undefined or zero: {measured}; Δm cannot be computed")
    rows = [{
        "label": f"single-task ({len(tasks)} models)", "metrics": {t: single[t]["metrics"][t] for t in tasks},
        "delta_m": 0.0, "trainable_parameters": sum(single[t]["trainable_parameters"] for t in tasks),
        "train_images_per_s": _harmonic_speed([single[t]["train_images_per_s"] for t in tasks]),
        "inference_images_per_s": _harmonic_speed([single[t]["inference_images_per_s"] for t in tasks]),
    }]
    for name, label, changes in MULTI_TASK_ROWS + ([MTLORA_PLUS_ROW] if args.mtlora_plus else []):
        result = run(base, name, out, single_task_baselines=measured, **changes)
        rows.append({"label": label, "metrics": result["metrics"], "delta_m": result["delta_m"],
                     **{k: result[k] for k in ("trainable_parameters", "train_images_per_s",
                                               "inference_images_per_s")}})
    return rows


def combine_seeds(per_seed: list[list[dict]]) -> list[dict]:
    """One row per method: every metric and Δm as a SeedSummary (None where a seed lacks it),
    throughputs as their mean."""

    def over_seeds(values: list[float | None]) -> SeedSummary | None:
        return summarize(values) if values and all(v is not None for v in values) else None

    combined = []
    for i, first in enumerate(per_seed[0]):
        same = [rows[i] for rows in per_seed]
        metrics = {t: {k: over_seeds([r["metrics"][t].get(k) for r in same]) for k in first["metrics"][t]}
                   for t in first["metrics"]}
        speeds = {k: over_seeds([r[k] for r in same]) for k in ("train_images_per_s", "inference_images_per_s")}
        delta_m = over_seeds([r["delta_m"] for r in same])
        combined.append({"label": first["label"], "metrics": metrics, "delta_m": delta_m,
                         "trainable_parameters": first["trainable_parameters"],
                         **{k: v.mean if v else None for k, v in speeds.items()}})
    return combined


def write_seed_rows(per_seed: dict[int, list[dict]], tasks: list[str], path: Path) -> None:
    columns = [c for c in COLUMNS if c[0] in tasks]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "method"] + [f"{t}_{k}" for t, k, _ in columns] + [
            "delta_m", "trainable_parameters", "train_images_per_s", "inference_images_per_s"])
        for seed, rows in per_seed.items():
            for row in rows:
                writer.writerow([seed, row["label"]] + [row["metrics"].get(t, {}).get(k) for t, k, _ in columns] + [
                    row["delta_m"], row["trainable_parameters"], row["train_images_per_s"],
                    row["inference_images_per_s"]])


def _value(row: dict, task: str, key: str) -> SeedSummary | None:
    return row["metrics"].get(task, {}).get(key)


def _cells(column: list[SeedSummary | None], higher_is_better: bool) -> list[str]:
    """``mean ± std`` with the seeds' marks (see the module docstring); n/a where undefined."""
    known = [i for i, c in enumerate(column) if c is not None]
    marked = mark_unsupported([column[i] for i in known], higher_is_better) if known else []
    cells = ["n/a"] * len(column)
    for i, text in zip(known, marked):
        cells[i] = text
    return cells


def write_tables(rows: list[dict], tasks: list[str], out: Path, note: str) -> None:
    columns = [c for c in COLUMNS if c[0] in tasks]
    header = ["method"] + [label for _, _, label in columns] + [
        "Δm % ↑", "trainable params", "train img/s", "infer img/s"]

    def fmt(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    metric_cells = [_cells([_value(r, t, k) for r in rows], t != "normals") for t, k, _ in columns]
    delta_cells = _cells([r["delta_m"] for r in rows], True)
    shown = [[row["label"]] + [cells[i] for cells in metric_cells] + [
        delta_cells[i], f"{row['trainable_parameters']:,}",
        fmt(row["train_images_per_s"], ".2f"), fmt(row["inference_images_per_s"], ".2f")] for i, row in enumerate(rows)]
    csv_header = ["method"] + [f"{t}_{k}" for t, k, _ in columns] + [
        "delta_m", "trainable_parameters", "train_images_per_s", "inference_images_per_s"]

    def mean(summary: SeedSummary | None) -> float | None:
        return None if summary is None else summary.mean

    values = [[row["label"]] + [mean(_value(row, t, k)) for t, k, _ in columns] + [
        mean(row["delta_m"]), row["trainable_parameters"], row["train_images_per_s"], row["inference_images_per_s"]]
        for row in rows]
    write_results(out, header, shown, csv_header, values, note)


def plot(rows: list[dict], path: Path) -> None:
    """Left: Δm against trainable parameters (the paper's trade-off). Right: throughputs."""
    fig, (ax_dm, ax_speed) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, row in enumerate(rows):
        if row["delta_m"] is not None:
            x, dm = row["trainable_parameters"] / 1e6, row["delta_m"]
            ax_dm.errorbar(x, dm.mean, yerr=dm.std, fmt="o", color=f"C{i}", capsize=4, markersize=7)
            ax_dm.annotate(row["label"], (x, dm.mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax_dm.axhline(0.0, color="gray", linewidth=0.8)
    sizes = [row["trainable_parameters"] for row in rows]
    if max(sizes) > 10 * min(sizes):  # full single-task models dwarf the adapters: log scale, plain labels
        ax_dm.set_xscale("log")
        ax_dm.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_dm.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax_dm.set_xlabel("trainable parameters (M)")
    ax_dm.set_ylabel("Δm vs single-task (%), mean ± std over seeds")
    ax_dm.grid(alpha=0.3)
    labels = [row["label"] for row in rows]
    y = range(len(rows))
    train = [row["train_images_per_s"] or 0.0 for row in rows]
    infer = [row["inference_images_per_s"] or 0.0 for row in rows]
    ax_speed.barh([v + 0.2 for v in y], train, height=0.4, label="training")
    ax_speed.barh([v - 0.2 for v in y], infer, height=0.4, label="inference")
    ax_speed.set_yticks(list(y), labels)
    ax_speed.invert_yaxis()
    ax_speed.set_xlabel("images / s")
    ax_speed.legend(loc="lower right")
    ax_speed.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
