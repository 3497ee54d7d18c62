"""Reliability of training: exact resumption after SIGKILL, checkpoint hygiene, non-finite losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmtl.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]


def tiny_yaml(synthetic_vl, tmp_path, **extra) -> Path:
    data, model_dir = synthetic_vl
    values = {
        "tasks": ["vqa", "retrieval", "caption"], "data": "jsonl", "train_file": str(data / "train.jsonl"),
        "val_file": str(data / "val.jsonl"), "image_dir": str(data), "model": f"local-dir:{model_dir}",
        "batch_size": 8, "workers": 2, "r": 4, "dropout": 0.1, "seed": 3, "max_steps": 20, "save_every": 5,
        "keep_last": 2, "log_every": 1,
    }
    values.update(extra)
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in values.items()) + "\n")
    return path


def command(config: Path, output: Path, script: str = "train_vl.py") -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / script), "--config", str(config), "--output", str(output)]


def assert_killed_run_resumes_exactly(config: Path, tmp_path: Path, script: str, steps: int,
                                      weight_files: tuple[str, ...]) -> None:
    """Run ``script`` once whole; run it again, SIGKILL it after its first checkpoint, rerun
    the same command: it must resume and end with bit-identical weights and a full history."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(command(config, whole, script), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    process = subprocess.Popen(command(config, killed, script), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 300
    while not ckpt.checkpoints(killed / "checkpoints") and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed"
    last = ckpt.checkpoints(killed / "checkpoints")[-1]
    ckpt.load_checkpoint(last)  # whole, even if the kill came during the next write (its .tmp may remain)

    resumed = subprocess.run(command(config, killed, script), capture_output=True, text=True, timeout=600,
                             cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert not list((killed / "checkpoints").glob(".*.tmp")), "temporary files of the killed run remain"
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith(last.name) and metrics["steps"] == steps
    for name in weight_files:
        a, b = load_file(str(whole / name)), load_file(str(killed / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resuming"
    history = [json.loads(line) for line in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == list(range(1, steps + 1))


def test_killed_run_resumes_to_the_same_adapters_as_an_uninterrupted_run(synthetic_vl, tmp_path):
    assert_killed_run_resumes_exactly(tiny_yaml(synthetic_vl, tmp_path), tmp_path, "train_vl.py", 20,
                                      ("adapters/vlmtl_adapter_model.safetensors", "heads.safetensors"))


def test_killed_dense_run_resumes_to_the_same_weights(tmp_path):
    """The dense path on the same engine: MTLoRA with dropout and drop-path (both random),
    augmentation draws and a loader worker, killed after its first checkpoint."""
    from vlmtl.data import write_synthetic_pascal

    data = tmp_path / "PASCAL_MT"
    write_synthetic_pascal(data, n_train=8, n_val=4, seed=0, size=64)
    values = {
        "data": str(data), "img_size": 64, "r": 4, "batch_size": 4, "max_steps": 12, "save_every": 4,
        "workers": 1, "lr": 1e-3, "warmup_ratio": 0.2, "eval_batch_size": 4, "log_every": 1, "seed": 2,
        "drop_path_rate": 0.1, "dropout": 0.1,
        "timm_kwargs": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 4},
    }
    config = tmp_path / "dense.yaml"
    config.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in values.items()) + "\n")
    assert_killed_run_resumes_exactly(config, tmp_path, "train_dense.py", 12,
                                      ("adapters/vlmtl_adapter_model.safetensors", "heads.safetensors"))


def test_checkpoint_from_another_config_is_refused(synthetic_vl, tmp_path):
    config = tiny_yaml(synthetic_vl, tmp_path, max_steps=5, save_every=5, workers=0)
    out = tmp_path / "run"
    assert subprocess.run(command(config, out), capture_output=True, timeout=600, cwd=ROOT).returncode == 0
    other = tiny_yaml(synthetic_vl, tmp_path, max_steps=5, save_every=5, workers=0, r=8)
    result = subprocess.run(command(other, out), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode != 0
    assert "comes from another config (r: checkpoint 4 vs now 8)" in result.stderr


def test_keeps_the_last_k_and_the_best(tmp_path):
    folder = tmp_path / "checkpoints"
    for step, score in [(1, 5.0), (2, 1.0), (3, 4.0), (4, 3.0), (5, 6.0)]:
        ckpt.save_checkpoint(folder, step, {"step": step}, score, keep_last=2)
    assert [p.name for p in ckpt.checkpoints(folder)] == [
        "checkpoint-00000002.pt", "checkpoint-00000004.pt", "checkpoint-00000005.pt"]
    assert json.loads((folder / ckpt.BEST_FILE).read_text())["step"] == 2


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "checkpoint-00000001.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="cannot read checkpoint .*checkpoint-00000001.pt"):
        ckpt.load_checkpoint(bad)


def test_non_finite_losses_are_skipped_then_stop_the_run(synthetic_vl, tmp_path):
    from vlmtl.train import VLTrainConfig, train_vl
    from vlmtl.train.engine import NonFiniteLossError

    data, model_dir = synthetic_vl
    cfg = VLTrainConfig(tasks=["vqa", "retrieval"], data="jsonl", train_file=str(data / "train.jsonl"),
                        val_file=str(data / "val.jsonl"), image_dir=str(data), model=f"local-dir:{model_dir}",
                        batch_size=8, workers=0, r=4, max_steps=10, save_every=1, max_nonfinite=3,
                        lr=1e30, head_lr=1e30, warmup_ratio=0.0, grad_clip=0.0, output=str(tmp_path / "run"))
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row at step 2"):
        train_vl(cfg)  # step 1 blows the weights up; every later loss is inf/nan
    assert [p.name for p in ckpt.checkpoints(tmp_path / "run" / "checkpoints")] == ["checkpoint-00000001.pt"]


def test_partial_writes_of_a_killed_run_are_discarded(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".best.json.abc123.tmp").write_text("{")  # what a SIGKILL inside atomic_write leaves
    (folder / "best.json").write_text("{}")
    removed = ckpt.discard_partial_writes(folder)
    assert [p.name for p in removed] == [".best.json.abc123.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == ["best.json"]
    assert ckpt.discard_partial_writes(tmp_path / "absent") == []
