"""interference_vl.py: the runs per level and seed, one VQA single-task run per seed, the gaps."""

from __future__ import annotations

import csv

import yaml

from ..conftest import run_script
from .test_sweep_vl import _small_config


def test_levels_give_runs_gaps_and_a_figure(tmp_path):
    out = tmp_path / "out"
    done = run_script("interference_vl.py", "--config", str(_small_config(tmp_path)), "--levels", "0,1",
                      "--seeds", "0", "--max-steps", "1", "--output", str(out), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (out / "single_vqa").iterdir()) == ["seed0"]  # one VQA run serves both levels
    for level in ("level0", "level1"):
        assert {p.name for p in (out / level / "seed0").iterdir()} == {"lora_retrieval", "lora_shared", "mtl_lora"}
    vqa_config = yaml.safe_load((out / "single_vqa" / "seed0" / "config.yaml").read_text())
    assert vqa_config["synthetic_interference"] == 0.0 and vqa_config["tasks"] == ["vqa"]
    with (out / "results_seeds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    value = {(r["level"], r["method"]): float(r["retrieval/rsum"]) for r in rows}
    table = (out / "results.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith("| 1 | retrieval"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[5]) == round(value[("1.0", "single")] - value[("1.0", "shared")], 1)
    assert float(cells[6]) == round(value[("1.0", "mtl_lora")] - value[("1.0", "shared")], 1)
    assert (out / "results.png").stat().st_size > 10_000


def test_levels_outside_zero_one_are_refused(tmp_path):
    done = run_script("interference_vl.py", "--levels", "0,2", "--output", str(tmp_path))
    assert done.returncode != 0 and "levels must be in [0, 1], got [2.0]" in done.stderr
