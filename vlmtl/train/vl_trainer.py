"""Multi-task vision-language training on ``accelerate``: mixed-task batches, one optimizer,
per-task loss weights, evaluation, and the run folder (adapters, heads, metrics, config, plot)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_model
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlmtl.adapters import count_parameters, save_adapters
from vlmtl.adapters.io import atomic_write
from vlmtl.data import AnswerVocab, MultiTaskBatchSampler, MultiTaskCollator, MultiTaskDataset
from vlmtl.metrics import normalize_answer
from vlmtl.models import DEFAULT_CLIP, create_multitask_clip

from .config import VLTrainConfig
from .plots import plot_training_curves
from .vl_data import load_samples
from .vl_eval import evaluate
from .vl_model import VLMultiTaskModel

logger = logging.getLogger(__name__)


def build_model(cfg: VLTrainConfig, answers: AnswerVocab | None) -> VLMultiTaskModel:
    model_name = DEFAULT_CLIP if cfg.model == "default" else cfg.model
    clip = create_multitask_clip(
        cfg.backbone, model_name, pretrained=cfg.pretrained, method=cfg.method, tasks=cfg.tasks,
        image_targets=cfg.image_targets, text_targets=cfg.text_targets, r=cfg.r, alpha=cfg.alpha,
        dropout=cfg.dropout, n_up=cfg.n_up, temperature=cfg.temperature, lambda_type=cfg.lambda_type,
    )
    context = getattr(clip.tokenizer, "context_length", 77)
    return VLMultiTaskModel(clip, cfg.tasks, num_answers=len(answers) if answers else 0,
                            caption_layers=cfg.caption_layers, caption_heads=cfg.caption_heads,
                            max_caption_len=context)


def _cosine_with_warmup(total: int, warmup_ratio: float):
    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train_vl(cfg: VLTrainConfig) -> dict:
    """Train, evaluate and write the run folder; returns the metrics document."""
    start = time.time()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")

    train_samples, val_samples = load_samples(cfg)
    answers = None
    if "vqa" in cfg.tasks:
        answers = AnswerVocab.build([s for s in train_samples if s.task == "vqa"], top_k=cfg.answer_top_k,
                                    normalize=normalize_answer)
        answers.save(out / "answer_vocab.json")
    model = build_model(cfg, answers)
    clip = model.clip

    dataset = MultiTaskDataset(train_samples, clip.preprocess, tasks=cfg.tasks, on_bad_image=cfg.on_bad_image)
    sampler = MultiTaskBatchSampler(dataset.task_of_each_index, cfg.batch_size, strategy=cfg.sampling,
                                    seed=cfg.seed, temperature=cfg.sampling_temperature)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                        collate_fn=MultiTaskCollator(clip.tokenizer, answers),
                        persistent_workers=cfg.workers > 0)
    adapter_params = [p for p in clip.parameters() if p.requires_grad]
    head_params = [p for p in model.heads.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": cfg.head_lr}]
    if adapter_params:
        groups.insert(0, {"params": adapter_params, "lr": cfg.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(cfg.max_steps, cfg.warmup_ratio))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    trainable_backbone = sum(p.numel() for p in adapter_params)
    trainable, total = count_parameters(model)
    logger.info("%s on %s: tasks %s, %s train samples %s, %s trainable parameters (%s in the backbone) of %s",
                cfg.method, cfg.backbone, cfg.tasks, len(dataset), dataset.task_counts(), f"{trainable:,}",
                f"{trainable_backbone:,}", f"{total:,}")

    history: list[dict] = []
    bad_images = 0
    step, epoch = 0, 0
    model.train()
    progress = tqdm(total=cfg.max_steps, desc=f"train {cfg.method}", disable=not accelerator.is_main_process)
    while step < cfg.max_steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            bad_images += batch["bad_images"]
            if batch["size"] == 0:
                continue
            losses = model(batch)
            loss = sum(cfg.loss_weights.get(t, 1.0) * value for t, value in losses.items())
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            row = {"step": step, "lr": scheduler.get_last_lr()[0], **{t: v.item() for t, v in losses.items()}}
            history.append(row)
            progress.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                progress.set_postfix({t: f"{row[t]:.3f}" for t in losses})
            if step >= cfg.max_steps:
                break
        epoch += 1
    progress.close()
    train_minutes = (time.time() - start) / 60

    model = accelerator.unwrap_model(model)
    logger.info("evaluating on %d validation samples", len(val_samples))
    metrics = evaluate(model, val_samples, clip.preprocess, answers, num_beams=cfg.num_beams,
                       workers=cfg.workers, device=accelerator.device, max_samples=cfg.eval_max_samples)
    document = {
        "method": cfg.method,
        "tasks": cfg.tasks,
        "metrics": metrics,
        "trainable_parameters": trainable,
        "trainable_backbone_parameters": trainable_backbone,
        "total_parameters": total,
        "steps": step,
        "bad_images_skipped": bad_images,
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round((time.time() - start) / 60, 2),
    }
    if accelerator.is_main_process:
        _write_run(out, model, cfg, document, history)
    return document


def _write_run(out: Path, model: VLMultiTaskModel, cfg: VLTrainConfig, document: dict, history: list[dict]) -> None:
    if cfg.method != "none":
        save_adapters(model.clip.backbone, out / "adapters")
    atomic_write(out / "heads.safetensors", lambda tmp: save_model(model.heads, tmp))  # handles tied weights
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    with (out / "train_log.jsonl").open("w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    plot_training_curves(history, out / "training_curves.png", title=f"{cfg.method}: {', '.join(cfg.tasks)}")
