"""scripts/bench_swin.py through its real CLI on a tiny Swin at 64²: each variant in its own
subprocess, the official MTLoRA built from the git mirror as its main.py builds it, the JSON and
the markdown table written."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from ..conftest import ROOT
from ..conftest import run_script as run

_spec = importlib.util.spec_from_file_location("bench_swin", ROOT / "scripts" / "bench_swin.py")
bench_swin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_swin)

HAVE_OFFICIAL = (bench_swin.OFFICIAL_REPO / "HEAD").exists() and importlib.util.find_spec("yacs") is not None
# Three children (~6 s each, mostly imports) keep this under 30 s; the MTL-LoRA variants use the same builder.
VARIANTS = ["plain", "vlmtl_mtlora", *(["official_mtlora"] if HAVE_OFFICIAL else [])]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "bench_swin.json"  # the folder is created
    result = run("bench_swin.py", "--tiny", "--rounds", "1", "--steps", "1", "--variants",
                 ",".join(VARIANTS[1:]), "--output", str(out), timeout=240)  # plain added as the baseline
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def test_parse_args():
    args = bench_swin.parse_args(["--variants", "vlmtl_mtlora,plain", "--tiny"])
    assert args.variants == ["plain", "vlmtl_mtlora"] and args.img_size == 64
    assert bench_swin.parse_args([]).img_size == 448
    assert bench_swin.parse_args([]).variants == list(bench_swin.VARIANTS)
    for bad in (["--variants", "plain,lora"], ["--variants", "plain,plain"], ["--batch-size", "1"]):
        with pytest.raises(SystemExit):
            bench_swin.parse_args(bad)


def test_every_variant_has_positive_finite_numbers(bench):
    doc, _ = bench
    assert doc["variants"] == VARIANTS and doc["img_size"] == 64 and doc["batch_size"] == 2
    for variant in VARIANTS:
        [child] = doc["raw"][variant]
        assert child["variant"] == variant and child["outputs"] == 4
        for key in ("step_s", "cpu_s", "increment_bytes"):
            stats = doc["results"][variant][key]
            assert math.isfinite(stats["median"]) and stats["median"] > 0, (variant, key, stats)
        ratio = doc["ratios"][variant]["step_s"]["median"]
        assert ratio == pytest.approx(doc["results"][variant]["step_s"]["median"]
                                      / doc["results"]["plain"]["step_s"]["median"])
    assert doc["ratio_step_time"]["plain"] == doc["ratio_cpu_time"]["plain"] == doc["ratio_memory"]["plain"] == 1.0


def test_trainable_sets(bench):
    doc, _ = bench
    setup = doc["setup"]
    assert setup["plain"]["trainable_parameters"] == setup["plain"]["parameters"]  # full fine-tuning
    for variant in VARIANTS[1:]:  # frozen base: most of the backbone does not train
        assert setup[variant]["trainable_parameters"] < 0.8 * setup[variant]["parameters"]


@pytest.mark.skipif(not HAVE_OFFICIAL, reason="needs the official MTLoRA git mirror and yacs")
def test_vlmtl_mtlora_has_the_official_parameters(bench):
    """Built from the official yaml as main.py builds it, the official model has exactly vlmtl's
    parameter count and trainable set (adapters, decoders, norms, patch embedding, ...)."""
    doc, _ = bench
    assert doc["official"]["official_tasks"] == ["semseg", "human_parts", "sal", "normals"]
    assert doc["official"]["official_r"] == [16] * 4 and doc["official"]["official_scale"] == [4.0] * 4
    assert doc["setup"]["official_mtlora"] == doc["setup"]["vlmtl_mtlora"]


def test_prints_a_markdown_table(bench):
    doc, stdout = bench
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| variant | parameters | trainable | step time (s) | time / plain | CPU time (s) |")
    assert [row.split("|")[1].strip() for row in rows[1:]] == VARIANTS
    for row, variant in zip(rows[1:], VARIANTS, strict=True):
        for ratio in ("ratio_step_time", "ratio_cpu_time", "ratio_memory"):
            assert f"{doc[ratio][variant]:.3f}" in row
