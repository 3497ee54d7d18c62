"""compare_dense.py --seeds: every row per seed, Δm against each seed's own single-task rows."""

from __future__ import annotations

import csv

import yaml

from ..conftest import run_script

TINY = {"model": "swin_tiny_patch4_window7_224", "img_size": 64, "r": 4, "batch_size": 4, "max_steps": 1,
        "timm_kwargs": {"embed_dim": 24, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 3, 6], "window_size": 2},
        "tasks": ["semseg", "normals"], "synthetic_train_images": 8, "synthetic_val_images": 4, "synthetic_size": 64,
        "workers": 0, "save_every": 0, "eval_batch_size": 4}


def test_seeds_give_per_seed_rows_and_mean_std_cells(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "data_root": str(tmp_path / "data")}))
    done = run_script("compare_dense.py", "--config", str(tmp_path / "tiny.yaml"), "--seeds", "0,1",
                      "--output", str(tmp_path / "out"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    with (out / "results_seeds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["seed"] for r in rows}) == ["0", "1"] and len(rows) == 2 * 6
    assert all(float(r["delta_m"]) == 0.0 for r in rows if r["method"].startswith("single-task"))
    with (out / "results.csv").open() as f:
        means = {r["method"]: r for r in csv.DictReader(f)}
    mtlora = [float(r["semseg_mIoU"]) for r in rows if r["method"] == "MTLoRA"]
    assert float(means["MTLoRA"]["semseg_mIoU"]) == sum(mtlora) / 2
    table = (out / "results.md").read_text()
    assert "±" in table and "mean ± std over seeds 0, 1" in table
    assert (out / "seed1" / "mtlora" / "metrics.json").is_file()
