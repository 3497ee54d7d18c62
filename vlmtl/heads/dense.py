"""Dense-prediction decoders and losses for PASCAL-Context multi-task learning (MTLoRA setup).

``DenseDecoder`` is one task's decoder as the official MTLoRA code builds it: per-task 1×1
convolutions (no bias) reduce the four backbone scales to 18/36/72/144 channels, the coarser
scales are upsampled bilinearly to the finest, concatenated (270 channels), and an HRNet-style
head (1×1 conv → 4·270 = 1080 + BN + ReLU, 1×1 conv → task channels) predicts; the result is
resized bilinearly to the input size.

Losses follow the official ``mtl_loss_schemes.py`` (weights in ``LOSS_WEIGHTS``):
semseg and human parts cross-entropy (ignore 255), saliency balanced BCE, normals L1 on
unit-normalised predictions over unmasked values. Every loss returns 0 (with a graph) rather
than NaN when a batch has no valid label, e.g. images without people for human parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlmtl import distributed
from vlmtl.registry import IGNORE_INDEX

from .resize import bilinear_resize

LOSS_WEIGHTS: dict[str, float] = {"semseg": 1.0, "human_parts": 2.0, "saliency": 5.0, "normals": 10.0}
DECODER_CHANNELS: tuple[int, ...] = (18, 36, 72, 144)


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1×1, stride-1, ungrouped ``conv``, as a linear map over channels-last
    pixels; the result is NCHW-shaped with channels-last strides (a free view of the product).

    On CPU torch runs such convolutions through a slow im2col path when the batch is small and
    one thread runs, and ``relu(bn(x))`` forward + backward at (2, 1080, 56, 56) took 34–51 ms
    NCHW-contiguous against 25–38 ms channels-last here (one thread, two runs): a decoder kept
    channels-last from its input features (``x.permute(0, 2, 3, 1)`` is then a free view) to its
    prediction avoids both."""
    out = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
    return out.permute(0, 3, 1, 2)


def _batch_statistics_norm(norm: nn.Module) -> bool:
    """A plain ``nn.BatchNorm2d`` that normalises with this batch's statistics and, if it
    tracks running ones, updates them with a fixed momentum."""
    return (type(norm) is nn.BatchNorm2d and (norm.training or not norm.track_running_stats)
            and not (norm.track_running_stats and norm.momentum is None))


def pointwise_conv_norm_act(conv: nn.Conv2d, norm: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(norm(pointwise_conv(conv, x)))``: a 1×1 convolution, BatchNorm, an elementwise activation.

    With batch statistics (training) the normalised output is ``s ⊙ (W x + b − μ) + β`` with
    ``s = γ / √(var + eps)``, and the statistics of ``W x + b`` follow from those of the narrow
    input: ``μ = W mean(x) + b``, ``var = diag(W Σ Wᵀ)`` with Σ the channel covariance of x. So one
    matmul with the scaled weight ``s ⊙ W`` gives the normalised output, and backward goes through
    the narrow side (Σ is C_in × C_in); no pass over the wide pre-norm tensor in either direction,
    which is not kept either. Running statistics are updated as ``nn.BatchNorm2d`` does (momentum,
    unbiased variance). Same values and gradients up to float rounding (tested); other norms,
    evaluation and a cumulative average (``momentum=None``) take the composition."""
    if not _batch_statistics_norm(norm):
        return act(norm(pointwise_conv(conv, x)))
    b, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(-1, c)  # channels-last strides: a view
    n = flat.shape[0]
    if n < 2:
        raise ValueError(f"BatchNorm needs more than one value per channel in training, got input {tuple(x.shape)}")
    weight = conv.weight.flatten(1)
    mean_x = flat.mean(0)
    centered = flat - mean_x
    cov = centered.t() @ centered / n
    var = ((weight @ cov) * weight).sum(1)
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    mean = weight @ mean_x if conv.bias is None else torch.addmv(conv.bias, weight, mean_x)
    shift = -scale * mean if conv.bias is None else scale * (conv.bias - mean)
    if norm.bias is not None:
        shift = shift + norm.bias
    if norm.track_running_stats:
        with torch.no_grad():
            norm.running_mean.lerp_(mean.detach(), norm.momentum)
            norm.running_var.lerp_(var.detach() * (n / (n - 1)), norm.momentum)
            norm.num_batches_tracked.add_(1)
    # The activation runs on the product itself, before the NCHW view: an in-place activation
    # (ReLU(inplace=True)) on a view would make autograd copy its whole gradient (CopySlices).
    out = act(F.linear(flat, weight * scale[:, None], shift))
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


class DenseDecoder(nn.Module):
    """One task's multi-scale decoder: reduce each scale, fuse at the finest, predict.

    ``in_channels`` are the backbone feature channels per scale, finest first (Swin-T with
    patch merging applied to each stage: 192, 384, 768, 768)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = DECODER_CHANNELS,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(channels):
            raise ValueError(f"{len(in_channels)} input scales but {len(channels)} decoder channel sizes")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.channels = tuple(int(c) for c in channels)
        self.num_outputs = int(num_outputs)
        # Bias-free, as the official Downsampler: the following head conv has its own bias.
        self.reduce = nn.ModuleList(nn.Conv2d(i, o, 1, bias=False) for i, o in zip(self.in_channels, self.channels))
        fused = sum(self.channels)
        self.head = nn.Sequential(
            nn.Conv2d(fused, fused * expansion, 1),
            nn.BatchNorm2d(fused * expansion),
            nn.ReLU(inplace=True),
            nn.Conv2d(fused * expansion, self.num_outputs, 1),
        )

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``features``: NCHW tensors, finest first. Returns (B, num_outputs, *out_size)."""
        return self.predict(self.reduce_features(features), out_size)

    def reduce_features(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each scale through its 1×1 reduction (NCHW shapes, channels-last strides)."""
        if len(features) != len(self.reduce):
            raise ValueError(f"expected {len(self.reduce)} feature scales, got {len(features)}")
        return [pointwise_conv(conv, f) for conv, f in zip(self.reduce, features)]

    def predict(self, reduced: Sequence[torch.Tensor], out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """The decoder after its reductions: ``reduced[i]`` is ``reduce[i]`` applied to scale i,
        from ``reduce_features`` or from a caller that makes it more cheaply (``MultiTaskSwin``
        composes a task stream's patch merging with the reduction)."""
        if len(reduced) != len(self.reduce):
            raise ValueError(f"expected {len(self.reduce)} reduced scales, got {len(reduced)}")
        for conv, r in zip(self.reduce, reduced):
            if r.dim() != 4 or r.shape[1] != conv.out_channels:
                raise ValueError(f"a reduced scale must be (B, {conv.out_channels}, H, W), got {tuple(r.shape)}")
        size = reduced[0].shape[-2:]
        fused = torch.cat(
            [reduced[0]] + [bilinear_resize(r, size) for r in reduced[1:]],
            dim=1,
        )
        expand, norm, act, predict = self.head
        # The prediction has a few channels: back to NCHW-contiguous here (cheap at the decoder's
        # resolution), so the upsampled output and the losses over it run on the dense layout.
        out = pointwise_conv(predict, pointwise_conv_norm_act(expand, norm, act, fused)).contiguous()
        return out if out_size is None else bilinear_resize(out, out_size)


def _zero_like(pred: torch.Tensor) -> torch.Tensor:
    """A zero loss still connected to the graph, so backward() and DDP stay happy."""
    return pred.sum() * 0.0


def _label_map(target: torch.Tensor) -> torch.Tensor:
    """(B, H, W) integer labels from (B, H, W) or (B, 1, H, W)."""
    if target.dim() == 4:
        if target.shape[1] != 1:
            raise ValueError(f"class labels must be (B, H, W) or (B, 1, H, W), got {tuple(target.shape)}")
        target = target[:, 0]
    return target.long()


def cross_entropy_loss(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise CE averaged over non-ignored pixels; 0 (not NaN) when every pixel is ignored."""
    labels = _label_map(target)
    if not bool((labels != ignore_index).any()):
        return _zero_like(pred)
    return F.cross_entropy(pred.float(), labels, ignore_index=ignore_index)


def balanced_bce_loss(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """HED-style class-balanced BCE on logits: positives (label ≥ 0.5) weighted by the
    negative fraction w, negatives by 1 − w, summed and divided by the valid pixel count
    (the pixel count when nothing is ignored, as the official code). Pixels equal to
    ``ignore_index`` are left out. Under data parallelism w is the global batch's negative
    fraction (one all-reduce), so the ranks together compute one process's loss."""
    if target.dim() == pred.dim() - 1:
        target = target.unsqueeze(1)
    if target.shape != pred.shape:
        raise ValueError(f"saliency prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    valid = target != ignore_index
    labels = (target >= 0.5).float() * valid
    n_valid, n_pos = valid.sum(), labels.sum()
    global_valid, global_pos = distributed.all_reduce_sum(torch.stack([n_valid.double(), n_pos.double()]))
    if int(n_valid) == 0:
        return _zero_like(pred)
    logits = pred.float()
    per_pixel = F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * valid
    w = ((global_valid - global_pos) / global_valid).float()
    loss_pos = (per_pixel * labels).sum()
    loss_neg = (per_pixel * (valid.float() - labels)).sum()
    return (w * loss_pos + (1 - w) * loss_neg) / n_valid


def normals_l1_loss(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """L1 between unit-normalised predicted normals and the labels, averaged over the
    label values that are not ``ignore_index`` (masked pixels carry it in all channels)."""
    if target.shape != pred.shape:
        raise ValueError(f"normals prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    valid = target != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return _zero_like(pred)
    unit = pred.float() / (pred.float().norm(p=2, dim=1, keepdim=True) + 1e-12)
    return (unit - target.float()).abs().masked_select(valid).sum() / n_valid


TASK_LOSSES = {
    "semseg": cross_entropy_loss,
    "human_parts": cross_entropy_loss,
    "saliency": balanced_bce_loss,
    "normals": normals_l1_loss,
}


def loss_units(task: str, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """How many units the task's loss averages over: its non-ignored label values (pixels;
    normals: values of the 3 channels)."""
    return int((target != ignore_index).sum())


def dense_task_loss(task: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The unweighted loss of one PASCAL-Context task."""
    if task not in TASK_LOSSES:
        raise ValueError(f"no loss for task {task!r}; known tasks: {sorted(TASK_LOSSES)}")
    return TASK_LOSSES[task](pred, target)


class MultiTaskDenseLoss(nn.Module):
    """Weighted sum of the per-task losses over the tasks present in both dicts.

    Returns ``(total, {task: unweighted loss})``; a task missing from the targets (no label
    for this batch) is skipped rather than treated as zero-valid."""

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(LOSS_WEIGHTS if weights is None else weights)
        unknown = [t for t in tasks if t not in TASK_LOSSES]
        if unknown:
            raise ValueError(f"no loss for tasks {unknown}; known tasks: {sorted(TASK_LOSSES)}")
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ValueError(f"no loss weight for tasks {missing}")
        self.tasks = tuple(tasks)
        self.weights = {t: float(weights[t]) for t in self.tasks}

    def forward(
        self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = {t: dense_task_loss(t, preds[t], targets[t]) for t in self.tasks if t in targets and t in preds}
        if not losses:
            raise ValueError(f"no task of {list(self.tasks)} has both a prediction and a target")
        total = sum(self.weights[t] * loss for t, loss in losses.items())
        return total, losses
