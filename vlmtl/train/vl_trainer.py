"""Multi-task vision-language training on ``accelerate``: mixed-task batches, one optimizer,
per-task loss weights, checkpoints with exact resumption, evaluation, and the run folder
(adapters, heads, metrics, resolved config, training curves).

Two kinds of model share the loop: a task-routed CLIP with one head per task
(``VLMultiTaskModel``) and a task-routed LLaVA that generates answers and captions
(``VLLlavaModel``). Both give per-task losses of a mixed batch."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file, save_model
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlmtl.adapters import count_parameters, save_adapters
from vlmtl.adapters.io import atomic_write
from vlmtl.data import AnswerVocab, MultiTaskBatchSampler, MultiTaskDataset
from vlmtl.metrics import normalize_answer
from vlmtl.models import DEFAULT_CLIP, create_multitask_clip, create_multitask_llava
from vlmtl.models.llava import DEFAULT_LLAVA_DIR

from . import checkpoint as ckpt
from .checkpoint import Progress
from .config import VLTrainConfig
from .llava_model import VLLlavaModel
from .plots import plot_training_curves
from .vl_data import load_samples
from .vl_eval import evaluate
from .vl_model import VLMultiTaskModel

VLModel = VLMultiTaskModel | VLLlavaModel

logger = logging.getLogger(__name__)


def _names(targets: list[str] | str | None) -> list[str] | None:
    return targets.split(",") if isinstance(targets, str) else targets


def build_model(cfg: VLTrainConfig, answers: AnswerVocab | None) -> VLModel:
    hparams = dict(r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, n_up=cfg.n_up, temperature=cfg.temperature,
                   lambda_type=cfg.lambda_type)
    if cfg.backbone == "llava":
        llava = create_multitask_llava(
            cfg.tasks, cfg.method, model_dir=DEFAULT_LLAVA_DIR if cfg.model == "default" else cfg.model,
            text_targets=_names(cfg.text_targets), vision_targets=_names(cfg.image_targets),
            train_projector=cfg.train_projector, **hparams,
        )
        return VLLlavaModel(llava)
    model_name = DEFAULT_CLIP if cfg.model == "default" else cfg.model
    clip = create_multitask_clip(
        cfg.backbone, model_name, pretrained=cfg.pretrained, method=cfg.method, tasks=cfg.tasks,
        image_targets=cfg.image_targets, text_targets=cfg.text_targets, **hparams,
    )
    context = getattr(clip.tokenizer, "context_length", 77)
    return VLMultiTaskModel(clip, cfg.tasks, num_answers=len(answers) if answers else 0,
                            caption_layers=cfg.caption_layers, caption_heads=cfg.caption_heads,
                            max_caption_len=context)


def cosine_with_warmup(total: int, warmup_ratio: float):
    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train_vl(cfg: VLTrainConfig) -> dict:
    """Train (resuming from a checkpoint when there is one), evaluate, write the run folder."""
    start = time.time()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / "checkpoints"

    train_samples, val_samples = load_samples(cfg)
    answers = None
    if "vqa" in cfg.tasks and cfg.backbone != "llava":  # the classifier head's answer vocabulary
        answers = AnswerVocab.build([s for s in train_samples if s.task == "vqa"], top_k=cfg.answer_top_k,
                                    normalize=normalize_answer)
    model = build_model(cfg, answers)
    preprocess = model.preprocess

    dataset = MultiTaskDataset(train_samples, preprocess, tasks=cfg.tasks, on_bad_image=cfg.on_bad_image)
    sampler = MultiTaskBatchSampler(dataset.task_of_each_index, cfg.batch_size, strategy=cfg.sampling,
                                    seed=cfg.seed, temperature=cfg.sampling_temperature)
    # Its own generator: creating a loader iterator must not consume the global RNG (dropout's),
    # or a resumed run would draw different dropout masks than an uninterrupted one.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                        collate_fn=model.collator(answers), generator=torch.Generator().manual_seed(cfg.seed))
    adapter_params = [p for p in model.adapted.parameters() if p.requires_grad]
    head_params = [p for p in model.heads.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": cfg.head_lr}] if head_params else []
    if adapter_params:
        groups.insert(0, {"params": adapter_params, "lr": cfg.lr})
    if not groups:
        raise ValueError(f"nothing to train: method {cfg.method!r} with train_projector false leaves every "
                         "parameter frozen")
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(cfg.max_steps, cfg.warmup_ratio))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    progress = Progress()
    resumed_from = _maybe_resume(cfg, checkpoint_dir, accelerator.unwrap_model(model), optimizer, scheduler,
                                 accelerator, sampler, progress)
    cfg.save(out / "config.yaml")
    if answers is not None:
        answers.save(out / "answer_vocab.json")

    trainable_backbone = sum(p.numel() for p in adapter_params)
    trainable, total = count_parameters(model)
    logger.info("%s on %s: tasks %s, %d train samples %s; %s trainable parameters (%s in the backbone) of %s",
                cfg.method, cfg.backbone, cfg.tasks, len(dataset), dataset.task_counts(), f"{trainable:,}",
                f"{trainable_backbone:,}", f"{total:,}")
    train_loop(cfg, accelerator, model, optimizer, scheduler, loader, sampler, progress, checkpoint_dir)

    model = accelerator.unwrap_model(model)
    if accelerator.is_main_process:  # the trained weights first: a failing evaluation loses nothing
        _write_weights(out, model, cfg)
    logger.info("evaluating on %d validation samples", len(val_samples))
    metrics = evaluate(model, val_samples, preprocess, answers, num_beams=cfg.num_beams,
                       workers=cfg.workers, device=accelerator.device, max_samples=cfg.eval_max_samples,
                       max_new_tokens=cfg.max_new_tokens)
    document = {
        "method": cfg.method,
        "tasks": cfg.tasks,
        "metrics": metrics,
        "trainable_parameters": trainable,
        "trainable_backbone_parameters": trainable_backbone,
        "total_parameters": total,
        "steps": progress.step,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "bad_images_skipped": progress.bad_images,
        "nonfinite_steps_skipped": progress.nonfinite_skipped,
        "total_minutes": round((time.time() - start) / 60, 2),
    }
    if accelerator.is_main_process:
        _write_results(out, cfg, document, progress.history)
    for task, values in metrics.items():
        logger.info("%s: %s", task, ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    return document


def train_loop(cfg, accelerator, model, optimizer, scheduler, loader, sampler, progress: Progress,
                checkpoint_dir: Path) -> None:
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=progress.step, desc=f"train {cfg.method}",
               disable=not accelerator.is_main_process)
    guard = ckpt.NonFiniteGuard(progress, cfg.max_nonfinite)
    interval_losses: list[float] = []
    resuming_mid_epoch = progress.batches_in_epoch > 0  # the sampler holds the position already
    while progress.step < cfg.max_steps:
        if not resuming_mid_epoch:
            sampler.set_epoch(progress.epoch)
        resuming_mid_epoch = False
        for batch in loader:  # after a resume, the sampler yields the rest of the epoch
            progress.batches_in_epoch += 1
            progress.bad_images += batch["bad_images"]
            if batch["size"] == 0:
                continue
            batch = _to_device(batch, accelerator.device)
            losses = model(batch)
            loss = sum(cfg.loss_weights.get(t, 1.0) * value for t, value in losses.items())
            if not ckpt.apply_update(loss, losses, guard, accelerator, model, optimizer, scheduler, cfg.grad_clip):
                continue
            progress.step += 1
            row = {"step": progress.step, "lr": scheduler.get_last_lr()[0],
                   **{t: v.item() for t, v in losses.items()}}
            progress.history.append(row)
            interval_losses.append(loss.item())
            bar.update(1)
            if progress.step % cfg.log_every == 0 or progress.step == cfg.max_steps:
                bar.set_postfix({t: f"{row[t]:.3f}" for t in losses})
            if cfg.save_every and (progress.step % cfg.save_every == 0 or progress.step == cfg.max_steps):
                if accelerator.is_main_process:
                    _save(cfg, accelerator, model, optimizer, scheduler, sampler, progress, checkpoint_dir,
                          score=sum(interval_losses) / len(interval_losses))
                interval_losses = []
            if progress.step >= cfg.max_steps:
                break
        else:
            progress.epoch += 1
            progress.batches_in_epoch = 0
    bar.close()


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _save(cfg, accelerator, model, optimizer, scheduler, sampler, progress: Progress, folder: Path,
          score: float) -> None:
    state = ckpt.training_state(cfg.to_dict(), accelerator.unwrap_model(model), optimizer, scheduler,
                                accelerator.scaler, sampler, progress)
    ckpt.save_checkpoint(folder, progress.step, state, score, cfg.keep_last)


def _maybe_resume(cfg, folder: Path, model, optimizer, scheduler, accelerator, sampler,
                  progress: Progress) -> Path | None:
    ckpt.discard_partial_writes(folder)  # only this run writes there
    path = ckpt.find_resume_checkpoint(cfg.resume, folder)
    if path is not None:
        ckpt.restore_training_state(path, cfg.to_dict(), model, optimizer, scheduler, accelerator.scaler,
                                    sampler, progress)
    return path


def _write_weights(out: Path, model: VLModel, cfg: VLTrainConfig) -> None:
    """adapters/ (the core's format; with LLaVA it holds the trained projector too) and
    heads.safetensors (CLIP's task heads; LLaVA has none) or, for a LLaVA whose only
    trained part is the projector (method 'none'), trainable.safetensors."""
    if cfg.method != "none":
        save_adapters(model.adapted, out / "adapters")
    elif not len(model.heads):
        state = ckpt.trainable_state(model.adapted)
        atomic_write(out / "trainable.safetensors", lambda tmp: save_file(state, tmp))
    if len(model.heads):
        atomic_write(out / "heads.safetensors", lambda tmp: save_model(model.heads, tmp))  # handles tied weights


def _write_results(out: Path, cfg: VLTrainConfig, document: dict, history: list[dict]) -> None:
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    with (out / "train_log.jsonl").open("w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    plot_training_curves(history, out / "training_curves.png", title=f"{cfg.method}: {', '.join(cfg.tasks)}")
