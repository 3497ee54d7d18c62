"""compare_add_task.py: the four runs per seed, and the old tasks' metrics kept by adding a task."""

from __future__ import annotations

import csv
import json

import yaml

from ..conftest import run_script
from .test_sweep_vl import _small_config


def test_add_task_against_joint_and_single_task_training(tmp_path):
    out = tmp_path / "out"
    done = run_script("compare_add_task.py", "--config", str(_small_config(tmp_path)), "--tasks", "vqa",
                      "--new-task", "retrieval", "--seeds", "0", "--max-steps", "1", "--output", str(out),
                      "--row-options", "{single: {lr: 5e-4}}", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seed = out / "seed0"
    assert {p.name for p in seed.iterdir()} == {"base", "add_retrieval", "mtl_lora", "lora_retrieval"}
    added = json.loads((seed / "add_retrieval" / "metrics.json").read_text())
    base = json.loads((seed / "base" / "metrics.json").read_text())
    assert added["metrics"]["vqa"] == base["metrics"]["vqa"]  # the old task is untouched
    with (out / "results_seeds.csv").open() as f:
        rows = {r["way"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"add", "joint", "single"}
    assert float(rows["add"]["retrieval/rsum"]) == added["metrics"]["retrieval"]["rsum"]
    assert int(rows["add"]["trainable parameters"]) < int(rows["single"]["trainable parameters"])
    assert yaml.safe_load((seed / "lora_retrieval" / "config.yaml").read_text())["lr"] == 5e-4  # its own option
    table = (out / "results.md").read_text()
    assert "--row-options '{single: {lr: 0.0005}}'" in table
    assert "added to the trained MTL-LoRA" in table and "| yes |" in table


def test_new_task_among_the_old_ones_is_refused(tmp_path):
    done = run_script("compare_add_task.py", "--tasks", "vqa,caption", "--new-task", "caption",
                      "--output", str(tmp_path))
    assert done.returncode != 0 and "--new-task caption is already one of --tasks" in done.stderr
