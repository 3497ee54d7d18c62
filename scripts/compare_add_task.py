"""A task added to a trained MTL-LoRA model, against training it jointly from the start and
against LoRA's way of adding a task (a new single-task adapter), several seeds each.

    python scripts/compare_add_task.py --tasks vqa,retrieval --new-task caption --seeds 0,1,2 --max-steps 300

Per seed (``<output>/seed<s>/``): ``base`` (MTL-LoRA on ``--tasks``), ``add_<task>`` (``train_vl.py
--add-task <task> --from base``: the new task's Λ, w and head train, the shared A and B_i
stay frozen; ``--add-steps`` steps), ``mtl_lora`` (MTL-LoRA on all the tasks from the start)
and ``lora_<task>`` (a single-task LoRA for the new task). Every run uses the config
(``--config``, default configs/vl_default.yaml) with ``--max-steps``; finished runs with the same
options are read, not trained again (the folder names match compare_vl.py's, so its runs
can be linked in; ``--row-options`` gives a run its own options, as in compare_vl.py). Writes
results.md (the new task's metrics and what each way trains, mean ± std over seeds; ≈ marks
differences the seeds do not support) and results_seeds.csv.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlmtl.cli.compare import run, yaml_options  # noqa: E402
from vlmtl.cli.report import mark_unsupported, markdown_table, summarize  # noqa: E402
from vlmtl.train import VLTrainConfig  # noqa: E402

METRICS = {"vqa": ["accuracy"], "retrieval": ["i2t_R@1", "t2i_R@1", "rsum"], "caption": ["BLEU-4", "CIDEr"]}
WAYS = (("add", "added to the trained MTL-LoRA (A, B_i frozen)"),
        ("joint", "MTL-LoRA, all tasks from the start"),
        ("single", "new single-task LoRA"))


def runs_for_seed(args, tasks: list[str], seed: int) -> dict[str, dict]:
    new = args.new_task
    out = args.output / f"seed{seed}"
    base = VLTrainConfig.from_sources(args.config, tasks=tasks, max_steps=args.max_steps, seed=seed).to_dict()
    own = args.row_options
    trained = run(base, "base", out, **{**own.get("base", {}), "method": "mtl_lora"})
    added = run(base, f"add_{new}", out, **{**own.get("add", {}), "method": "mtl_lora", "tasks": [*tasks, new],
                                           "add_task": new, "from_run": str(out / "base"),
                                           "max_steps": args.add_steps or args.max_steps})
    joint = run(base, "mtl_lora", out, **{**own.get("joint", {}), "method": "mtl_lora", "tasks": [*tasks, new]})
    single = run(base, f"lora_{new}", out, **{**own.get("single", {}), "method": "lora", "tasks": [new]})
    return {"base": trained, "add": added, "joint": joint, "single": single}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="default: configs/vl_default.yaml")
    parser.add_argument("--tasks", default="vqa,retrieval", help="the trained model's tasks")
    parser.add_argument("--new-task", default="caption")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--add-steps", type=int, help="steps of the added task (default: --max-steps)")
    parser.add_argument("--row-options", type=yaml_options, default={},
                        help="YAML: options of the base, add, joint or single runs on top of the config, "
                             "e.g. '{single: {lr: 2e-3}}'")
    parser.add_argument("--output", type=Path, default=Path("runs/compare_add_task"))
    args = parser.parse_args()
    unknown = sorted(set(args.row_options) - {"base", "add", "joint", "single"})
    if unknown:
        parser.error(f"--row-options for unknown run(s) {unknown}; they are base, add, joint, single")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    tasks = [t for t in args.tasks.split(",") if t]
    if args.new_task in tasks:
        parser.error(f"--new-task {args.new_task} is already one of --tasks {tasks}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    per_seed = {seed: runs_for_seed(args, tasks, seed) for seed in seeds}
    write_report(args, tasks, seeds, per_seed)


def write_report(args, tasks: list[str], seeds: list[int], per_seed: dict) -> None:
    new = args.new_task
    keys = METRICS[new]
    header = ["way to get the new task", "trained for it"] + [f"{new} {k}" for k in keys] + [
        f"old tasks ({', '.join(tasks)}) unchanged"]
    columns = {k: [summarize([per_seed[s][way]["metrics"][new][k] for s in seeds]) for way, _ in WAYS] for k in keys}
    cells = {k: mark_unsupported(columns[k]) for k in keys}
    trained_for = {
        "add": per_seed[seeds[0]]["add"]["trainable_parameters"],
        "joint": per_seed[seeds[0]]["joint"]["trainable_parameters"],
        "single": per_seed[seeds[0]]["single"]["trainable_parameters"],
    }
    unchanged = all(per_seed[s]["add"]["metrics"][t] == per_seed[s]["base"]["metrics"][t] for s in seeds for t in tasks)
    notes = {"add": f"{trained_for['add']:,} (its Λ, w and head)", "joint": f"{trained_for['joint']:,} (every task)",
             "single": f"{trained_for['single']:,} (a whole adapter and head)"}
    rows = [[label, notes[way]] + [cells[k][i] for k in keys] + ["yes" if way == "add" and unchanged else
                                                                  ("yes" if way == "single" else "retrained")]
            for i, (way, label) in enumerate(WAYS)]
    command = ("python scripts/compare_add_task.py " + (f"--config {args.config} " if args.config else "")
               + f"--tasks {args.tasks} --new-task {new} --seeds {args.seeds} --max-steps {args.max_steps}"
               + (f" --add-steps {args.add_steps}" if args.add_steps else "")
               + (f" --row-options '{yaml.safe_dump(args.row_options, default_flow_style=True).strip()}'"
                  if args.row_options else ""))
    note = (f"mean ± std over seeds {', '.join(map(str, seeds))}; ≈: not told apart from the column's best by the "
            f"seeds (Welch, 5 %). Made by `{command}`")
    text = markdown_table(header, rows) + f"\n\n{note}\n"
    (args.output / "results.md").write_text(text)
    with (args.output / "results_seeds.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "way", "trainable parameters"] + [f"{new}/{k}" for k in keys])
        for seed in seeds:
            for way, _ in WAYS:
                document = per_seed[seed][way]
                writer.writerow([seed, way, document["trainable_parameters"]]
                                + [document["metrics"][new][k] for k in keys])
    print(text)


if __name__ == "__main__":
    main()
