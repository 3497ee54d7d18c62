"""compare_vl.py --seeds: one run per row and seed, mean ± std, every seed's row kept."""

from __future__ import annotations

import csv

import yaml

from vlmtl.paths import configs_dir

from ..conftest import run_script


def test_seeds_give_per_seed_rows_a_summary_table_and_a_figure(tmp_path):
    config = yaml.safe_load((configs_dir() / "vl_default.yaml").read_text())
    config.update(synthetic_train_images=24, synthetic_val_images=8, eval_max_samples=8, workers=0, save_every=0,
                  batch_size=8, data_root=str(tmp_path / "data"))
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(config))
    done = run_script("compare_vl.py", "--config", str(tmp_path / "small.yaml"), "--tasks", "vqa,retrieval",
                      "--rows", "shared,mtl_lora", "--max-steps", "1", "--seeds", "0,1",
                      "--row-options", "{shared: {lr: 5e-4}}",
                      "--output", str(tmp_path / "out"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    with (out / "results_seeds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["seed"], r["method"]) for r in rows] == [
        ("0", "one shared LoRA"), ("0", "MTL-LoRA"), ("1", "one shared LoRA"), ("1", "MTL-LoRA")]
    assert (out / "seed0" / "mtl_lora" / "metrics.json").is_file() and (out / "seed1" / "lora_shared").is_dir()
    table = (out / "results.md").read_text()
    assert "±" in table and "mean ± std over seeds 0, 1" in table and "--seeds 0,1" in table
    with (out / "results.csv").open() as f:
        means = {r["method"]: float(r["VQA acc"]) for r in csv.DictReader(f)}
    per_seed = [float(r["vqa/accuracy"]) for r in rows if r["method"] == "MTL-LoRA"]
    assert means["MTL-LoRA"] == sum(per_seed) / 2
    assert (out / "results.png").stat().st_size > 10_000
    shared_config = yaml.safe_load((out / "seed1" / "lora_shared" / "config.yaml").read_text())
    mtl_config = yaml.safe_load((out / "seed1" / "mtl_lora" / "config.yaml").read_text())
    assert shared_config["lr"] == 5e-4 and mtl_config["lr"] == config["lr"] != 5e-4  # a row's own options
    assert "--row-options '{shared: {lr: 0.0005}}'" in table
