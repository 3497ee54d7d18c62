"""Multi-task dense training (PASCAL-Context, MTLoRA and its baselines) on ``accelerate``.

The paper's recipe: AdamW (no weight decay on norms, biases and relative-position tables,
as Swin's), warm-up then cosine, gradient clipping, the official losses and weights. Shares
the VL trainer's checkpoints (exact resumption), schedule, progress record and plots.
Writes to ``output``: metrics.json, config.yaml, train_log.jsonl, training_curves.png and
weights.safetensors (the trainable parameters plus the decoders' BatchNorm statistics).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlmtl.adapters import count_parameters
from vlmtl.adapters.io import atomic_write
from vlmtl.data import MultiTaskBatchSampler, PascalContextMT, write_synthetic_pascal
from vlmtl.heads.dense import IGNORE_INDEX, MultiTaskDenseLoss
from vlmtl.models.swin_mtlora import MultiTaskSwin, create_multitask_swin

from . import checkpoint as ckpt
from .dense_config import SYNTHETIC, DenseTrainConfig
from .dense_eval import evaluate_dense
from .plots import plot_training_curves
from .checkpoint import Progress
from .vl_trainer import cosine_with_warmup

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
SYNTHETIC_META = "synthetic.json"
THROUGHPUT_WARMUP_STEPS = 2  # first steps of a process (allocations, autotuning) are not timed


# ----------------------------------------------------------------------------- data


def synthetic_data_root(cfg: DenseTrainConfig) -> Path:
    if cfg.data_root:
        return Path(cfg.data_root)
    name = (f"synthetic-pascal-s{cfg.synthetic_seed}-{cfg.synthetic_train_images}-{cfg.synthetic_val_images}"
            f"-{cfg.synthetic_size}")
    return Path.home() / ".cache" / "vlmtl" / name


def _ensure_synthetic(cfg: DenseTrainConfig) -> Path:
    """Write the synthetic PASCAL_MT set once (deterministic in seed and sizes), then reuse it.
    Written to a sibling folder and renamed, so an interrupted write is never mistaken for a set."""
    root = synthetic_data_root(cfg)
    want = {"seed": cfg.synthetic_seed, "train": cfg.synthetic_train_images, "val": cfg.synthetic_val_images,
            "size": cfg.synthetic_size}
    meta = root / SYNTHETIC_META
    if meta.is_file() and json.loads(meta.read_text()) == want:
        return root
    if root.exists() and not meta.is_file():
        raise FileExistsError(f"data_root {root} exists and is not a synthetic set written here: choose another")
    logger.info("writing the synthetic PASCAL_MT set (%d train, %d val, size %d) to %s",
                want["train"], want["val"], want["size"], root)
    tmp = root.with_name(f".{root.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    write_synthetic_pascal(tmp, want["train"], want["val"], seed=want["seed"], size=want["size"])
    (tmp / SYNTHETIC_META).write_text(json.dumps(want) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def prepare_data(cfg: DenseTrainConfig) -> Path:
    """The PASCAL_MT folder to read: the synthetic set (written if needed) or ``cfg.data``."""
    if cfg.data == SYNTHETIC:
        return _ensure_synthetic(cfg)
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
        cfg.backbone, tasks=cfg.tasks, method=cfg.method, r=cfg.r, r_task=cfg.r_task, img_size=cfg.img_size,
        pretrained=cfg.pretrained, mtlora_plus=cfg.mtlora_plus, scale=cfg.scale, dropout=cfg.dropout,
        drop_path_rate=cfg.drop_path_rate, **cfg.timm_kwargs,
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


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The decoders' BatchNorm statistics: learned in training, needed for inference."""
    return {n: b.detach().cpu().clone() for n, b in model.named_buffers() if n.startswith("decoders.")}


def load_dense_weights(model: nn.Module, path: str | Path) -> None:
    """Load a run's ``weights.safetensors`` into a model built from the same config."""
    path = Path(path)
    state = load_file(str(path))
    buffers = {n: b for n, b in model.named_buffers() if n.startswith("decoders.")}
    ckpt.load_trainable_state(model, {k: v for k, v in state.items() if k not in buffers}, path)
    with torch.no_grad():
        for name, buf in buffers.items():
            if name not in state:
                raise ValueError(f"{path} lacks decoder statistic {name}")
            buf.copy_(state[name])


# ----------------------------------------------------------------------------- training


def cpu_threads(workers: int, requested: int | None = None) -> int:
    """Threads for torch's CPU ops: ``requested``, or the cores the data workers leave free.
    On a small CPU box, compute threads competing with loader workers (or other jobs) for
    cores spin in OpenMP barriers and can be several times slower than fewer threads."""
    if requested is not None:
        return max(1, int(requested))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores - max(0, workers)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Throughput:
    """Training images per second over the compute of each step (forward, backward, update),
    leaving out a process's first steps (allocation, autotuning) unless there are no others."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []

    def add(self, seconds: float, images: int) -> None:
        self.steps.append((seconds, images))

    def value(self) -> float | None:
        timed = self.steps[THROUGHPUT_WARMUP_STEPS:] or self.steps
        seconds = sum(t for t, _ in timed)
        return sum(n for _, n in timed) / seconds if seconds > 0 else None


def train_dense(cfg: DenseTrainConfig) -> dict[str, Any]:
    """Train (resuming from a checkpoint when there is one), evaluate, write the run folder."""
    start = time.time()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    with accelerator.main_process_first():  # one process writes the synthetic set
        root = prepare_data(cfg)  # before anything slow: a bad path fails at once
    set_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / "checkpoints"

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
    total_steps = cfg.steps_for(len(sampler))
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total_steps, cfg.warmup_ratio))
    trainable, total = count_parameters(model)
    groups = model.parameter_groups()
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    progress, speed = Progress(), _Throughput()
    resumed_from = _maybe_resume(cfg, checkpoint_dir, accelerator.unwrap_model(model), optimizer, scheduler,
                                 accelerator, sampler, progress, speed)
    if accelerator.is_main_process:
        cfg.save(out / "config.yaml")
    logger.info("%s on %s (%d px): tasks %s, %d train / %d val images, %d steps; %s trainable of %s parameters",
                cfg.method, cfg.backbone, cfg.img_size, cfg.tasks, len(train_set), len(val_set), total_steps,
                f"{trainable:,}", f"{total:,}")
    _train_loop(cfg, accelerator, model, criterion, optimizer, scheduler, loader, sampler, train_set, progress,
                checkpoint_dir, total_steps, speed)

    model = accelerator.unwrap_model(model)
    val_loader = DataLoader(val_set, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False,
                            num_workers=cfg.workers, collate_fn=collate_dense)
    autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
    logger.info("evaluating on %d validation images", len(val_set))
    evaluation = evaluate_dense(model, val_loader, accelerator.device, cfg.single_task_baselines, autocast)
    document = {
        "method": cfg.method,
        "mtlora_plus": cfg.mtlora_plus,
        "tasks": cfg.tasks,
        "backbone": cfg.backbone,
        "img_size": cfg.img_size,
        "data": str(root),
        **evaluation,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "parameter_groups": groups,
        "train_images_per_s": speed.value(),
        "steps": progress.step,
        "final_losses": _final_losses(progress.history),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "nonfinite_steps_skipped": progress.nonfinite_skipped,
        "device": str(accelerator.device),
        "total_minutes": round((time.time() - start) / 60, 2),
    }
    document = _finite_or_none(document)
    if accelerator.is_main_process:
        _write_run(out, model, cfg, document, progress.history)
    for task, values in evaluation["metrics"].items():
        logger.info("%s: %s", task, ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    if document["delta_m"] is not None:
        logger.info("delta_m %.2f%% vs single-task %s", document["delta_m"], cfg.single_task_baselines)
    return document


def _train_loop(cfg, accelerator, model, criterion, optimizer, scheduler, loader, sampler, dataset, progress,
                checkpoint_dir: Path, total_steps: int, speed: _Throughput) -> None:
    model.train()
    bar = tqdm(total=total_steps, initial=progress.step, desc=f"train {cfg.method}",
               disable=not accelerator.is_main_process)
    guard = ckpt.NonFiniteGuard(progress, cfg.max_nonfinite)
    interval_losses: list[float] = []
    resuming_mid_epoch = progress.batches_in_epoch > 0  # the sampler holds the position already
    device = accelerator.device
    while progress.step < total_steps:
        if not resuming_mid_epoch:
            sampler.set_epoch(progress.epoch)
        resuming_mid_epoch = False
        dataset.set_epoch(progress.epoch)  # the augmentation draws of this epoch
        for batch in loader:  # after a resume, the sampler yields the rest of the epoch
            progress.batches_in_epoch += 1
            images = batch["image"].to(device, non_blocking=True)
            targets = {k: v.to(device, non_blocking=True) for k, v in loss_targets(batch, cfg.tasks).items()}
            _sync(device)
            began = time.perf_counter()
            loss, losses = criterion(model(images), targets)
            if not ckpt.apply_update(loss, losses, guard, accelerator, model, optimizer, scheduler, cfg.grad_clip):
                continue
            _sync(device)
            speed.add(time.perf_counter() - began, images.shape[0])
            progress.step += 1
            row = {"step": progress.step, "lr": scheduler.get_last_lr()[0], **{t: v.item() for t, v in losses.items()}}
            progress.history.append(row)
            interval_losses.append(loss.item())
            bar.update(1)
            if progress.step % cfg.log_every == 0 or progress.step == total_steps:
                bar.set_postfix({t: f"{row[t]:.3f}" for t in losses})
            if cfg.save_every and (progress.step % cfg.save_every == 0 or progress.step == total_steps):
                if accelerator.is_main_process:
                    _save(cfg, accelerator, model, optimizer, scheduler, sampler, progress, speed, checkpoint_dir,
                          score=sum(interval_losses) / len(interval_losses))
                interval_losses = []
            if progress.step >= total_steps:
                break
        else:
            progress.epoch += 1
            progress.batches_in_epoch = 0
    bar.close()


def _save(cfg, accelerator, model, optimizer, scheduler, sampler, progress: Progress, speed: _Throughput,
          folder: Path, score: float) -> None:
    unwrapped = accelerator.unwrap_model(model)
    state = ckpt.training_state(cfg.to_dict(), unwrapped, optimizer, scheduler, accelerator.scaler, sampler,
                                progress)
    state["buffers"] = _buffers(unwrapped)  # BatchNorm statistics of the decoders
    state["step_times"] = list(speed.steps)  # training speed survives a resume
    ckpt.save_checkpoint(folder, progress.step, state, score, cfg.keep_last)


def _maybe_resume(cfg, folder: Path, model, optimizer, scheduler, accelerator, sampler,
                  progress: Progress, speed: _Throughput) -> Path | None:
    ckpt.discard_partial_writes(folder)  # only this run writes there
    path = ckpt.find_resume_checkpoint(cfg.resume, folder)
    if path is None:
        return None
    state = ckpt.restore_training_state(path, cfg.to_dict(), model, optimizer, scheduler, accelerator.scaler,
                                        sampler, progress)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, tensor in state.get("buffers", {}).items():
            buffers[name].copy_(tensor)
    speed.steps = [tuple(x) for x in state.get("step_times", [])]
    return path


# ----------------------------------------------------------------------------- run folder


def _final_losses(history: list[dict], last: int = 10) -> dict[str, float]:
    """Mean of each task's loss over the last ``last`` steps."""
    rows = history[-last:]
    keys = [k for k in (rows[0] if rows else {}) if k not in ("step", "lr")]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: undefined numbers (e.g. no person in the val set) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _write_run(out: Path, model: nn.Module, cfg: DenseTrainConfig, document: dict, history: list[dict]) -> None:
    weights = {**ckpt.trainable_state(model), **_buffers(model)}
    atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file({k: v.contiguous() for k, v in weights.items()}, tmp))
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    with (out / "train_log.jsonl").open("w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    title = f"{cfg.method}{'+' if cfg.mtlora_plus else ''}: {', '.join(cfg.tasks)}"
    plot_training_curves(history, out / "training_curves.png", title=title)
