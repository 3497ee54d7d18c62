"""The vision-language path on the engine: a task-routed CLIP with one head per task
(``VLMultiTaskModel``) or a task-routed LLaVA that generates answers and captions
(``VLLlavaModel``); mixed-task batches from the task-tagged sampler; evaluation per task.

Writes to ``output``: ``adapters/`` (the core's format; with LLaVA it holds the trained
projector too), ``heads.safetensors`` and ``answer_vocab.json`` (CLIP), and the engine's
run folder (``config.yaml``, ``train_log.jsonl``, ``metrics.json``, ``training_curves.png``,
``checkpoints/``)."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from vlmtl.adapters import count_parameters, parameter_groups
from vlmtl.data import AnswerVocab, MultiTaskBatchSampler, MultiTaskDataset
from vlmtl.metrics import caption_tokenizer, normalize_answer
from vlmtl.models import create_multitask_clip, create_multitask_llava

from .adapter_monitor import AdapterMonitor
from .config import VLTrainConfig
from .engine import Job, Trainer
from .llava_model import VLLlavaModel
from .run_weights import save_run_weights
from .vl_data import load_samples
from .vl_eval import evaluate
from .vl_model import VLMultiTaskModel

VLModel = VLMultiTaskModel | VLLlavaModel

logger = logging.getLogger(__name__)


def adapter_hparams(cfg: VLTrainConfig) -> dict:
    return dict(r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, n_up=cfg.n_up, temperature=cfg.temperature,
                lambda_type=cfg.lambda_type)


def build_model(cfg: VLTrainConfig, answers: AnswerVocab | None) -> VLModel:
    """The configured backbone with its adapters, wrapped as the trainer's per-task-loss model."""
    model = None if cfg.model == "default" else cfg.model
    targets = dict(vision_targets=cfg.vision_targets, text_targets=cfg.text_targets)
    if cfg.backbone == "llava":
        llava = create_multitask_llava(model, tasks=cfg.tasks, method=cfg.method,
                                       train_projector=cfg.train_projector, **targets, **adapter_hparams(cfg))
        llava.set_grad_checkpointing(cfg.grad_checkpointing)
        return VLLlavaModel(llava)
    clip = create_multitask_clip(model, tasks=cfg.tasks, method=cfg.method, backbone=cfg.backbone,
                                 pretrained=cfg.pretrained, **targets, **adapter_hparams(cfg))
    context = getattr(clip.tokenizer, "context_length", 77)
    model = VLMultiTaskModel(clip, cfg.tasks, num_answers=len(answers) if answers else 0,
                             caption_layers=cfg.caption_layers, caption_heads=cfg.caption_heads,
                             max_caption_len=context, head_dropout=cfg.head_dropout, local_loss=cfg.local_loss,
                             gather_with_grad=cfg.gather_with_grad)
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    return model


def build_job(cfg: VLTrainConfig, model: VLModel, train_samples, answers: AnswerVocab | None) -> Job:
    """Mixed-task batches of the training samples; adapters at ``lr``, heads at ``head_lr``."""
    dataset = MultiTaskDataset(train_samples, model.preprocess, tasks=cfg.tasks, on_bad_image=cfg.on_bad_image)
    sampler = MultiTaskBatchSampler(dataset.task_of_each_index, cfg.batch_size, strategy=cfg.sampling,
                                    seed=cfg.seed, temperature=cfg.sampling_temperature)
    # Its own generator: creating a loader iterator must not consume the global RNG (dropout's),
    # or a resumed run would draw different dropout masks than an uninterrupted one.
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                        collate_fn=model.collator(answers), generator=torch.Generator().manual_seed(cfg.seed))
    groups = parameter_groups(model.adapted, cfg.lr, lambda_lr=cfg.lambda_lr, mixing_lr=cfg.mixing_lr)
    groups.append({"params": [p for p in model.heads.parameters() if p.requires_grad], "lr": cfg.head_lr})
    monitor = AdapterMonitor(cfg.tasks) if cfg.monitor_adapters and AdapterMonitor.applies_to(model.adapted) else None
    logger.info("%s on %s: tasks %s, %d train samples %s", cfg.method, cfg.backbone, cfg.tasks, len(dataset),
                dataset.task_counts())
    return Job(model=model, loader=loader, step=lambda m, batch: m(batch), param_groups=groups,
               loss_counts=model.loss_counts, monitor=monitor)


def train_vl(cfg: VLTrainConfig) -> dict:
    """Train (resuming from a checkpoint when there is one), evaluate, write the run folder."""
    if cfg.add_task:
        from .vl_add_task import extend_run  # it builds on this module

        return extend_run(cfg)
    trainer = Trainer(cfg)
    with trainer.accelerator.main_process_first():  # one process writes a data set into the cache
        train_samples, val_samples = load_samples(cfg)
    answers = None
    if "vqa" in cfg.tasks and cfg.backbone != "llava":  # the classifier head's answer vocabulary
        answers = AnswerVocab.build([s for s in train_samples if s.task == "vqa"], top_k=cfg.answer_top_k,
                                    normalize=normalize_answer)
        if trainer.is_main:
            answers.save(trainer.out / "answer_vocab.json")
    model = build_model(cfg, answers)
    trainable_backbone = sum(p.numel() for p in model.adapted.parameters() if p.requires_grad)
    trainable, total = count_parameters(model)
    logger.info("%s trainable parameters (%s in the backbone) of %s", f"{trainable:,}", f"{trainable_backbone:,}",
                f"{total:,}")
    model = trainer.fit(build_job(cfg, model, train_samples, answers))
    if trainer.is_main:  # the trained weights first: a failing evaluation loses nothing
        save_run_weights(trainer.out, model.adapted, model.heads)
    logger.info("evaluating on %d validation samples", len(val_samples))
    metrics = evaluate(model, val_samples, model.preprocess, answers, num_beams=cfg.num_beams,
                       workers=cfg.workers, device=trainer.device, max_samples=cfg.eval_max_samples,
                       max_new_tokens=cfg.max_new_tokens)
    document = trainer.write_run({
        "method": cfg.method,
        "tasks": cfg.tasks,
        "metrics": metrics,
        **({"caption_tokenizer": caption_tokenizer()} if "caption" in cfg.tasks else {}),  # "ptb" or "python"
        "trainable_parameters": trainable,
        "trainable_backbone_parameters": trainable_backbone,
        "total_parameters": total,
    })
    for task, values in metrics.items():
        logger.info("%s: %s", task, ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    return document
