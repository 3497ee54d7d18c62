"""scripts/bench_models.py through its real CLI on tiny shapes: every benchmark (clip, llava, merged) in
one run, each variant in its own process; the JSON, the ratios, the equal-outputs check, the routing of
the mixed-task batch and the markdown tables."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from ..conftest import ROOT
from ..conftest import run_script as run

_spec = importlib.util.spec_from_file_location("bench_models", ROOT / "scripts" / "bench_models.py")
bench_models = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_models", bench_models)  # its dataclass looks its module up there
_spec.loader.exec_module(bench_models)

TRAINING = ("clip", "llava")
TASKS = 4


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub"  # the folder is created
    result = run("bench_models.py", "all", "--tiny", "--rounds", "2", "--steps", "1", "--profile", "3",
                 "--output-dir", str(out), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    docs = {what: json.loads((out / f"bench_models_{what}.json").read_text()) for what in (*TRAINING, "merged")}
    markdown = {what: (out / f"bench_models_{what}.md").read_text() for what in docs}
    return docs, markdown, result.stdout


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_tiny_defaults_and_option_errors():
    args = bench_models.parse_args(["clip", "--tiny", "--llava-seq", "8"])
    assert args.clip_model == "default" and args.llava_hidden == 64 and args.llava_seq == 8  # explicit wins
    full = bench_models.parse_args(["llava"])
    assert (full.llava_hidden, full.llava_intermediate, full.llava_heads, full.llava_seq) == (4096, 11008, 32, 256)
    for bad in (["clip", "--variants", "peft"], ["clip", "--variants", "mtl_lora,mtl_lora"],
                ["merged", "--merged-backbones", "swin"], ["clip", "--tiny", "--clip-batch", "2"]):
        with pytest.raises(SystemExit):
            bench_models.parse_args(bad)


@pytest.mark.parametrize("what", TRAINING)
def test_both_variants_have_positive_finite_numbers(bench, what):
    docs, _, _ = bench
    doc = docs[what]
    assert doc["variants"] == ["peft", "mtl_lora"] and doc["baseline"] == "peft"
    assert doc["rounds"] == 2 and doc["optimizer"] == "adamw" and doc["memory_kind"] == "rss"
    for variant in doc["variants"]:
        assert len(doc["raw"][variant]) == 2
        assert [x["round"] for x in doc["raw"][variant]] == [0, 1]
        for key in ("step_s", "step_cpu_s", "increment_bytes", "peak_bytes", "before_bytes", "memory_step_s"):
            stats = doc["results"][variant][key]
            assert positive(stats["median"]), (variant, key, stats)
            assert stats["min"] <= stats["median"] <= stats["max"]
        assert doc["results"][variant]["peak_bytes"]["median"] > doc["results"][variant]["before_bytes"]["median"]
        assert doc["trainable_parameters"][variant] > 0
    # MTL-LoRA has more trainable parameters than one LoRA (Λ per task, n_up B's), on the same modules.
    assert doc["trainable_parameters"]["mtl_lora"] > doc["trainable_parameters"]["peft"]
    assert doc["adapted_modules"]["mtl_lora"] == doc["adapted_modules"]["peft"] == doc["check"]["adapted_modules"] > 0
    for variant in doc["variants"]:
        assert doc["parameters"][variant] > doc["trainable_parameters"][variant]  # the base is frozen


@pytest.mark.parametrize("what", TRAINING)
def test_ratios_are_variant_over_peft_medians(bench, what):
    docs, _, _ = bench
    doc = docs[what]
    res, peft = doc["results"], doc["results"]["peft"]
    for variant in doc["variants"]:
        q = doc["ratios"][variant]
        assert q["step_s"]["median"] == pytest.approx(res[variant]["step_s"]["median"] / peft["step_s"]["median"])
        assert q["increment"]["median"] == pytest.approx(
            res[variant]["increment_bytes"]["median"] / peft["increment_bytes"]["median"])
        assert q["peak"]["median"] == pytest.approx(res[variant]["peak_bytes"]["median"] / peft["peak_bytes"]["median"])
        assert q["step_cpu_s"]["median"] == pytest.approx(
            res[variant]["step_cpu_s"]["median"] / peft["step_cpu_s"]["median"])
        assert doc["ratio_time"][variant] == q["step_s"]["median"]
        assert doc["ratio_cpu_time"][variant] == q["step_cpu_s"]["median"]
        assert doc["ratio_memory"][variant] == q["increment"]["median"]
        per_round = [x["step_s"] / p["step_s"] for x, p in zip(doc["raw"][variant], doc["raw"]["peft"], strict=True)]
        assert q["step_s"]["per_round"] == pytest.approx(per_round)
        assert q["step_s"]["min"] == pytest.approx(min(per_round)) and q["step_s"]["max"] == pytest.approx(
            max(per_round))
    assert doc["ratios"]["peft"]["step_s"]["median"] == pytest.approx(1.0)
    assert doc["met"]["mtl_lora"]["time"] == (doc["ratio_time"]["mtl_lora"] <= 1.10)


@pytest.mark.parametrize("what", TRAINING)
def test_peft_and_vlmtl_give_the_same_outputs(bench, what):
    check = bench[0][what]["check"]
    assert check["same_modules"] and check["task_ids"] == [0, 1, 2, 3]
    init = check["init"]  # B = 0 in both: both are the base model
    assert init["max_abs_peft_minus_base"] <= 1e-5 * init["max_abs_base"]
    assert init["max_abs_vlmtl_minus_peft"] <= 1e-5 * init["max_abs_base"]
    equal = check["equal_adapters"]  # every task's adapter = PEFT's, B random: the adapters matter, and agree
    assert equal["max_abs_peft_minus_base"] > 0.05 * equal["max_abs_peft"]
    assert equal["max_abs_vlmtl_minus_peft"] <= 1e-5 * equal["max_abs_peft"]
    if what == "clip":  # PEFT's MultiheadAttention out_proj LoRA: applied once, or twice (peft#3774)
        m = check["mha_out_proj"]
        assert m["layers"] == equal["mha_out_proj_b_zero"] > 0
        assert min(m["max_abs_vlmtl_minus_peft"], m["max_abs_vlmtl_2x_out_proj_minus_peft"]) <= 1e-5 * equal[
            "max_abs_peft"]
    else:
        assert "mha_out_proj" not in check and equal["mha_out_proj_b_zero"] == 0


@pytest.mark.parametrize("what", TRAINING)
def test_the_vlmtl_variant_routed_four_tasks(bench, what):
    doc = bench[0][what]
    routing = doc["check"]["routing"]
    assert routing["routed_layers"] == routing["layers_called"] == routing["layers_mixed_all_tasks"] > 0
    assert routing["tasks_seen"] == list(range(TASKS))
    for measured in doc["routing"]["mtl_lora"]:  # the benchmark processes' own warm-up steps
        assert measured == routing
    per_task = doc["check"]["per_task"]  # a mixed batch's row = its own task's single-task output
    assert per_task["max_abs_mixed_minus_single_task"] <= 1e-5 * doc["check"]["equal_adapters"]["max_abs_peft"]
    assert per_task["min_task_to_task_max_abs"] > 1e-3
    assert all(x["routing"] is None for x in doc["raw"]["peft"])


def test_merged_inference(bench):
    doc = bench[0]["merged"]
    assert doc["baseline"] == "base" and list(doc["backbones"]) == ["clip", "llava"]
    for backbone, res in doc["backbones"].items():
        assert res["variants"] == ["base", "merge", "merge_and_unload"]
        for variant in res["variants"]:
            stats = res["results"][variant]
            assert positive(stats["median"]) and len(stats["values"]) == 2, (backbone, variant)
            assert res["ratios"][variant]["median"] == pytest.approx(stats["median"] / res["results"]["base"]["median"])
            cpu = res["results_cpu"][variant]
            assert positive(cpu["median"]) and len(cpu["values"]) == 2, (backbone, variant)
            assert res["ratio_cpu_time"][variant] == pytest.approx(cpu["median"] / res["results_cpu"]["base"]["median"])
        # merging changes the weights and keeps the task's outputs
        assert res["max_abs_merge_minus_unmerged"] <= 1e-4 * res["max_abs_output"]
        assert res["max_abs_unload_minus_unmerged"] <= 1e-4 * res["max_abs_output"]
        held = res["held_bytes"]
        assert held["merge_and_unload"] == held["base"] < held["merge"]  # merge keeps adapters and the originals


def test_markdown_tables(bench):
    docs, markdown, stdout = bench
    for what in TRAINING:
        text = markdown[what]
        assert text in stdout
        assert "command: `python scripts/bench_models.py all --tiny" in text and "nproc" in text
        assert f"peft {docs[what]['machine']['peft']}" in text and f"torch {docs[what]['machine']['torch']}" in text
        rows = [line for line in text.splitlines() if line.startswith("| PEFT") or line.startswith("| vlmtl")]
        assert len(rows) == 2
        assert f"{docs[what]['ratio_time']['mtl_lora']:.3f}" in rows[1]
        assert f"{docs[what]['ratio_memory']['mtl_lora']:.3f}" in rows[1]
        assert f"{docs[what]['ratio_cpu_time']['mtl_lora']:.3f}" in rows[1]
        assert "top ops by self CPU time" in text
    merged = markdown["merged"]
    assert merged.count("| vlmtl MTL-LoRA merge(task) |") == 2
    assert f"{docs['merged']['backbones']['llava']['ratio_time']['merge']:.3f}" in merged
