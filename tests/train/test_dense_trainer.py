"""Dense multi-task training (MTLoRA on PASCAL-Context layout): config, evaluation plumbing,
train_dense end to end on a tiny Swin, all-ignore human-parts batches, resumption, errors,
and scripts/train_dense.py --describe."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from vlmtl.data import PascalContextMT, write_synthetic_pascal
from vlmtl.data.pascal import read_human_parts
from vlmtl.heads.dense import MultiTaskDenseLoss
from vlmtl.metrics.dense import PAPER_SINGLE_TASK
from vlmtl.registry import DENSE_TASKS
from vlmtl.train import checkpoint as ckpt
from vlmtl.train.dense_config import DenseTrainConfig
from vlmtl.train.dense_eval import HEADLINE, DenseMeters, dense_delta_m, evaluate_dense
from vlmtl.train.dense_trainer import (
    build_dense_model,
    collate_dense,
    load_dense_weights,
    loss_targets,
    train_dense,
)

ROOT = Path(__file__).resolve().parents[2]
TASKS = list(DENSE_TASKS)
TINY_SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 4}


@pytest.fixture(scope="module")
def tiny_pascal(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pascal") / "PASCAL_MT"
    write_synthetic_pascal(root, n_train=8, n_val=4, seed=0, size=64)
    return root


def run_tensors(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor a dense run saved, under the model's names (backbone. / decoders.)."""
    adapters = load_file(str(out / "adapters" / "vlmtl_adapter_model.safetensors"))
    tensors = {f"backbone.{k}": v for k, v in adapters.items()}
    return {**tensors, **{f"decoders.{k}": v for k, v in load_file(str(out / "heads.safetensors")).items()}}


def tiny_cfg(data: Path, out: Path, **kw) -> DenseTrainConfig:
    values = dict(data=str(data), img_size=64, timm_kwargs=TINY_SWIN, r=4, batch_size=4, max_steps=3, workers=0,
                  lr=1e-3, warmup_ratio=0.3, eval_batch_size=4, save_every=0, output=str(out), log_every=1)
    values.update(kw)
    return DenseTrainConfig(**values)


# ----------------------------------------------------------------------------- config


def test_config_defaults_yaml_and_overrides(tmp_path):
    cfg = DenseTrainConfig()
    assert cfg.tasks == TASKS and cfg.method == "mtlora" and cfg.img_size == 448 and cfg.grad_clip == 5.0
    assert cfg.lr == pytest.approx(5e-4 * 32 / 512) and cfg.weight_decay == 0.05
    assert cfg.single_task_baselines == PAPER_SINGLE_TASK
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 64\nr: 32\ntasks: [semseg, normals]\n")
    cfg = DenseTrainConfig.from_sources(path, r=64, lr=None)
    assert (cfg.batch_size, cfg.r, cfg.tasks) == (64, 64, ["semseg", "normals"])
    assert cfg.lr == pytest.approx(5e-4 * 64 / 512)
    assert cfg.single_task_baselines == {"semseg": 67.21, "normals": 17.97}
    assert cfg.total_steps(10) == 3000 and DenseTrainConfig(max_steps=7).total_steps(10) == 7
    with pytest.raises(ValueError, match="unknown option"):
        DenseTrainConfig.from_sources(path, nonsense=1)
    with pytest.raises(ValueError, match="single_task trains one task"):
        DenseTrainConfig(method="single_task")
    for name in ("pascal_mtlora_r16", "pascal_mtlora_r32", "pascal_mtlora_r64", "dense_synthetic_small"):
        DenseTrainConfig.from_sources(ROOT / "configs" / f"{name}.yaml")


# ----------------------------------------------------------------------------- evaluation


def perfect_batch(seed: int = 0) -> tuple[dict, dict]:
    """Labels for two 16x16 images (the second has no person) and outputs that match them."""
    g = torch.Generator().manual_seed(seed)
    b, h, w = 2, 16, 16
    semseg = torch.randint(0, 21, (b, h, w), generator=g)
    semseg[:, 0] = 255
    parts = torch.randint(0, 7, (b, h, w), generator=g)
    parts[1] = 255  # no person: all ignore
    saliency = torch.randint(0, 2, (b, h, w), generator=g)
    saliency[:, :, 0] = 255
    normals = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
    mask = torch.rand(b, h, w, generator=g) > 0.3
    batch = {"image": torch.zeros(b, 3, h, w), "semseg": semseg, "human_parts": parts, "saliency": saliency,
             "normals": normals * mask.unsqueeze(1), "normals_mask": mask}
    parts_logits = nn.functional.one_hot(parts.clamp(max=6), 7).permute(0, 3, 1, 2).float() * 10
    parts_logits[1] = torch.randn(7, h, w, generator=g)  # garbage where nothing is labelled: must not count
    outputs = {
        "semseg": nn.functional.one_hot(semseg.clamp(max=20), 21).permute(0, 3, 1, 2).float() * 10,
        "human_parts": parts_logits,
        "saliency": (saliency.float() * 40 - 20).unsqueeze(1),
        "normals": normals * 3.0,
    }
    return batch, outputs


def test_perfect_predictions_give_perfect_metrics_and_delta_m():
    batch, outputs = perfect_batch()
    meters = DenseMeters(TASKS)
    meters.update(outputs, batch)
    metrics = meters.compute()
    assert set(metrics) == set(TASKS) and {t: set(v) for t, v in metrics.items()} == {
        "semseg": {"mIoU"}, "human_parts": {"mIoU"}, "saliency": {"maxF", "Beta maxF", "mIoU"},
        "normals": {"mean_angle"}}
    assert metrics["semseg"]["mIoU"] == pytest.approx(100.0)
    assert metrics["human_parts"]["mIoU"] == pytest.approx(100.0)
    assert meters.part_images == 1
    assert all(metrics["saliency"][k] == pytest.approx(100.0) for k in ("maxF", "Beta maxF", "mIoU"))
    assert metrics["normals"]["mean_angle"] == pytest.approx(0.0, abs=1e-3)
    assert HEADLINE["saliency"] == "mIoU"  # the official Δm uses saliency mIoU, as the paper's Table 1
    base = {"semseg": 50.0, "human_parts": 50.0, "saliency": 80.0, "normals": 20.0}
    expected = 100 * ((100 - 50) / 50 + (100 - 50) / 50 + (100 - 80) / 80 - (0 - 20) / 20) / 4
    assert dense_delta_m(metrics, base) == pytest.approx(expected, abs=1e-3)

    wrong = dict(outputs, semseg=outputs["semseg"].roll(1, dims=1), normals=-outputs["normals"])
    meters = DenseMeters(["semseg", "normals"])
    meters.update(wrong, batch)
    worse = meters.compute()
    assert worse["semseg"]["mIoU"] < 10 and worse["normals"]["mean_angle"] == pytest.approx(180.0, abs=1e-3)


def test_evaluate_dense_on_a_loader_reports_metrics_delta_m_and_speed():
    batch, outputs = perfect_batch()

    class Fixed(nn.Module):
        tasks = tuple(TASKS)

        def forward(self, images):
            return outputs

    no_person = dict(batch, human_parts=torch.full_like(batch["human_parts"], 255))
    result = evaluate_dense(Fixed(), [batch, no_person], "cpu", PAPER_SINGLE_TASK)
    assert result["images"] == 4 and result["human_parts_images"] == 1
    assert result["metrics"]["human_parts"]["mIoU"] == pytest.approx(100.0)
    assert result["headline"]["saliency"] == result["metrics"]["saliency"]["mIoU"]
    assert math.isfinite(result["delta_m"]) and result["inference_images_per_s"] > 0


# ----------------------------------------------------------------------------- training


def test_three_step_training_writes_the_run_folder(tiny_pascal, tmp_path):
    out = tmp_path / "run"
    document = train_dense(tiny_cfg(tiny_pascal, out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(document))
    assert set(metrics["metrics"]) == set(TASKS) and metrics["steps"] == 3
    assert isinstance(metrics["delta_m"], float)
    assert metrics["single_task_baselines"] == PAPER_SINGLE_TASK
    assert metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["train_images_per_s"] > 0 and metrics["inference_images_per_s"] > 0
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [1, 2, 3]
    assert all(math.isfinite(row[t]) for row in history for t in TASKS)
    assert all(math.isfinite(v) for v in metrics["final_losses"].values())
    for name in ("config.yaml", "training_curves.png", "adapters/vlmtl_adapter_config.json", "heads.safetensors"):
        assert (out / name).is_file(), name
    weights = run_tensors(out)  # the core's adapter format for the backbone, the decoders beside it
    assert sum(v.numel() for k, v in weights.items() if "running" not in k and "num_batches" not in k) == \
        metrics["trainable_parameters"]
    assert any(k.startswith("decoders.") and "running_mean" in k for k in weights)  # BatchNorm statistics kept
    model = build_dense_model(tiny_cfg(tiny_pascal, out))
    load_dense_weights(model, out)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert all(torch.equal(state[k], v) for k, v in weights.items())


def test_all_ignore_human_parts_batches_train_without_nan(tiny_pascal, tmp_path):
    root = tmp_path / "PASCAL_MT"
    shutil.copytree(tiny_pascal, root)
    split = root / "ImageSets" / "Context" / "train.txt"
    ids = split.read_text().split()
    shapes = {i: np.array(Image.open(root / "JPEGImages" / f"{i}.jpg")).shape[:2] for i in ids}
    without = [i for i in ids if (read_human_parts(root / "human_parts" / f"{i}.mat", shapes[i]) == 255).all()]
    assert without, "the synthetic set always has an image without persons (item 1)"
    split.write_text("\n".join((without * 4)[:4]) + "\n")

    cfg = tiny_cfg(root, tmp_path / "run", max_steps=2)
    model = build_dense_model(cfg)
    data = PascalContextMT(root, "train", TASKS, 64, augment=True, seed=0)
    batch = collate_dense([data[i] for i in range(len(data))])
    assert (batch["human_parts"] == 255).all()
    total, losses = MultiTaskDenseLoss(TASKS)(model(batch["image"]), loss_targets(batch, TASKS))
    total.backward()
    assert torch.isfinite(total) and losses["human_parts"].item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    document = train_dense(cfg)
    history = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(history) == 2 and document["nonfinite_steps_skipped"] == 0
    # no labelled part pixel in the batch: nothing to average, so no human_parts loss is logged
    assert all("human_parts" not in row for row in history)
    assert all(math.isfinite(row[t]) for row in history for t in TASKS if t != "human_parts")


def test_resume_from_a_checkpoint_continues_to_the_same_weights(tiny_pascal, tmp_path):
    whole = train_dense(tiny_cfg(tiny_pascal, tmp_path / "whole", max_steps=4, save_every=2, seed=1))
    out = tmp_path / "cut"
    train_dense(tiny_cfg(tiny_pascal, out, max_steps=4, save_every=2, seed=1))
    found = ckpt.checkpoints(out / "checkpoints")
    assert [p.name for p in found] == ["checkpoint-00000002.pt", "checkpoint-00000004.pt"]
    found[-1].unlink()  # as if the run had stopped after step 2
    (out / "metrics.json").unlink()
    resumed = train_dense(tiny_cfg(tiny_pascal, out, max_steps=4, save_every=2, seed=1, workers=1))
    assert resumed["resumed_from"].endswith("checkpoint-00000002.pt") and resumed["steps"] == 4
    assert whole["resumed_from"] is None
    a, b = run_tensors(tmp_path / "whole"), run_tensors(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming"
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="another config"):
        train_dense(tiny_cfg(tiny_pascal, out, max_steps=4, save_every=2, seed=1, r=8))


def test_bad_data_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_PASCAL_MT"
    with pytest.raises(FileNotFoundError, match=f"data folder not found: {missing}"):
        train_dense(tiny_cfg(missing, tmp_path / "run"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty / "ImageSets" / "Context")):
        train_dense(tiny_cfg(empty, tmp_path / "run"))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_dense.py"), "--data", str(missing),
                             "--output", str(tmp_path / "cli")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode != 0 and f"data folder not found: {missing}" in result.stderr


# ----------------------------------------------------------------------------- scripts


def test_describe_prints_the_official_swin_t_mtlora_r16_count():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_dense.py"), "--config", str(ROOT / "configs" /
         "pascal_mtlora_r16.yaml"), "--data", "/nonexistent", "--describe"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0] == "trainable parameters: 4953146"
    assert lines[1].startswith("total parameters: ") and lines[1].split(": ")[1].isdigit()
    assert int(lines[1].split(": ")[1]) > 4953146
