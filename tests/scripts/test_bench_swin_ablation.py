"""scripts/bench_swin_ablation.py through its real CLI on a tiny Swin at 64²: each fused path
switched off in turn gives the same loss (checked by the script before timing), the JSON and
the table are written, and the switches are put back afterwards."""

from __future__ import annotations

import importlib.util
import json

import pytest

from ..conftest import ROOT
from ..conftest import run_script as run

_spec = importlib.util.spec_from_file_location("bench_swin_ablation", ROOT / "scripts" / "bench_swin_ablation.py")
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)


def test_the_cli_times_every_variant_against_plain(tmp_path):
    out = tmp_path / "sub" / "ablation.json"
    result = run("bench_swin_ablation.py", "--tiny", "--rounds", "2", "--output", str(out), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["variants"] == list(ablation.VARIANTS)
    assert doc["ratio_to_plain"]["plain"]["median"] == 1.0
    for v in doc["variants"]:
        assert len(doc["cpu_s"][v]["values"]) == 2 and all(t > 0 for t in doc["cpu_s"][v]["values"])
    fused = doc["losses"]["fused"]
    assert all(abs(loss - fused) <= 1e-4 * abs(fused) for loss in doc["losses"].values())
    assert "| no_fused_mlp |" in result.stdout and "CPU time / plain" in result.stdout


def test_switches_are_restored_and_names_are_checked():
    import vlmtl.adapters.layers as layers
    import vlmtl.heads.dense as dense
    import vlmtl.models.swin_mtlora as swin
    from vlmtl.adapters.stream_mlp import composed_mlp_task_streams

    def current():
        return (swin.mlp_task_streams, layers.dropout_down_projection, swin._nchw, dense.pointwise_conv,
                swin.merged_reduction, layers._lora_linear, dense.pointwise_conv_norm_act, dense.bilinear_resize)

    before = current()
    with ablation.switched_off(ablation.SWITCHES):
        assert swin.mlp_task_streams is composed_mlp_task_streams
        assert dense.pointwise_conv is ablation._pointwise_conv_nchw
        assert swin.merged_reduction is ablation._merged_then_reduced
        assert layers._lora_linear is ablation._base_then_low_rank
        assert dense.pointwise_conv_norm_act is ablation._conv_then_norm
        assert dense.bilinear_resize is ablation._interpolate
    assert current() == before
    args = ablation.parse_args(["--variants", "none,plain", "--tiny"])
    assert args.variants == ["plain", "fused", "none"] and args.img_size == 64
    with pytest.raises(SystemExit):
        ablation.parse_args(["--variants", "fused,warp"])
