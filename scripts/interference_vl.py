"""When does a multi-task adapter pay off? Single-task LoRA, one shared LoRA and MTL-LoRA on
the embedded data as the tasks conflict more, several seeds per point.

    python scripts/interference_vl.py --levels 0,0.5,1 --seeds 0,1,2 --max-steps 200

The knob is the data's ``synthetic_interference``: the fraction of the colours that the
retrieval captions call by another colour's name, while VQA questions keep the true names
(``vlmtl.data.synthetic.retrieval_colour_names``). At 0 the tasks agree; at 1 every colour
word means one thing to retrieval and another to VQA, inside the same shared text tower.
Tasks are VQA and retrieval. VQA's samples are the same at every level, so its single-task
run is made once per seed (at level 0) and serves every level.

Per level and seed: the single-task retrieval LoRA, one shared LoRA and MTL-LoRA
(``<output>/level<l>/seed<s>/``). Writes results.md (each method's headline metric and the
gaps single − shared and MTL-LoRA − shared, mean ± std over seeds), results_seeds.csv and
results.png (the gaps against the knob, with the seeds' std as error bars). Finished runs are
read, not trained again.
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

from vlmtl.cli.compare import run  # noqa: E402
from vlmtl.cli.report import HEADLINE, markdown_table, summarize  # noqa: E402
from vlmtl.train import VLTrainConfig  # noqa: E402

TASKS = ["vqa", "retrieval"]
METHODS = ("single", "shared", "mtl_lora")
GAPS = (("single", "single − shared"), ("mtl_lora", "MTL-LoRA − shared"))


def scores_at(config: str | None, level: float, seed: int, steps: int, out: Path) -> dict[str, dict[str, float]]:
    """method → task → headline metric, for one level and seed."""
    base = VLTrainConfig.from_sources(config, tasks=TASKS, max_steps=steps, seed=seed,
                                      synthetic_interference=level).to_dict()
    level_out = out / f"level{level:g}" / f"seed{seed}"
    # VQA alone sees the same samples at every level: its run lives at level 0
    vqa_base = {**base, "synthetic_interference": 0.0}
    single_vqa = run(vqa_base, f"seed{seed}", out / "single_vqa", method="lora", tasks=["vqa"])
    single_retrieval = run(base, "lora_retrieval", level_out, method="lora", tasks=["retrieval"])
    shared = run(base, "lora_shared", level_out, method="lora")
    mtl = run(base, "mtl_lora", level_out, method="mtl_lora")

    def headline(document: dict) -> dict[str, float]:
        return {t: document["metrics"][t][HEADLINE[t]] for t in document["metrics"]}

    return {"single": {**headline(single_vqa), **headline(single_retrieval)}, "shared": headline(shared),
            "mtl_lora": headline(mtl)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="default: configs/vl_default.yaml")
    parser.add_argument("--levels", default="0,0.5,1", help="comma-separated interference levels in [0, 1]")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--output", type=Path, default=Path("runs/interference_vl"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    bad = [v for v in levels if not 0 <= v <= 1]
    if bad:
        parser.error(f"levels must be in [0, 1], got {bad}")
    scores = {(level, seed): scores_at(args.config, level, seed, args.max_steps, args.output)
              for level in levels for seed in seeds}
    write_report(args, levels, seeds, scores)


def gap(scores, level: float, seed: int, method: str, task: str) -> float:
    return scores[(level, seed)][method][task] - scores[(level, seed)]["shared"][task]


def write_report(args, levels: list[float], seeds: list[int], scores: dict) -> None:
    out: Path = args.output
    header = ["level", "task", "single-task LoRA", "one shared LoRA", "MTL-LoRA", "single − shared",
              "MTL-LoRA − shared"]
    rows = []
    for level in levels:
        for task in TASKS:
            cells = [str(summarize([scores[(level, s)][m][task] for s in seeds])) for m in METHODS]
            gaps = [str(summarize([gap(scores, level, s, m, task) for s in seeds])) for m, _ in GAPS]
            rows.append([f"{level:g}", f"{task} {HEADLINE[task]}", *cells, *gaps])
    command = ("python scripts/interference_vl.py " + (f"--config {args.config} " if args.config else "")
               + f"--levels {args.levels} --seeds {args.seeds} --max-steps {args.max_steps}")
    note = (f"{args.max_steps} steps per run, mean ± std over seeds {', '.join(map(str, seeds))}; a gap is taken per "
            f"seed, then summarized. Made by `{command}`")
    text = markdown_table(header, rows) + f"\n\n{note}\n"
    (out / "results.md").write_text(text)
    with (out / "results_seeds.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["level", "seed", "method"] + [f"{t}/{HEADLINE[t]}" for t in TASKS])
        for (level, seed), by_method in scores.items():
            for method, values in by_method.items():
                writer.writerow([level, seed, method] + [values[t] for t in TASKS])
    plot(levels, seeds, scores, out / "results.png")
    print(text)


def plot(levels: list[float], seeds: list[int], scores: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.6), squeeze=False)
    for ax, task in zip(axes[0], TASKS):
        for i, (method, label) in enumerate(GAPS):
            column = [summarize([gap(scores, level, s, method, task) for s in seeds]) for level in levels]
            ax.errorbar(levels, [c.mean for c in column], yerr=[c.std for c in column], marker="o", capsize=4,
                        color=f"C{i}", label=label)
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set_xlabel("task interference (fraction of colours renamed for retrieval)")
        ax.set_ylabel(f"{HEADLINE[task]} difference")
        ax.set_title(f"{task}: gain over one shared LoRA")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
