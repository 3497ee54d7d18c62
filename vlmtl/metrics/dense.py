"""Dense-prediction metrics for the PASCAL-Context multi-task benchmark (MTLoRA setting).

Accumulators (``update`` per batch, then read the metric) for semantic segmentation /
human parts (mIoU), saliency (maxF, IoU) and surface normals (mean angular error), and the
multi-task Delta_m against single-task baselines. All results are in percent except angles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Swin-T single-task baselines reported in the MTLoRA paper (mIoU, mIoU, mIoU, mean angle).
PAPER_SINGLE_TASK: dict[str, float] = {"semseg": 67.21, "human_parts": 61.93, "saliency": 62.35, "normals": 17.97}
LOWER_IS_BETTER: set[str] = {"normals"}


def _squeeze_channel(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, H, W); other shapes unchanged."""
    return x.squeeze(1) if x.dim() == 4 and x.shape[1] == 1 else x


class ConfusionMatrix:
    """Pixel confusion matrix (rows: target class, columns: predicted class) for mIoU.

    Pixels whose target is ``ignore_index`` are skipped. ``miou`` averages the IoU over all
    classes, a class absent from both prediction and target counting 0, as the official
    MTLoRA / ASTMT meters do (tp / max(tp + fp + fn, 1e-8)); ``miou_present`` averages over
    the classes with a non-zero union only. Both in percent.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and target label maps (same shape, integer dtype)."""
        pred, target = _squeeze_channel(pred), _squeeze_channel(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("pred and target must be integer label maps (take argmax of logits first)")
        valid = target != self.ignore_index
        pred, target = pred[valid].long(), target[valid].long()
        c = self.num_classes
        if target.numel() and (target.min() < 0 or target.max() >= c):
            raise ValueError(f"target labels must be in [0, {c}) or {self.ignore_index}")
        if pred.numel() and (pred.min() < 0 or pred.max() >= c):
            raise ValueError(f"predicted labels must be in [0, {c})")
        counts = torch.bincount(target * c + pred, minlength=c * c)
        self.matrix += counts.reshape(c, c).cpu()

    def merge(self, other: ConfusionMatrix) -> None:
        """Add ``other``'s counts (e.g. another rank's part of the data set)."""
        self.matrix += other.matrix

    def per_class_iou(self) -> list[float]:
        """IoU per class in percent; NaN for a class absent from both target and prediction."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        return [100.0 * float(x) for x in iou]

    def miou(self) -> float:
        """Mean IoU in percent over all classes (absent from prediction and target: 0)."""
        ious = self.per_class_iou()
        if all(np.isnan(x) for x in ious):
            raise ValueError("no labelled pixels accumulated: call update() first")
        return float(np.mean([0.0 if np.isnan(x) else x for x in ious]))

    def miou_present(self) -> float:
        """Mean IoU in percent over the classes with a non-zero union (not the official mean)."""
        ious = [x for x in self.per_class_iou() if not np.isnan(x)]
        if not ious:
            raise ValueError("no labelled pixels accumulated: call update() first")
        return float(np.mean(ious))


class SaliencyMeter:
    """Saliency metrics from predicted foreground probabilities and binary targets, as the
    official MTLoRA evaluation (``evaluation/eval_sal.py``) reports them:

    ``max_f`` (its ``maxF``): per image and threshold (prob > t, t in linspace(0.2, 0.9, 15)),
    precision tp/(tp+fp+1e-12) and recall tp/(tp+fn+1e-12); both averaged over images per
    threshold, F1 = 2PR/(P+R+1e-12), best threshold (``SaliencyMeterWithNoBeta``).
    ``beta_max_f`` (its ``Beta maxF``): precision and recall accumulated over the whole data
    set for each threshold (prob >= t, t in 0.05, 0.10, ..., 0.95), F-beta with beta^2 = 0.3,
    best threshold (``SaliencyMeterWithBeta``).
    ``iou`` (its ``mIoU``): per-image IoU (prob > t, the same 15 thresholds) averaged over
    images, best threshold (an image with empty target and prediction counts as IoU 1).
    Target pixels equal to ``ignore_index`` are skipped.
    """

    def __init__(self, ignore_index: int = 255, beta_squared: float = 0.3) -> None:
        self.ignore_index = ignore_index
        self.beta_squared = beta_squared
        self.f_thresholds = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
        self.iou_thresholds = torch.from_numpy(np.linspace(0.2, 0.9, 15))
        self.reset()

    def reset(self) -> None:
        n_f = len(self.f_thresholds)
        self.true_positives = torch.zeros(n_f, dtype=torch.float64)
        self.predicted_positives = torch.zeros(n_f, dtype=torch.float64)
        self.actual_positives = 0.0
        self._image_ious: list[torch.Tensor] = []  # each (B, 15)
        self._image_precisions: list[torch.Tensor] = []  # each (B, 15)
        self._image_recalls: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` probabilities in [0, 1] and ``target`` in {0, 1, ignore_index},
        both (B, H, W) or (B, 1, H, W)."""
        pred, target = _squeeze_channel(pred), _squeeze_channel(target)
        if pred.dim() == 2:
            pred, target = pred.unsqueeze(0), target.unsqueeze(0)
        if pred.shape != target.shape or pred.dim() != 3:
            raise ValueError(f"expected (B, H, W) pred and target, got {tuple(pred.shape)} and {tuple(target.shape)}")
        if not pred.is_floating_point():
            raise TypeError("pred must hold foreground probabilities (floating point)")
        pred = pred.double()
        if pred.numel() and (pred.min() < 0 or pred.max() > 1):
            raise ValueError("pred must be probabilities in [0, 1] (apply sigmoid/softmax first)")
        valid = target != self.ignore_index
        fg = target == 1
        if bool((valid & ~fg & (target != 0)).any()):
            raise ValueError(f"target values must be 0, 1 or {self.ignore_index}")
        fg = fg & valid
        batch = pred.shape[0]

        # Dataset-level counts for maxF.
        thr = self.f_thresholds.to(pred.device).view(-1, 1, 1, 1)
        predicted = (pred.unsqueeze(0) >= thr) & valid.unsqueeze(0)  # (T, B, H, W)
        self.true_positives += (predicted & fg.unsqueeze(0)).flatten(1).sum(1).double().cpu()
        self.predicted_positives += predicted.flatten(1).sum(1).double().cpu()
        self.actual_positives += float(fg.sum())

        # Per-image IoU for each threshold.
        thr = self.iou_thresholds.to(pred.device).view(-1, 1, 1, 1)
        predicted = (pred.unsqueeze(0) > thr) & valid.unsqueeze(0)
        inter = (predicted & fg.unsqueeze(0)).reshape(len(thr), batch, -1).sum(2).double()
        union = (predicted | fg.unsqueeze(0)).reshape(len(thr), batch, -1).sum(2).double()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        self._image_ious.append(iou.t().cpu())
        predicted_count = predicted.reshape(len(thr), batch, -1).sum(2).double()
        salient_count = fg.reshape(batch, -1).sum(1).double().unsqueeze(0)
        self._image_precisions.append((inter / (predicted_count + 1e-12)).t().cpu())
        self._image_recalls.append((inter / (salient_count + 1e-12)).t().cpu())

    def merge(self, other: SaliencyMeter) -> None:
        """Add ``other``'s images (e.g. another rank's part of the data set)."""
        self.true_positives += other.true_positives
        self.predicted_positives += other.predicted_positives
        self.actual_positives += other.actual_positives
        self._image_ious += other._image_ious
        self._image_precisions += other._image_precisions
        self._image_recalls += other._image_recalls

    def max_f(self) -> float:
        """Best F1 of the image-averaged precision and recall over thresholds, in percent."""
        if not self._image_ious:
            raise ValueError("no data accumulated: call update() first")
        precision = torch.cat(self._image_precisions).mean(0)
        recall = torch.cat(self._image_recalls).mean(0)
        return 100.0 * float((2 * precision * recall / (precision + recall + 1e-12)).max())

    def beta_max_f(self) -> float:
        """Best F-beta (beta^2 = 0.3) of data-set precision and recall over thresholds, in percent."""
        if not self._image_ious:
            raise ValueError("no data accumulated: call update() first")
        tp = self.true_positives
        precision = tp / self.predicted_positives
        recall = tp / self.actual_positives if self.actual_positives > 0 else torch.full_like(tp, float("nan"))
        f = (1 + self.beta_squared) * precision * recall / (self.beta_squared * precision + recall)
        f = torch.nan_to_num(f, nan=0.0)  # 0/0 where nothing is predicted or nothing is salient
        return 100.0 * float(f.max())

    def iou(self) -> float:
        """Best (over 15 thresholds in [0.2, 0.9]) mean per-image IoU, in percent."""
        if not self._image_ious:
            raise ValueError("no data accumulated: call update() first")
        per_threshold = torch.cat(self._image_ious).mean(0)
        return 100.0 * float(per_threshold.max())


class NormalsMeter:
    """Angular error (degrees) between predicted and target surface normals on valid pixels."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sum = 0.0
        self._sum_sq = 0.0
        self._count = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor) -> None:
        """Add a batch: ``pred``/``target`` (B, 3, H, W), any scale (both are normalised to unit
        length), ``valid_mask`` (B, H, W) bool marking pixels with a ground-truth normal."""
        if pred.dim() != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
            raise ValueError(f"expected pred and target of shape (B, 3, H, W), got {tuple(pred.shape)} "
                             f"and {tuple(target.shape)}")
        if valid_mask.dtype != torch.bool:
            raise TypeError(f"valid_mask must be bool, got {valid_mask.dtype}")
        expected = (pred.shape[0], *pred.shape[2:])
        if tuple(valid_mask.shape) != expected:
            raise ValueError(f"valid_mask shape {tuple(valid_mask.shape)} != {expected}")
        p = F.normalize(pred.double(), dim=1)
        t = F.normalize(target.double(), dim=1)
        dot = (p * t).sum(1).clamp(-1.0, 1.0)
        angle = torch.rad2deg(torch.arccos(dot))[valid_mask]
        self._sum += float(angle.sum())
        self._sum_sq += float((angle**2).sum())
        self._count += int(angle.numel())

    def merge(self, other: NormalsMeter) -> None:
        """Add ``other``'s pixels (e.g. another rank's part of the data set)."""
        self._sum += other._sum
        self._sum_sq += other._sum_sq
        self._count += other._count

    def mean_angle(self) -> float:
        """Mean angular error in degrees over all valid pixels seen."""
        if self._count == 0:
            raise ValueError("no valid pixels accumulated: call update() first")
        return self._sum / self._count

    def rmse_angle(self) -> float:
        """Root-mean-square angular error in degrees over all valid pixels seen."""
        if self._count == 0:
            raise ValueError("no valid pixels accumulated: call update() first")
        return float(np.sqrt(self._sum_sq / self._count))


def delta_m(
    metrics: Mapping[str, float],
    single_task: Mapping[str, float],
    lower_is_better: set[str] | Sequence[str] = frozenset(),
) -> float:
    """Multi-task gain Delta_m in percent: mean over tasks of (-1)^l_t (M_t - M_st,t) / M_st,t * 100,
    with l_t = 1 for tasks where lower is better, so that any improvement counts positively."""
    if set(metrics) != set(single_task):
        only_m = sorted(set(metrics) - set(single_task))
        only_s = sorted(set(single_task) - set(metrics))
        raise ValueError(f"metrics and single_task need the same tasks; only in metrics: {only_m}, "
                         f"only in single_task: {only_s}")
    if not metrics:
        raise ValueError("no tasks given")
    lower = set(lower_is_better)
    total = 0.0
    for task, value in metrics.items():
        base = single_task[task]
        if base == 0:
            raise ValueError(f"single-task baseline for {task!r} is 0: relative change undefined")
        sign = -1.0 if task in lower else 1.0
        total += sign * (value - base) / base
    return 100.0 * total / len(metrics)
