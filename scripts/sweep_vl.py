"""Sweep training settings on equal budgets, several seeds each, and rank them.

    python scripts/sweep_vl.py --tasks vqa,retrieval,caption --max-steps 300 --seeds 0,1 \\
        --grid "method=lora lr=1e-3,2e-3,4e-3" \\
        --grid "method=mtl_lora lr=1e-3,2e-3,4e-3" \\
        --grid "method=mtl_lora mixing_lr=0.02,0.1 temperature=0.5,1.0"

Each ``--grid`` is ``option=v1,v2,...`` items (any train_vl.py option, by its config name),
and stands for every combination of its values; options not named keep the config's values
(``--config``, default configs/vl_default.yaml). Every combination runs once per seed into
``<output>/<name>/seed<s>``; a finished run there with the same options is read, not run
again, so a stopped sweep continues where it stopped.

Ranking: each task's headline metric (VQA accuracy, retrieval R-sum, caption CIDEr) divided by
the best mean any setting reached on it, averaged over the tasks: the score (1.0: best at
everything). Writes results.md (mean ± std per setting, sorted by score, the best of each
method named), results_seeds.csv (every run) and results.png.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from vlmtl.cli.compare import run  # noqa: E402
from vlmtl.cli.report import HEADLINE, markdown_table, summarize  # noqa: E402
from vlmtl.train import VLTrainConfig  # noqa: E402


def parse_grid(text: str) -> list[dict]:
    """``"method=lora lr=1e-3,2e-3"`` → one dict per combination, values read as YAML."""
    axes = []
    for item in text.split():
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"grid item {item!r} is not option=value[,value...]")
        axes.append([(key, _value(v)) for v in values.split(",")])
    if not axes:
        raise ValueError("an empty --grid")
    return [dict(combination) for combination in itertools.product(*axes)]


def _value(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 as text
        except ValueError:
            return value
    return value


def setting_name(setting: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items())


def score_settings(results: dict[str, list[dict]], tasks: list[str]) -> dict[str, float]:
    """Per setting: the mean over tasks of (its mean headline metric / the best setting's)."""
    means = {name: {t: sum(r["metrics"][t][HEADLINE[t]] for r in runs) / len(runs) for t in tasks}
             for name, runs in results.items()}
    best = {t: max(m[t] for m in means.values()) for t in tasks}
    return {name: sum(m[t] / best[t] if best[t] > 0 else 0.0 for t in tasks) / len(tasks)
            for name, m in means.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="default: configs/vl_default.yaml")
    parser.add_argument("--tasks", default="vqa,retrieval,caption")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1", help="comma-separated")
    parser.add_argument("--grid", action="append", required=True, help='e.g. "method=lora lr=1e-3,2e-3"')
    parser.add_argument("--output", default="runs/sweep_vl")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    tasks = [t for t in args.tasks.split(",") if t]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    try:
        settings = [s for grid in args.grid for s in parse_grid(grid)]
    except ValueError as err:
        parser.error(str(err))
    fields = set(VLTrainConfig.__dataclass_fields__)
    unknown = sorted({k for s in settings for k in s} - fields)
    if unknown:
        parser.error(f"unknown option(s) {unknown}: use train_vl.py's config names (e.g. lr, mixing_lr, temperature)")
    base = {"tasks": tasks, "max_steps": args.max_steps}
    out = Path(args.output)
    results = {}
    for setting in settings:
        name = setting_name(setting)
        results[name] = [run(VLTrainConfig.from_sources(args.config, **base, seed=seed).to_dict(), f"seed{seed}",
                             out / name, **setting) for seed in seeds]
    write_report(out, results, tasks, seeds, args)


def write_report(out: Path, results: dict[str, list[dict]], tasks: list[str], seeds: list[int], args) -> None:
    scores = score_settings(results, tasks)
    order = sorted(results, key=lambda n: -scores[n])
    header = ["setting", "score"] + [f"{t} {HEADLINE[t]}" for t in tasks] + ["minutes per run"]
    rows = []
    for name in order:
        runs = results[name]
        cells = [str(summarize([r["metrics"][t][HEADLINE[t]] for r in runs])) for t in tasks]
        minutes = summarize([r.get("total_minutes", 0.0) for r in runs]).mean
        rows.append([f"`{name}`", f"{scores[name]:.3f}", *cells, f"{minutes:.1f}"])
    best = {}
    for name in order:
        method = results[name][0].get("method", "?")
        best.setdefault(method, name)
    command = ("python scripts/sweep_vl.py " + (f"--config {args.config} " if args.config else "")
               + f"--tasks {','.join(tasks)} --max-steps {args.max_steps} --seeds {','.join(map(str, seeds))} "
               + " ".join(f'--grid "{g}"' for g in args.grid))
    note = (f"{args.max_steps} steps per run, mean ± std over seeds {', '.join(map(str, seeds))}; score: each task's "
            "headline metric over the best setting's, averaged over the tasks. Best per method: "
            + "; ".join(f"{m}: `{n}`" for m, n in best.items()) + f". Made by `{command}`")
    text = markdown_table(header, rows) + f"\n\n{note}\n"
    (out / "results.md").write_text(text)
    with (out / "results_seeds.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "seed", "method"] + [f"{t}/{HEADLINE[t]}" for t in tasks] + ["minutes"])
        for name in order:
            for seed, run in zip(seeds, results[name], strict=True):
                writer.writerow([name, seed, run.get("method")] + [run["metrics"][t][HEADLINE[t]] for t in tasks]
                                + [run.get("total_minutes")])
    plot(order, results, tasks, out / "results.png")
    print(text)


def plot(order: list[str], results: dict[str, list[dict]], tasks: list[str], path: Path) -> None:
    """One panel per task: each setting's headline metric, mean with the seeds' std."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 0.4 * len(order) + 1.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        column = [summarize([r["metrics"][task][HEADLINE[task]] for r in results[n]]) for n in order]
        colors = ["C0" if results[n][0].get("method") == "lora" else "C1" for n in order]
        ax.barh(range(len(order)), [c.mean for c in column], xerr=[c.std for c in column], color=colors,
                alpha=0.8, capsize=3)
        ax.set_yticks(range(len(order)), order if ax is axes[0][0] else [""] * len(order), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{task}: {HEADLINE[task]}")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
