"""scripts/bench_task_mix.py through its real CLI on the embedded tiny CLIP: batches mixing 1, 2,
4 and 8 of 8 configured tasks timed against the single-task batch, the JSON and the table written."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from ..conftest import ROOT
from ..conftest import run_script as run

_spec = importlib.util.spec_from_file_location("bench_task_mix", ROOT / "scripts" / "bench_task_mix.py")
bench_task_mix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_task_mix)

MIXES = [1, 2, 4, 8]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "bench_task_mix.json"
    result = run("bench_task_mix.py", "--model", "default", "--batch-size", "8", "--mixes", "8,2,4",
                 "--rounds", "2", "--repeats", "1", "--output", str(out), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def test_parse_args():
    args = bench_task_mix.parse_args(["--mixes", "4,2"])
    assert args.mixes == [1, 2, 4]  # sorted, the single-task baseline added
    for bad in (["--mixes", "16"], ["--mixes", "0"], ["--mixes", "x"], ["--batch-size", "4", "--mixes", "8"],
                ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            bench_task_mix.parse_args(bad)


def test_task_ids_cycle_through_the_first_k_tasks():
    assert bench_task_mix.task_ids(8, 1, "cpu").tolist() == [0] * 8
    assert bench_task_mix.task_ids(8, 4, "cpu").tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_every_mix_is_measured_against_the_single_task_batch(bench):
    doc, _ = bench
    assert doc["mixes"] == MIXES and doc["num_tasks"] == 8 and doc["batch_size"] == 8
    assert doc["setup"]["adapted_linears"] > 0 and len(doc["setup"]["tasks"]) == 8
    for mix in MIXES:
        r = doc["results"][str(mix)]
        assert len(r["step_s"]["values"]) == 2 and all(math.isfinite(t) and t > 0 for t in r["step_s"]["values"])
        assert len(r["cpu_s"]["values"]) == 2 and all(math.isfinite(t) and t > 0 for t in r["cpu_s"]["values"])
        for key in ("ratio", "cpu_ratio"):
            assert len(r[key]["per_round"]) == 2
            assert r[key]["min"] <= r[key]["median"] <= r[key]["max"]
        # Samples do not see each other's tasks: task 0's rows equal the single-task batch's.
        assert r["max_abs_diff_task0_rows"] < 1e-4
        # Mixing keeps what autograd saves about the same (per-sample up-projections are tiny).
        assert r["saved_bytes"] > 0 and 0.95 < r["saved_ratio"] < 1.1
    assert doc["results"]["1"]["ratio"]["per_round"] == doc["results"]["1"]["cpu_ratio"]["per_round"] == [1.0, 1.0]


def test_prints_a_markdown_table(bench):
    doc, stdout = bench
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| tasks in the batch | step time (s) | time / single-task | CPU time (s) |")
    assert [int(row.split("|")[1]) for row in rows[1:]] == MIXES
    for row, mix in zip(rows[1:], MIXES, strict=True):
        assert f"{doc['ratio_step_time'][str(mix)]:.3f}" in row and f"{doc['ratio_cpu_time'][str(mix)]:.3f}" in row
