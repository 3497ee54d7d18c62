"""scripts/bench_memory.py through its real CLI on the embedded tiny CLIP: the configurations
(float32, gradient checkpointing, bf16 autocast) measured in their own subprocesses, the JSON and
the markdown table written."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from ..conftest import ROOT
from ..conftest import run_script as run

# The script as a module (its configuration parser), without putting scripts/ on sys.path.
_spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "scripts" / "bench_memory.py")
bench_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_memory)
parse_config, parse_configs = bench_memory.parse_config, bench_memory.parse_configs

CONFIGS = ["off", "checkpointing", "bf16"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "bench_memory.json"  # the folder is created
    # "on" is the earlier name of checkpointing: accepted, reported under the new name.
    result = run("bench_memory.py", "--model", "default", "--rounds", "1", "--batch-size", "8",
                 "--configs", "off,on,bf16", "--output", str(out), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def test_config_names():
    assert parse_config("on") == {"name": "checkpointing", "checkpointing": True, "mixed_precision": "no"}
    assert parse_config("bf16+on") == {"name": "checkpointing+bf16", "checkpointing": True,
                                       "mixed_precision": "bf16"}
    assert parse_config("off") == {"name": "off", "checkpointing": False, "mixed_precision": "no"}
    assert parse_configs("bf16,checkpointing") == ["off", "bf16", "checkpointing"]  # the baseline added first
    for bad in ("bf16+fp16", "checkpointing+on", "fp32", "", "off+bf16"):
        with pytest.raises(ValueError):
            parse_config(bad)
    with pytest.raises(ValueError):
        parse_configs("on,checkpointing")


def test_every_configuration_has_positive_finite_numbers(bench):
    doc, _ = bench
    assert doc["model"] == "default" and doc["loss"] == "heads" and doc["batch_size"] == 8
    assert doc["tasks"] == ["vqa", "retrieval", "caption", "extra"]
    assert doc["configs"] == CONFIGS and set(doc["results"]) == set(CONFIGS) == set(doc["ratios"])
    for config in CONFIGS:
        [child] = doc["raw"][config]
        assert child["config"] == config
        assert child["checkpointing"] == (config == "checkpointing")
        assert child["mixed_precision"] == ("bf16" if config == "bf16" else "no")
        for key in ("peak_bytes", "before_bytes", "increment_bytes", "step_s"):
            stats = doc["results"][config][key]
            assert math.isfinite(stats["median"]) and stats["median"] > 0, (config, key, stats)
            assert stats["min"] <= stats["median"] <= stats["max"]
        assert doc["results"][config]["peak_bytes"]["median"] > doc["results"][config]["before_bytes"]["median"]


def test_autocast_takes_effect_only_in_bf16(bench):
    doc, _ = bench
    assert "bfloat16" in doc["forward_dtypes"]["bf16"]
    assert doc["forward_dtypes"]["off"] == doc["forward_dtypes"]["checkpointing"] == ["float32"]


def test_ratios_are_config_over_off_and_checkpointing_keeps_less(bench):
    doc, _ = bench
    off = doc["results"]["off"]
    for config in CONFIGS:
        res, ratio = doc["results"][config], doc["ratios"][config]
        assert doc["ratio_increment"][config] == ratio["increment"]["median"] == pytest.approx(
            res["increment_bytes"]["median"] / off["increment_bytes"]["median"])
        assert doc["ratio_step_time"][config] == ratio["step_s"]["median"] == pytest.approx(
            res["step_s"]["median"] / off["step_s"]["median"])
        assert ratio["peak"]["median"] == pytest.approx(res["peak_bytes"]["median"] / off["peak_bytes"]["median"])
        assert math.isfinite(ratio["increment"]["median"]) and ratio["increment"]["median"] > 0
    assert doc["ratios"]["off"]["increment"]["median"] == pytest.approx(1.0)
    # The towers' activations are about half of the tiny model's step increment (~40 MiB off,
    # ~25 MiB with checkpointing at batch 8): recomputing blocks in backward must keep less alive.
    assert doc["results"]["checkpointing"]["increment_bytes"]["median"] < off["increment_bytes"]["median"]


def test_prints_a_markdown_table(bench):
    doc, stdout = bench
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| config | grad checkpointing | autocast |") and "peak RSS (MiB)" in rows[0]
    cells = [[cell.strip() for cell in row.split("|")[1:4]] for row in rows[1:]]  # rows[1] is |---|
    assert cells == [["off", "off", "no"], ["checkpointing", "on", "no"], ["bf16", "off", "bf16"]]
    for row, config in zip(rows[1:], CONFIGS, strict=True):
        assert f"{doc['ratio_increment'][config]:.3f}" in row and f"{doc['ratio_step_time'][config]:.3f}" in row
