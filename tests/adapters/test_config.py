"""Config validation and JSON round trip."""

from __future__ import annotations

import pytest

from vlmtl.adapters import AdapterConfig, LoRAConfig, MTLLoRAConfig, MTLoRAConfig


@pytest.mark.parametrize("config", [
    LoRAConfig(r=4, target_modules=["q_proj"]),
    MTLLoRAConfig(tasks=["a", "b"], r=8, alpha=16, n_up=2, temperature=0.8, lambda_type="diagonal",
                  target_modules=r".*fc\d"),
    MTLoRAConfig(tasks=["seg", "parts"], r=16, r_task=4, task_specific_modules=["fc1"]),
])
def test_json_round_trip(tmp_path, config):
    config.to_json(tmp_path / "c.json")
    loaded = AdapterConfig.from_json(tmp_path / "c.json")
    assert type(loaded) is type(config) and loaded == config


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=[]), "at least one task"),
    (dict(tasks=["a", "a"]), "unique"),
    (dict(tasks="vqa"), "list of task names"),
    (dict(r=0), "rank r must be positive"),
    (dict(temperature=0), "temperature must be positive"),
    (dict(n_up=0), "n_up must be positive"),
    (dict(lambda_type="dense"), "lambda_type"),
    (dict(dropout=1.5), "dropout"),
    (dict(target_modules=[]), "target_modules is empty"),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MTLLoRAConfig(**kwargs)


def test_task_index_and_scaling():
    config = MTLLoRAConfig(tasks=["vqa", "caption"], r=8, alpha=16)
    assert config.task_index("caption") == 1 and config.task_index(0) == 0 and config.scaling == 2.0
    with pytest.raises(ValueError, match="unknown task 'x'"):
        config.task_index("x")
    with pytest.raises(ValueError, match="out of range"):
        config.task_index(2)
    assert MTLoRAConfig(tasks=["a"], scale=4.0, r=16, alpha=1).scaling == 4.0


def test_unknown_method_and_fields_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match="unknown adapter method 'ia3'"):
        AdapterConfig.from_dict({"method": "ia3"})
    with pytest.raises(ValueError, match=r"has no fields \['rank'\]"):
        AdapterConfig.from_dict({"method": "lora", "rank": 4})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        AdapterConfig.from_json(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        AdapterConfig.from_json(tmp_path / "missing.json")
