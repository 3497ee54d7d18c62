"""diagnose_vl.py: runs grouped by method, the curves and measurements drawn and tabulated."""

from __future__ import annotations

from vlmtl.train import train_vl

from ..conftest import run_script
from ..train.test_vl_trainer import tiny_config


def test_runs_of_two_methods_are_drawn_and_tabulated(synthetic_vl, tmp_path):
    runs = []
    for method, seed in (("lora", 0), ("mtl_lora", 0), ("mtl_lora", 1)):
        out = tmp_path / f"{method}{seed}"
        train_vl(tiny_config(synthetic_vl, tasks=["vqa", "caption"], method=method, seed=seed, max_steps=4,
                             log_every=2, save_every=0, eval_max_samples=2, output=str(out)))
        runs.append(str(out))
    done = run_script("diagnose_vl.py", *runs, "--label-by", "lr,n_up", "--output", str(tmp_path / "diag"))
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "diag" / "diagnosis.md").read_text()
    mtl = [line for line in table.splitlines() if line.startswith("| mtl_lora lr=0.001 n_up=2 |")]
    lora = [line for line in table.splitlines() if line.startswith("| lora lr=0.001 |")]  # n_up: MTL-LoRA's only
    assert any("mixing entropy" in line for line in mtl) and not any("mixing" in line for line in lora)
    assert any("vqa loss" in line for line in lora) and any("step change of ΔW_t / lr" in line for line in mtl)
    assert (tmp_path / "diag" / "diagnosis.png").stat().st_size > 20_000


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    done = run_script("diagnose_vl.py", str(tmp_path), "--output", str(tmp_path / "diag"))
    assert done.returncode != 0 and "train_log.jsonl is missing" in done.stderr
