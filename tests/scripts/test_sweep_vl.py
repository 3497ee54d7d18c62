"""sweep_vl.py: every setting × seed runs once, the ranking, and a stopped sweep continues."""

from __future__ import annotations

import csv

import yaml

from vlmtl.paths import configs_dir

from ..conftest import run_script


def _small_config(tmp_path):
    config = yaml.safe_load((configs_dir() / "vl_default.yaml").read_text())
    config.update(synthetic_train_images=24, synthetic_val_images=8, eval_max_samples=8, workers=0, save_every=0,
                  batch_size=8, data_root=str(tmp_path / "data"))
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sweep_runs_every_setting_and_seed_ranks_them_and_continues(tmp_path):
    args = ["sweep_vl.py", "--config", str(_small_config(tmp_path)), "--tasks", "vqa,retrieval", "--max-steps", "1",
            "--seeds", "0,1", "--grid", "method=lora lr=1e-3", "--grid", "method=mtl_lora mixing_lr=null",
            "--output", str(tmp_path / "out")]
    done = run_script(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    with (out / "results_seeds.csv").open() as f:
        rows = list(csv.DictReader(f))
    names = {"method=lora,lr=0.001", "method=mtl_lora,mixing_lr=None"}
    assert {r["setting"] for r in rows} == names and len(rows) == 4
    assert {r["method"] for r in rows} == {"lora", "mtl_lora"}
    table = (out / "results.md").read_text()
    scores = [float(line.split("|")[2]) for line in table.splitlines()[2:4]]
    assert scores == sorted(scores, reverse=True) and max(scores) <= 1.0 and "Best per method: " in table
    assert (out / "results.png").stat().st_size > 5_000
    finished = out / "method=lora,lr=0.001" / "seed1" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    again = run_script(*args, timeout=600)  # every run is there: read, not run again
    assert again.returncode == 0, again.stderr[-3000:]
    assert finished.stat().st_mtime_ns == stamp and "finished before" in again.stderr


def test_bad_grid_items_are_named(tmp_path):
    done = run_script("sweep_vl.py", "--grid", "method=lora learning_rate=1e-3", "--output", str(tmp_path))
    assert done.returncode != 0 and "unknown option(s) ['learning_rate']" in done.stderr
    done = run_script("sweep_vl.py", "--grid", "lr", "--output", str(tmp_path))
    assert done.returncode != 0 and "'lr' is not option=value" in done.stderr
