"""The dense path on the engine: multi-task dense prediction (PASCAL-Context, MTLoRA and
its baselines) on a timm Swin.

The paper's recipe: AdamW (no weight decay on norms, biases and relative-position tables,
as Swin's), warm-up then cosine, gradient clipping, the official losses and weights.
Writes to ``output`` the engine's run folder plus the weights in the run layout
(``adapters/`` or ``trainable.safetensors``, and ``heads.safetensors``: the decoders with
their BatchNorm statistics).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vlmtl import distributed
from vlmtl.adapters import count_parameters
from vlmtl.data import MultiTaskBatchSampler, PascalContextMT, write_synthetic_pascal
from vlmtl.data.cache import cached_dataset
from vlmtl.heads.dense import MultiTaskDenseLoss, loss_units
from vlmtl.models.swin_mtlora import MultiTaskSwin, create_multitask_swin
from vlmtl.registry import IGNORE_INDEX

from .dense_config import SYNTHETIC, DenseTrainConfig
from .dense_eval import evaluate_dense
from .engine import Job, Trainer, throughput
from .run_weights import load_run_weights, save_run_weights

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data


def prepare_data(cfg: DenseTrainConfig) -> Path:
    """The PASCAL_MT folder to read: the synthetic set (written once) or ``cfg.data``."""
    if cfg.data == SYNTHETIC:
        spec = {"kind": "pascal_mt", "seed": cfg.synthetic_seed, "train": cfg.synthetic_train_images,
                "val": cfg.synthetic_val_images, "size": cfg.synthetic_size}
        name = (f"synthetic-pascal-s{cfg.synthetic_seed}-{cfg.synthetic_train_images}-{cfg.synthetic_val_images}"
                f"-{cfg.synthetic_size}")
        return cached_dataset(name, spec, lambda folder: write_synthetic_pascal(
            folder, spec["train"], spec["val"], seed=spec["seed"], size=spec["size"]), cfg.data_root)
    root = Path(cfg.data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder not found: {root} (data must be 'synthetic' or a PASCAL_MT folder with JPEGImages/, "
            "ImageSets/Context/, semseg/pascal-context/, human_parts/, sal_distill/, normals_distill/)"
        )
    return root


def collate_dense(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of ``PascalContextMT`` items; ``meta`` stays a list."""
    batch: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "meta"}
    batch["meta"] = [it["meta"] for it in items]
    return batch


def loss_targets(batch: dict[str, Any], tasks: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The loss's targets: normals carry the ignore value where their mask is off."""
    targets = {t: batch[t] for t in tasks if t != "normals"}
    if "normals" in tasks:
        mask = batch["normals_mask"].unsqueeze(1)
        targets["normals"] = torch.where(mask, batch["normals"], torch.full_like(batch["normals"], IGNORE_INDEX))
    return targets


# ----------------------------------------------------------------------------- model and optimizer


def build_dense_model(cfg: DenseTrainConfig) -> MultiTaskSwin:
    model = create_multitask_swin(
        cfg.model, tasks=cfg.tasks, method=cfg.method, img_size=cfg.img_size, pretrained=cfg.pretrained,
        r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, r_task=cfg.r_task, scale=cfg.scale,
        mtlora_plus=cfg.mtlora_plus, drop_path_rate=cfg.drop_path_rate, task_pass=cfg.task_pass, **cfg.timm_kwargs,
    )
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    return model


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Swin's rule: no weight decay on 1-D tensors (norms, biases) and relative-position tables."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "relative_position_bias_table" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def load_dense_weights(model: MultiTaskSwin, run_dir: str | Path) -> None:
    """Load a dense run's weights (its folder) into a model built from the same config."""
    load_run_weights(run_dir, model.backbone, model.decoders)


# ----------------------------------------------------------------------------- training


def train_dense(cfg: DenseTrainConfig) -> dict[str, Any]:
    """Train (resuming from a checkpoint when there is one), evaluate, write the run folder."""
    trainer = Trainer(cfg)
    with trainer.accelerator.main_process_first():  # one process writes the synthetic set
        root = prepare_data(cfg)  # before anything slow: a bad path fails at once
    train_set = PascalContextMT(root, "train", cfg.tasks, cfg.img_size, augment=True, seed=cfg.seed)
    val_set = PascalContextMT(root, "val", cfg.tasks, cfg.img_size, augment=False)
    model = build_dense_model(cfg)
    criterion = MultiTaskDenseLoss(cfg.tasks, cfg.loss_weights)
    sampler = MultiTaskBatchSampler([0] * len(train_set), cfg.batch_size, seed=cfg.seed,
                                    drop_last=len(train_set) >= cfg.batch_size)
    # Its own generator: creating a loader iterator must not consume the global RNG (dropout's,
    # drop-path's), or a resumed run would draw other masks than an uninterrupted one.
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=collate_dense,
                        generator=torch.Generator().manual_seed(cfg.seed))
    trainable, total = count_parameters(model)
    groups = model.parameter_groups()
    logger.info("%s on %s (%d px): tasks %s, %d train / %d val images, %d steps; %s trainable of %s parameters",
                cfg.method, cfg.model, cfg.img_size, cfg.tasks, len(train_set), len(val_set),
                cfg.total_steps(len(sampler)), f"{trainable:,}", f"{total:,}")

    def step(m: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return criterion(m(batch["image"]), loss_targets(batch, cfg.tasks))[1]

    def loss_counts(batch: dict) -> dict[str, float]:
        return {t: loss_units(t, target) for t, target in loss_targets(batch, cfg.tasks).items()}

    title = f"{cfg.method}{'+' if cfg.mtlora_plus else ''}: {', '.join(cfg.tasks)}"
    job = Job(model=model, loader=loader, step=step, param_groups=optimizer_groups(model, cfg.weight_decay),
              batch_size=lambda batch: int(batch["image"].shape[0]), on_epoch=train_set.set_epoch, title=title,
              loss_counts=loss_counts)
    model = trainer.fit(job)
    if trainer.is_main:
        save_run_weights(trainer.out, model.backbone, model.decoders)
    own_part = Subset(val_set, range(*distributed.shard_bounds(len(val_set))))  # each rank its part
    val_loader = DataLoader(own_part, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False,
                            num_workers=cfg.workers, collate_fn=collate_dense)
    autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
    logger.info("evaluating on %d validation images", len(val_set))
    evaluation = evaluate_dense(model, val_loader, trainer.device, cfg.single_task_baselines, autocast)
    document = trainer.write_run({
        "method": cfg.method,
        "mtlora_plus": cfg.mtlora_plus,
        "tasks": cfg.tasks,
        "model": cfg.model,
        "img_size": cfg.img_size,
        "data": str(root),
        **evaluation,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "parameter_groups": groups,
        "train_images_per_s": throughput(trainer.progress.step_times),  # the name compare_dense.py reads
        "final_losses": _final_losses(trainer.progress.history),
    }, title=title)
    for task, values in evaluation["metrics"].items():
        logger.info("%s: %s", task, ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    if document["delta_m"] is not None:
        logger.info("delta_m %.2f%% vs single-task %s", document["delta_m"], cfg.single_task_baselines)
    return document


def _final_losses(history: list[dict], last: int = 10) -> dict[str, float]:
    """Mean of each task's loss over the last ``last`` steps."""
    rows = history[-last:]
    keys = [k for k in (rows[0] if rows else {}) if k not in ("step", "lr")]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
