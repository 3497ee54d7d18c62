"""``train_vl.py --add-task NAME --from RUN_DIR``: extend a trained MTL-LoRA CLIP run with a new
task. The run's model is rebuilt from its ``config.yaml`` and weights; the new task gets its own
Λ and mixing logits in every adapted layer (:func:`vlmtl.adapters.add_task`) and its own head,
and trains on its samples alone with the shared A and B frozen (``--train-shared`` unfreezes
them) and the old heads frozen. The old tasks' outputs stay bit-identical, so their metrics
equal the run's; the output folder is a complete run of all the tasks."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vlmtl.adapters import add_task, count_parameters
from vlmtl.data import AnswerVocab, MultiTaskBatchSampler, MultiTaskDataset
from vlmtl.metrics import normalize_answer

from .config import VLTrainConfig
from .engine import Job, Trainer
from .run_weights import load_run_weights, save_run_weights
from .vl_data import load_samples
from .vl_eval import evaluate
from .vl_model import VLMultiTaskModel
from .vl_trainer import build_model

logger = logging.getLogger(__name__)


def trained_config(run_dir: Path) -> VLTrainConfig:
    """The config a run was trained with (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --from must name a finished train_vl.py run folder")
    return VLTrainConfig.from_sources(path)


def extend_run(cfg: VLTrainConfig) -> dict:
    """Train ``cfg.add_task`` into the run ``cfg.from_run``; evaluate every task; write the run folder."""
    old = trained_config(Path(cfg.from_run))
    name = cfg.add_task
    if old.method != "mtl_lora" or old.backbone == "llava":
        raise ValueError(f"--add-task extends an MTL-LoRA CLIP run; {cfg.from_run} is {old.method} on {old.backbone}")
    if name in old.tasks:
        raise ValueError(f"{cfg.from_run} already trains task {name!r} (its tasks: {old.tasks})")
    tasks = [*old.tasks, name]
    if list(cfg.tasks) != tasks:
        raise ValueError(f"with --add-task {name} the run's tasks are {tasks}: pass --tasks {','.join(tasks)}")
    trainer = Trainer(cfg)
    with trainer.accelerator.main_process_first():
        train_samples, val_samples = load_samples(cfg)
    train_samples = [s for s in train_samples if s.task == name]
    answers = AnswerVocab.load(Path(cfg.from_run) / "answer_vocab.json", normalize=normalize_answer) \
        if "vqa" in old.tasks else None
    if name == "vqa":
        answers = AnswerVocab.build(train_samples, top_k=cfg.answer_top_k, normalize=normalize_answer)
    if answers is not None and trainer.is_main:
        answers.save(trainer.out / "answer_vocab.json")

    model = build_model(old, answers)
    load_run_weights(cfg.from_run, model.adapted, model.heads)
    for head in model.heads.values():
        head.requires_grad_(False)
    extended = add_task(model.adapted, name, train_shared=cfg.train_shared)
    head = model.add_head(name, num_answers=len(answers) if answers else 0)
    trainable, total = count_parameters(model)
    logger.info("adding task %s to %s: %s trainable parameters of %s", name, cfg.from_run, f"{trainable:,}",
                f"{total:,}")
    model = trainer.fit(new_task_job(cfg, model, train_samples, answers, extended, head))
    if trainer.is_main:
        save_run_weights(trainer.out, model.adapted, model.heads)
    metrics = evaluate(model, val_samples, model.preprocess, answers, num_beams=cfg.num_beams, workers=cfg.workers,
                       device=trainer.device, max_samples=cfg.eval_max_samples, max_new_tokens=cfg.max_new_tokens)
    return trainer.write_run({"method": cfg.method, "tasks": tasks, "added_task": name, "from_run": str(cfg.from_run),
                              "metrics": metrics, "trainable_parameters": trainable, "total_parameters": total})


def new_task_job(cfg: VLTrainConfig, model: VLMultiTaskModel, samples, answers, extended, head) -> Job:
    """The new task's samples (ids in the order of all the model's tasks), its Λ and w without
    weight decay (decay would move the old tasks' rows too), its head at ``head_lr``."""
    dataset = MultiTaskDataset(samples, model.preprocess, tasks=model.tasks, on_bad_image=cfg.on_bad_image)
    sampler = MultiTaskBatchSampler(dataset.task_of_each_index, cfg.batch_size, strategy=cfg.sampling, seed=cfg.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=model.collator(answers),
                        generator=torch.Generator().manual_seed(cfg.seed))
    in_groups = {id(p) for p in extended}
    shared = [p for p in model.adapted.parameters() if p.requires_grad and id(p) not in in_groups]
    groups = [{"params": list(extended), "lr": cfg.lr, "weight_decay": 0.0},
              {"params": shared, "lr": cfg.lr},
              {"params": list(head.parameters()), "lr": cfg.head_lr}]
    return Job(model=model, loader=loader, step=lambda m, batch: m(batch), param_groups=groups,
               loss_counts=model.loss_counts, title=f"add task {cfg.add_task}")
