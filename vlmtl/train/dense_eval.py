"""Evaluate a multi-task dense model on PASCAL-Context: per-task metrics, Δm, inference speed.

Metrics follow the official MTLoRA evaluation (``evaluation/*.py`` of scale-lab/MTLoRA):
semseg and human-parts mIoU over the data set (parts: only images with a labelled person;
an all-ignore image adds nothing), saliency ``maxF``, ``Beta maxF`` and ``mIoU`` (the
official names), normals mean angular error. Δm uses one headline number per task, as the
official ``calculate_multi_task_performance``: semseg mIoU, parts mIoU, saliency **mIoU**
(``sal['mIoU']``; the paper's Table 1 saliency column is that mIoU, not maxF) and normals
mean angle (lower is better).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vlmtl import distributed
from vlmtl.metrics.dense import LOWER_IS_BETTER, ConfusionMatrix, NormalsMeter, SaliencyMeter, delta_m
from vlmtl.registry import DENSE_TASKS, IGNORE_INDEX

from .engine import synchronize

HEADLINE: dict[str, str] = {"semseg": "mIoU", "human_parts": "mIoU", "saliency": "mIoU", "normals": "mean_angle"}


def _nan_if_empty(read) -> float:
    """A metric over no data is undefined (NaN), not an error that loses the whole evaluation."""
    try:
        return float(read())
    except ValueError:
        return float("nan")


class DenseMeters:
    """Accumulates every task's metric over batches of raw model outputs and labels."""

    def __init__(self, tasks: Sequence[str]) -> None:
        unknown = [t for t in tasks if t not in HEADLINE]
        if unknown:
            raise ValueError(f"no metric for tasks {unknown}; known: {list(HEADLINE)}")
        self.tasks = tuple(tasks)
        self.semseg = ConfusionMatrix(DENSE_TASKS["semseg"], IGNORE_INDEX)
        self.parts = ConfusionMatrix(DENSE_TASKS["human_parts"], IGNORE_INDEX)
        self.saliency = SaliencyMeter(IGNORE_INDEX)
        self.normals = NormalsMeter()
        self.part_images = 0

    @torch.no_grad()
    def update(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        """``outputs``: the model's raw maps (logits; normals unnormalised), ``batch``: the
        data set's labels (``semseg``, ``human_parts``, ``saliency``, ``normals`` + mask)."""
        for task in self.tasks:
            out = outputs[task].detach().float().cpu()
            if task == "semseg":
                self.semseg.update(out.argmax(1), batch["semseg"].cpu())
            elif task == "human_parts":
                target = batch["human_parts"].cpu()
                has_person = (target != IGNORE_INDEX).flatten(1).any(1)  # images without persons: skipped
                if bool(has_person.any()):
                    self.parts.update(out.argmax(1)[has_person], target[has_person])
                    self.part_images += int(has_person.sum())
            elif task == "saliency":
                self.saliency.update(torch.sigmoid(out[:, 0]), batch["saliency"].cpu())
            else:
                self.normals.update(out, batch["normals"].cpu().float(), batch["normals_mask"].cpu().bool())

    def merge(self, other: DenseMeters) -> None:
        """Add ``other``'s accumulated data (another rank's part of the data set)."""
        self.semseg.merge(other.semseg)
        self.parts.merge(other.parts)
        self.saliency.merge(other.saliency)
        self.normals.merge(other.normals)
        self.part_images += other.part_images

    def compute(self) -> dict[str, dict[str, float]]:
        """``{"semseg": {"mIoU"}, "human_parts": {"mIoU"}, "saliency": {"maxF", "Beta maxF", "mIoU"},
        "normals": {"mean_angle"}}`` for the tasks evaluated (percent; angles in degrees)."""
        result: dict[str, dict[str, float]] = {}
        for task in self.tasks:
            if task == "semseg":
                result[task] = {"mIoU": _nan_if_empty(self.semseg.miou)}
            elif task == "human_parts":
                result[task] = {"mIoU": _nan_if_empty(self.parts.miou)}
            elif task == "saliency":
                sal = self.saliency  # the official names (evaluation/eval_sal.py)
                result[task] = {"maxF": _nan_if_empty(sal.max_f), "Beta maxF": _nan_if_empty(sal.beta_max_f),
                                "mIoU": _nan_if_empty(sal.iou)}
            else:
                result[task] = {"mean_angle": _nan_if_empty(self.normals.mean_angle)}
        return result


def headline_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The one number per task that Δm compares (see ``HEADLINE``)."""
    return {task: float(values[HEADLINE[task]]) for task, values in metrics.items()}


def dense_delta_m(metrics: Mapping[str, Mapping[str, float]], baselines: Mapping[str, float]) -> float | None:
    """Δm (percent) of the tasks in ``metrics`` against single-task headline ``baselines``;
    None when a metric is undefined (e.g. no person in the validation set)."""
    heads = headline_metrics(metrics)
    if not all(math.isfinite(v) for v in heads.values()):
        return None
    missing = [t for t in heads if t not in baselines]
    if missing:
        raise ValueError(f"no single-task baseline for tasks {missing}")
    return delta_m(heads, {t: float(baselines[t]) for t in heads}, LOWER_IS_BETTER)


@torch.no_grad()
def evaluate_dense(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    device: torch.device | str = "cpu",
    baselines: Mapping[str, float] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Run ``model`` (``forward(images) -> {task: map}``) over ``loader`` in eval mode.

    Under data parallelism each rank passes a loader over its part of the data set
    (:func:`vlmtl.distributed.shard_bounds`); the ranks' meters are merged, so every rank
    returns the metrics of the whole set (inference speed stays this rank's).

    Returns ``{"metrics", "headline", "delta_m", "single_task_baselines", "images",
    "human_parts_images", "inference_images_per_s"}``. Inference speed counts the model's
    forward passes only (no data loading or metric work), after one warm-up batch when
    there are several."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    meters = DenseMeters(model.tasks)
    timings: list[tuple[float, int]] = []  # (forward seconds, images) per batch
    try:
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                outputs = model(x)
            synchronize(device)
            timings.append((time.perf_counter() - start, x.shape[0]))
            meters.update(outputs, batch)
    finally:
        model.train(was_training)
    parts = distributed.gather_objects((meters, sum(n for _, n in timings)))
    meters = parts[0][0]
    for other, _ in parts[1:]:
        meters.merge(other)
    images = sum(n for _, n in parts)
    if not images:
        raise ValueError("the evaluation loader yielded no images")
    timed = timings[1:] if len(timings) > 1 else timings  # the first batch is warm-up
    seconds = sum(t for t, _ in timed)
    metrics = meters.compute()
    result: dict[str, Any] = {
        "metrics": metrics,
        "headline": headline_metrics(metrics),
        "delta_m": dense_delta_m(metrics, baselines) if baselines is not None else None,
        "single_task_baselines": dict(baselines) if baselines is not None else None,
        "images": images,
        "inference_images_per_s": sum(n for _, n in timed) / seconds if seconds > 0 else None,
    }
    if "human_parts" in metrics:
        result["human_parts_images"] = meters.part_images
    return result
