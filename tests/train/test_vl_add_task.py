"""train_vl.py --add-task NAME --from RUN_DIR: a new task for a trained MTL-LoRA run, the old
tasks' weights and metrics unchanged (real CLI, tiny CLIP)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from vlmtl.train.config import VLTrainConfig

from ..conftest import run_script

ADAPTERS = "adapters/vlmtl_adapter_model.safetensors"


def run(data, model_dir, output, *extra):
    args = ["--data", "jsonl", "--train-file", str(data / "train.jsonl"), "--val-file", str(data / "val.jsonl"),
            "--image-dir", str(data), "--model", f"local-dir:{model_dir}", "--r", "4", "--batch-size", "8",
            "--max-steps", "4", "--workers", "0", "--save-every", "0", "--output", str(output), *extra]
    return run_script("train_vl.py", *args)


def test_added_task_trains_and_old_tasks_keep_their_weights_and_metrics(synthetic_vl, tmp_path):
    data, model_dir = synthetic_vl
    base = run(data, model_dir, tmp_path / "base", "--tasks", "vqa,retrieval")
    assert base.returncode == 0, base.stderr[-3000:]
    added = run(data, model_dir, tmp_path / "added", "--tasks", "vqa,retrieval,caption", "--add-task", "caption",
                "--from", str(tmp_path / "base"))
    assert added.returncode == 0, added.stderr[-3000:]
    before = json.loads((tmp_path / "base" / "metrics.json").read_text())
    after = json.loads((tmp_path / "added" / "metrics.json").read_text())
    assert after["added_task"] == "caption" and set(after["metrics"]) == {"vqa", "retrieval", "caption"}
    for task in ("vqa", "retrieval"):
        assert after["metrics"][task] == before["metrics"][task], task
    old, new = load_file(str(tmp_path / "base" / ADAPTERS)), load_file(str(tmp_path / "added" / ADAPTERS))
    assert old.keys() == new.keys()
    changed = 0
    for key, tensor in old.items():
        if key.endswith((".Lambda", ".w")):  # the old tasks' rows, then the new task's row
            assert torch.equal(new[key][: tensor.shape[0]], tensor), key
            assert new[key].shape[0] == tensor.shape[0] + 1
            changed += int(not torch.allclose(new[key][-1], new[key][-2]))
        else:
            assert torch.equal(new[key], tensor), f"{key} (shared) changed"
    assert changed > 0, "the new task's Λ and w did not train"
    heads_before, heads_after = load_file(str(tmp_path / "base" / "heads.safetensors")), load_file(
        str(tmp_path / "added" / "heads.safetensors"))
    assert all(torch.equal(heads_after[k], v) for k, v in heads_before.items())
    assert any(k.startswith("caption.") for k in heads_after)


def test_add_task_refusals_name_the_problem(synthetic_vl, tmp_path):
    data, model_dir = synthetic_vl
    (tmp_path / "lora").mkdir()
    VLTrainConfig.from_defaults(tasks=["vqa"], method="lora").save(tmp_path / "lora" / "config.yaml")
    refused = run(data, model_dir, tmp_path / "x", "--tasks", "vqa,caption", "--add-task", "caption",
                  "--from", str(tmp_path / "lora"))
    assert refused.returncode != 0 and "extends an MTL-LoRA CLIP run" in refused.stderr
    alone = run(data, model_dir, tmp_path / "y", "--add-task", "caption")
    assert alone.returncode != 0 and "go together" in alone.stderr
