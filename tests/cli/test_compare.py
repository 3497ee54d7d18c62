"""Finished runs are read back only when they were trained with the options asked for."""

from __future__ import annotations

import json

import pytest

from vlmtl.cli.compare import finished_run
from vlmtl.train import VLTrainConfig


def _finished(tmp_path, **options) -> VLTrainConfig:
    cfg = VLTrainConfig(output=str(tmp_path / "run"), **options)
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run" / "config.yaml")
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"metrics": {"vqa": {"accuracy": 50.0}}}))
    return cfg


def test_a_finished_run_with_the_same_options_is_read_back(tmp_path):
    _finished(tmp_path, lr=1e-3, save_every=0)
    again = VLTrainConfig(output=str(tmp_path / "run"), lr=1e-3, save_every=100, log_every=1)  # bookkeeping differs
    assert finished_run(again)["metrics"]["vqa"]["accuracy"] == 50.0
    assert finished_run(VLTrainConfig(output=str(tmp_path / "elsewhere"))) is None


def test_a_finished_run_with_other_options_is_named_not_reused(tmp_path):
    _finished(tmp_path, lr=1e-3)
    with pytest.raises(ValueError, match=r"other options \(lr: 0.001, asked for 0.002\)"):
        finished_run(VLTrainConfig(output=str(tmp_path / "run"), lr=2e-3))


def test_options_added_after_a_run_count_as_their_defaults(tmp_path):
    cfg = _finished(tmp_path, lr=1e-3)
    saved = tmp_path / "run" / "config.yaml"
    saved.write_text("\n".join(line for line in saved.read_text().splitlines()
                               if not line.startswith(("mixing_lr", "synthetic_interference"))))
    assert finished_run(cfg) is not None
    with pytest.raises(ValueError, match="mixing_lr: None, asked for 0.1"):
        finished_run(VLTrainConfig(output=cfg.output, lr=1e-3, mixing_lr=0.1))


def test_mtl_lora_options_do_not_tell_lora_runs_apart(tmp_path):
    cfg = _finished(tmp_path, method="lora", n_up=3, temperature=0.5)
    assert finished_run(VLTrainConfig(output=cfg.output, method="lora", n_up=2, temperature=0.8)) is not None
    (tmp_path / "m").mkdir()
    _finished(tmp_path / "m", method="mtl_lora", n_up=3)
    with pytest.raises(ValueError, match="n_up: 3, asked for 2"):
        finished_run(VLTrainConfig(output=str(tmp_path / "m" / "run"), method="mtl_lora", n_up=2))
