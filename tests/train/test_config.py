"""The training config: YAML defaults, overrides, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vlmtl.train import VLTrainConfig

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "configs" / "vl_default.yaml"


def test_default_yaml_holds_every_option_with_the_dataclass_defaults():
    loaded = yaml.safe_load(DEFAULT_YAML.read_text())
    assert loaded == VLTrainConfig().to_dict()


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tasks: [vqa, caption]\nr: 4\nmethod: lora\n")
    cfg = VLTrainConfig.from_sources(path, r=16, method=None)
    assert cfg.tasks == ["vqa", "caption"] and cfg.r == 16 and cfg.method == "lora"
    cfg.save(tmp_path / "resolved.yaml")
    assert VLTrainConfig.from_sources(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"tasks": "vqa,segmentation"}, r"unknown task\(s\) \['segmentation'\]"),
    ({"tasks": ""}, "tasks is empty"),
    ({"tasks": "vqa,vqa"}, "named twice"),
    ({"method": "adapter"}, "unknown method 'adapter'"),
    ({"sampling": "random"}, "unknown sampling 'random'"),
    ({"max_steps": 0}, "must be positive"),
    ({"rank": 3}, r"unknown option\(s\) \['rank'\]"),
])
def test_bad_options_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        VLTrainConfig.from_sources(None, **overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        VLTrainConfig.from_sources(tmp_path / "nope.yaml")


def test_both_training_scripts_have_a_flag_for_every_shared_option_with_the_same_name():
    import dataclasses

    from vlmtl.cli import train_dense, train_vl
    from vlmtl.train.config import TrainConfig

    def flags(parser) -> set[str]:
        return {option for action in parser._actions for option in action.option_strings}

    shared = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    vl, dense = flags(train_vl.build_parser()), flags(train_dense.build_parser())
    assert shared <= vl and shared <= dense, (shared - vl, shared - dense)
    assert {"--resume", "--save-every", "--mixed-precision", "--grad-checkpointing", "--threads"} <= shared
    cfg = train_vl.parse_args(["--resume", "never", "--save-every", "7", "--loss-weights", "{vqa: 2}", "--lr", "1e-3",
                               "--vision-targets", "[mlp.c_fc]", "--grad-checkpointing", "true"])
    assert (cfg.resume, cfg.save_every, cfg.loss_weights, cfg.lr) == ("never", 7, {"vqa": 2}, 1e-3)
    assert (cfg.vision_targets, cfg.grad_checkpointing) == (["mlp.c_fc"], True)
    dense_cfg, _ = train_dense.parse_args(["--resume", "never", "--save-every", "7", "--method", "heads_only"])
    assert (dense_cfg.resume, dense_cfg.save_every, dense_cfg.method) == ("never", 7, "heads_only")


def test_synthetic_interference_is_checked_and_gets_its_own_cache_folder(tmp_path):
    from vlmtl.train.vl_data import ensure_synthetic

    with pytest.raises(ValueError, match=r"synthetic_interference must be in \[0, 1\]"):
        VLTrainConfig(synthetic_interference=2.0)
    with pytest.raises(ValueError, match="shapes the generated data set"):
        VLTrainConfig(synthetic_interference=0.5, data="jsonl", train_file="t.jsonl", val_file="v.jsonl")
    small = dict(synthetic_train_images=4, synthetic_val_images=2)
    plain = ensure_synthetic(VLTrainConfig(data_root=str(tmp_path / "a"), **small))
    conflict = ensure_synthetic(VLTrainConfig(data_root=str(tmp_path / "b"), synthetic_interference=0.5, **small))
    assert json.loads((conflict / "meta.json").read_text())["interference"] == 0.5
    assert json.loads((plain / "meta.json").read_text())["interference"] == 0.0
