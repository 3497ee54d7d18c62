"""Compare adaptation methods on the same backbone and data, and write one table.

    python scripts/compare_vl.py --tasks vqa,retrieval,caption --max-steps 300 --output runs/compare_vl
    python scripts/compare_vl.py --model llava --tasks vqa,caption --rows shared,mtl_lora

Rows (``--rows``, default all): ``frozen``, the frozen backbone with trained heads only (with
LLaVA: the projector only); ``single``, single-task LoRA (one LoRA + head per task, trained
alone; its parameters are summed over the tasks); ``shared``, one LoRA shared by all tasks;
``mtl_lora``. Every run uses the same config (scripts/train_vl.py's defaults, or
configs/vl_llava.yaml with --model llava, plus the flags here), the same steps and batch size.

``--row-options`` gives rows their own options, e.g. each method at its best learning rate
from ``sweep_vl.py``. ``--seeds 0,1,2`` runs every row once per seed (``<output>/seed<s>/<row>``) and reports each
metric as mean ± standard deviation over the seeds; a value marked ≈ is not told apart from its
column's best by the seeds (Welch's t-test, 5 %), a best marked * is told apart from every other
row. Writes results.md, results.csv (means), results_seeds.csv (every seed's row), results.png
(bars with the standard deviation as error bars) and each run's folder. A run folder that
already holds a finished run with the same options is read, not trained again.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from vlmtl.cli.compare import ROWS, run_rows, yaml_options  # noqa: E402
from vlmtl.cli.report import HEADLINE, mark_unsupported, summarize, write_results  # noqa: E402
from vlmtl.train import VLTrainConfig  # noqa: E402

COLUMNS = {
    "vqa": [("accuracy", "VQA acc")],
    "retrieval": [("i2t_R@1", "I→T R@1"), ("t2i_R@1", "T→I R@1"), ("rsum", "R-sum")],
    "caption": [("BLEU-4", "BLEU-4"), ("CIDEr", "CIDEr")],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="default: configs/vl_default.yaml (configs/vl_llava.yaml with --model llava)")
    parser.add_argument("--model", help="as train_vl.py's --model (e.g. llava)")
    parser.add_argument("--tasks", default="vqa,retrieval,caption")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which of {','.join(ROWS)}")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="one seed (see --seeds)")
    parser.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: --seed)")
    parser.add_argument("--row-options", type=yaml_options, default={},
                        help="YAML: options of single rows on top of the config, e.g. "
                             "'{mtl_lora: {lr: 1e-3}, single: {lr: 2e-3}, shared: {lr: 2e-3}}'")
    parser.add_argument("--output", default="runs/compare_vl")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    tasks = [t for t in args.tasks.split(",") if t]
    wanted = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(wanted) - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s) {unknown}; choose from {list(ROWS)}")
    seeds = [int(x) for x in (args.seeds or str(args.seed)).split(",") if x.strip()]
    config = args.config or VLTrainConfig.default_yaml({"model": args.model})
    out = Path(args.output)
    per_seed = {}
    for seed in seeds:
        base = VLTrainConfig.from_sources(config, model=args.model, tasks=tasks, max_steps=args.max_steps,
                                          seed=seed).to_dict()
        per_seed[seed] = run_rows(base, tasks, wanted, out / f"seed{seed}" if len(seeds) > 1 else out,
                                  row_options=args.row_options)
    labels = [label for label, _, _ in per_seed[seeds[0]]]
    params = [p for _, p, _ in per_seed[seeds[0]]]
    columns = [(t, key) for t in tasks for key, _ in COLUMNS[t]]
    summaries = {(t, key): [summarize([per_seed[s][i][2][t][key] for s in seeds]) for i in range(len(labels))]
                 for t, key in columns}
    cells = {c: mark_unsupported(summaries[c]) for c in columns}
    header = ["method", "trainable params"] + [label for t in tasks for _, label in COLUMNS[t]]
    shown = [[name, f"{params[i]:,}"] + [cells[c][i] for c in columns] for i, name in enumerate(labels)]
    values = [[name, params[i]] + [summaries[c][i].mean for c in columns] for i, name in enumerate(labels)]
    command = "python scripts/compare_vl.py " + (f"--config {args.config} " if args.config else "") + (
        f"--model {args.model} " if args.model else "") + (
        f"--tasks {args.tasks} --rows {args.rows} --max-steps {args.max_steps} --seeds {','.join(map(str, seeds))}") + (
        f" --row-options '{yaml.safe_dump(args.row_options, default_flow_style=True).strip()}'" if args.row_options
        else "")
    spread = "mean ± std over seeds " + ", ".join(map(str, seeds)) if len(seeds) > 1 else f"seed {seeds[0]}"
    marks = "; ≈: not told apart from the column's best by the seeds (Welch, 5 %), *: best, told apart from all" \
        if len(seeds) > 1 else ""
    text = write_results(out, header, shown, header, values,
                         f"{args.max_steps} steps each, {spread}{marks}; made by `{command}`")
    with (out / "results_seeds.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "method", "trainable params"] + [f"{t}/{key}" for t, key in columns])
        for seed in seeds:
            for name, count, metrics in per_seed[seed]:
                writer.writerow([seed, name, count] + [metrics[t][key] for t, key in columns])
    plot(labels, tasks, summaries, out / "results.png")
    print(text)


def plot(labels: list[str], tasks: list[str], summaries: dict, path: Path) -> None:
    """One panel per task's headline metric, one bar per method, the seeds' standard deviation
    as error bars (and each seed's value as a dot)."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        column = summaries[(task, HEADLINE[task])]
        ax.barh(range(len(labels)), [c.mean for c in column], xerr=[c.std for c in column], capsize=4,
                color=[f"C{i}" for i in range(len(labels))], alpha=0.8)
        for i, c in enumerate(column):
            ax.plot(c.values, [i] * len(c.values), "k.", markersize=4)
        ax.set_yticks(range(len(labels)), labels if ax is axes[0][0] else [""] * len(labels))
        ax.set_title(f"{task}: {HEADLINE[task]}")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
