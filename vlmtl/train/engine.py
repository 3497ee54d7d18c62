"""The one training engine of every path (CLIP, LLaVA, dense, the pre-training scripts).

A path gives a :class:`Job`: the model, a loader over a resumable ``MultiTaskBatchSampler``,
the optimizer's parameter groups and a step that turns a batch into per-task losses. The
engine owns the rest: AdamW with one warm-up + cosine schedule, loss weighting, gradient
clipping, the non-finite guard, atomic checkpoints with exact resume, the progress bar,
throughput, and the run folder (``config.yaml``, ``train_log.jsonl``, ``metrics.json``,
``training_curves.png``).

Launched as N processes (``accelerate launch``, ``torchrun``), it trains data-parallel with the
results of one process whose batch is the N ranks' batches together (see
:func:`global_batch_loss` and :mod:`vlmtl.distributed`): the sampler is sharded by rank,
BatchNorm statistics are the global batch's, checkpoints are written once by rank 0 (with
every rank's RNG state) and every rank resumes from the file rank 0 picks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlmtl import distributed
from vlmtl.adapters.io import atomic_write

from . import checkpoint as ckpt
from .adapter_monitor import AdapterMonitor
from .checkpoint import Progress
from .config import TrainConfig
from .plots import plot_training_curves

logger = logging.getLogger(__name__)

THROUGHPUT_WARMUP_STEPS = 2  # first steps of a process (allocations, autotuning) are not timed
Losses = dict[str, torch.Tensor]


@dataclass
class Job:
    """What a path hands the engine.

    ``step(model, batch)`` returns the per-task losses of one batch (tasks absent from it
    left out) and is called with the prepared model; ``batch_size(batch)`` counts its
    samples (0 skips the batch); ``on_epoch(epoch)`` runs before each epoch (e.g. the
    augmentation draws). ``param_groups`` default to every trainable parameter at ``lr``.
    ``loss_counts(batch)`` says how many units (samples, tokens, pixels) each task's loss
    averages over in the batch (default: the batch's samples); data parallelism weights each
    rank's loss by its share of the global count (:func:`global_batch_loss`). ``monitor``
    adds adapter measurements (update sizes, mixing entropy) to every logged step's row."""

    model: nn.Module
    loader: DataLoader
    step: Callable[[nn.Module, dict], Losses]
    param_groups: list[dict[str, Any]] | None = None
    batch_size: Callable[[dict], int] = lambda batch: int(batch["size"])
    on_epoch: Callable[[int], None] | None = None
    title: str = ""
    loss_counts: Callable[[dict], dict[str, float]] | None = None
    monitor: AdapterMonitor | None = None  # adapter measurements in the log rows, every log_every steps


class NonFiniteLossError(RuntimeError):
    """Raised after too many non-finite losses in a row (each one is skipped and counted)."""


class NonFiniteGuard:
    """Skips and counts steps whose loss is not finite; stops the run after ``limit`` in a row."""

    def __init__(self, progress: Progress, limit: int) -> None:
        self.progress, self.limit, self.in_a_row = progress, limit, 0

    def finite(self, loss: float, losses: dict[str, float]) -> bool:
        if math.isfinite(loss):
            self.in_a_row = 0
            return True
        self.progress.nonfinite_skipped += 1
        self.in_a_row += 1
        step = self.progress.step + 1
        logger.warning("step %d: non-finite loss %s (%s); step skipped", step, loss, losses)
        if self.in_a_row >= self.limit:
            raise NonFiniteLossError(
                f"{self.in_a_row} non-finite losses in a row at step {step}: stopping. "
                "Lower the learning rate, check the data, or resume from the last checkpoint."
            )
        return False


def apply_update(loss, reported: float, losses: dict, guard: NonFiniteGuard, accelerator, model, optimizer,
                 scheduler, grad_clip: float | None) -> bool:
    """The engine's optimizer update: zero the gradients, skip a non-finite loss
    (``reported``, the global batch's, so every rank decides alike; ``guard`` counts it and
    may stop the run), backward ``loss``, clip, then step the optimizer and the schedule.
    Returns False for a skipped step."""
    optimizer.zero_grad(set_to_none=True)
    if not guard.finite(reported, losses):
        return False
    accelerator.backward(loss)
    if grad_clip:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    return True


def global_batch_loss(losses: Losses, counts: dict[str, float], weight: Callable[[str], float],
                      tasks: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss this rank back-propagates, and each task's loss over the global batch.

    Each task's loss is a mean over ``counts[task]`` units of this rank's batch. DDP averages
    the ranks' gradients, so this rank's term is scaled by ``world · count / global count``:
    the average is then the gradient of the mean over the whole global batch, exactly what one
    process computes, and a rank that holds no sample of a task neither crashes (the task's
    parameters are found unused) nor dilutes the others' gradient. One all-reduce of
    ``2 × len(tasks)`` numbers per step. In one process: ``Σ weight(t) · loss_t``."""
    unknown = sorted(set(losses) - set(tasks))
    uncounted = sorted(set(losses) - set(counts))
    if uncounted:
        raise ValueError(f"loss_counts gave no count for the losses of {uncounted}")
    if unknown:
        raise ValueError(f"the step returned losses for {unknown}, which are not among the run's tasks {tasks}")
    local = torch.zeros(2 * len(tasks), dtype=torch.float64)
    for i, task in enumerate(tasks):
        if task in losses:
            local[i] = float(counts[task])
            local[len(tasks) + i] = losses[task].detach().double().cpu() * local[i]
    total = distributed.all_reduce_sum(local)
    world = distributed.world_size()
    backward, logged = None, {}
    for i, task in enumerate(tasks):
        if total[i] <= 0:
            continue
        logged[task] = float(total[len(tasks) + i] / total[i])
        if task in losses:
            term = weight(task) * losses[task] * float(world * local[i] / total[i])
            backward = term if backward is None else backward + term
    if backward is None:
        raise ValueError("no task has a loss in this batch (did the step return an empty dict?)")
    return backward, logged


def trainable_digest(model: nn.Module) -> str:
    """A SHA-256 of what training changed (names and bytes): data-parallel replicas must agree."""
    digest = hashlib.sha256()
    for name, tensor in sorted(ckpt.trainable_state(model).items()):
        digest.update(name.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cosine_with_warmup(total: int, warmup_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor of step ``s``: linear warm-up, then cosine to zero."""
    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def cpu_threads(workers: int, requested: int | None = None) -> int:
    """Threads for torch's CPU ops: ``requested``, or the cores the data workers leave free.
    On a small CPU box, compute threads competing with loader workers for cores spin in
    OpenMP barriers and can be several times slower than fewer threads."""
    if requested is not None:
        return max(1, int(requested))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores - max(0, workers)))


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(step_times: list[tuple[float, int]]) -> float | None:
    """Samples per second over the compute of each step, leaving out a process's first
    steps (allocation, autotuning) unless there are no others."""
    timed = step_times[THROUGHPUT_WARMUP_STEPS:] or step_times
    seconds = sum(t for t, _ in timed)
    return sum(n for _, n in timed) / seconds if seconds > 0 else None


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: undefined numbers (e.g. no person in the val set) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


class Trainer:
    """Runs a :class:`Job` under ``cfg``: ``fit`` trains (resuming when a checkpoint is
    there), ``write_run`` writes the run folder. One ``Trainer`` per run."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.started = time.time()
        # find_unused_parameters: a rank whose batch lacks a task leaves that task's head and
        # routed adapter weights without a gradient (see global_batch_loss). cpu=True on a
        # machine without CUDA makes torchrun/accelerate ranks use gloo (accelerate otherwise
        # runs each as a lone process).
        multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision, cpu=multi_process and not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        if cfg.threads is not None:
            torch.set_num_threads(cpu_threads(cfg.workers, cfg.threads))
        set_seed(cfg.seed)
        self.out = Path(cfg.output)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir = self.out / "checkpoints"
        self.progress = Progress()
        self.resumed_from: Path | None = None
        self.replica_digests: list[str] = []

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    def fit(self, job: Job) -> nn.Module:
        """Train ``job.model`` to the configured number of steps; returns the unwrapped model."""
        cfg = self.cfg
        sampler = job.loader.batch_sampler
        sampler.shard(self.world_size, self.accelerator.process_index)
        if self.world_size > 1:
            self._check_distributed_setup()
            distributed.synchronise_batchnorm(job.model)
        total = cfg.total_steps(len(sampler))
        groups = job.param_groups or [{"params": [p for p in job.model.parameters() if p.requires_grad]}]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError(f"nothing to train: method {cfg.method!r} leaves every parameter frozen")
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total, cfg.warmup_ratio))
        # The schedule stays unprepared: accelerate's wrapper steps it once per process, as if
        # each rank's loader were a shard of one epoch; here every rank takes every step.
        model, optimizer = self.accelerator.prepare(job.model, optimizer)
        self._resume(model, optimizer, scheduler, sampler)
        if self.world_size > 1 and self.resumed_from is None:
            set_seed(cfg.seed, device_specific=True)  # each rank its own dropout masks
        if self.is_main:
            cfg.save(self.out / "config.yaml")
        self._loop(job, model, optimizer, scheduler, sampler, total)
        model = self.accelerator.unwrap_model(model)
        self.replica_digests = distributed.gather_objects(trainable_digest(model))
        if len(set(self.replica_digests)) > 1:
            logger.warning("the ranks' trained weights differ: %s", self.replica_digests)
        return model

    def _skip_empty(self, size: int) -> bool:
        """Whether to skip a batch with no sample left (e.g. every image unreadable). Ranks
        decide together: one rank skipping alone would leave the others waiting for it."""
        if self.world_size == 1:
            return size == 0
        empty = int(distributed.all_reduce_sum(torch.tensor(int(size == 0))))
        if 0 < empty < self.world_size:
            raise RuntimeError(f"{empty} of {self.world_size} ranks have a batch with no usable sample (all its "
                               "images unreadable?): data-parallel steps need every rank; fix or drop those images")
        return empty == self.world_size

    def _check_distributed_setup(self) -> None:
        kind = self.accelerator.distributed_type
        if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED) and self.cfg.save_every:
            raise ValueError(f"resumable checkpoints are written from whole (unsharded) tensors; under {kind.value} "
                             "they are not supported yet: pass --save-every 0, or train with DDP")

    def _loop(self, job: Job, model, optimizer, scheduler, sampler, total: int) -> None:
        cfg, progress, device = self.cfg, self.progress, self.device
        model.train()
        bar = tqdm(total=total, initial=progress.step, desc=job.title or f"train {cfg.method}",
                   disable=not self.is_main)
        guard = NonFiniteGuard(progress, cfg.max_nonfinite)
        interval_losses: list[float] = []
        resuming_mid_epoch = progress.batches_in_epoch > 0  # the sampler holds the position already
        unwrapped = self.accelerator.unwrap_model(model)
        if job.monitor is not None:
            job.monitor.start(unwrapped)
        while progress.step < total:
            if not resuming_mid_epoch:
                sampler.set_epoch(progress.epoch)
            resuming_mid_epoch = False
            if job.on_epoch is not None:
                job.on_epoch(progress.epoch)
            for batch in job.loader:  # after a resume, the sampler yields the rest of the epoch
                progress.batches_in_epoch += 1
                progress.bad_images += int(batch.get("bad_images", 0))
                size = job.batch_size(batch)
                if self._skip_empty(size):
                    continue
                batch = to_device(batch, device)
                synchronize(device)
                began = time.perf_counter()
                losses = job.step(model, batch)
                counts = job.loss_counts(batch) if job.loss_counts else dict.fromkeys(losses, size)
                loss, logged = global_batch_loss(losses, counts, cfg.loss_weight, list(cfg.tasks))
                reported = sum(cfg.loss_weight(t) * value for t, value in logged.items())
                watched = job.monitor is not None and (progress.step + 1) % cfg.log_every == 0
                if watched:
                    job.monitor.before_step(unwrapped)
                if not apply_update(loss, reported, logged, guard, self.accelerator, model, optimizer, scheduler,
                                    cfg.grad_clip):
                    continue
                synchronize(device)
                progress.step_times.append((time.perf_counter() - began, size))
                progress.step += 1
                row = {"step": progress.step, "lr": scheduler.get_last_lr()[0], **logged}
                if watched:
                    row.update(job.monitor.after_step(unwrapped))
                progress.history.append(row)
                interval_losses.append(reported)
                bar.update(1)
                if progress.step % cfg.log_every == 0 or progress.step == total:
                    bar.set_postfix({t: f"{row[t]:.3f}" for t in logged})
                if cfg.save_every and (progress.step % cfg.save_every == 0 or progress.step == total):
                    self._save(model, optimizer, scheduler, sampler, score=sum(interval_losses) / len(interval_losses))
                    interval_losses = []
                if progress.step >= total:
                    break
            else:
                progress.epoch += 1
                progress.batches_in_epoch = 0
        bar.close()

    def _save(self, model, optimizer, scheduler, sampler, score: float) -> None:
        """Called on every rank (each gives its RNG state); rank 0 writes the one file."""
        rng = distributed.gather_objects(ckpt.rng_state())
        if self.is_main:
            state = ckpt.training_state(self.cfg.to_dict(), self.accelerator.unwrap_model(model), optimizer,
                                        scheduler, self.accelerator.scaler, sampler, self.progress)
            state["rng"] = rng if self.world_size > 1 else rng[0]
            ckpt.save_checkpoint(self.checkpoint_dir, self.progress.step, state, score, self.cfg.keep_last)
        distributed.barrier()  # no rank goes on before the checkpoint is whole

    def _resume(self, model, optimizer, scheduler, sampler) -> None:
        path = None
        if self.is_main:  # only this run writes there; rank 0 picks the file every rank reads
            ckpt.discard_partial_writes(self.checkpoint_dir)
            path = ckpt.find_resume_checkpoint(self.cfg.resume, self.checkpoint_dir)
        path = distributed.broadcast_object(path)
        if path is not None:
            ckpt.restore_training_state(path, self.cfg.to_dict(), self.accelerator.unwrap_model(model), optimizer,
                                        scheduler, self.accelerator.scaler, sampler, self.progress)
        self.resumed_from = path

    def summary(self) -> dict[str, Any]:
        """What every run's ``metrics.json`` records about the training itself."""
        return {
            "steps": self.progress.step,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "bad_images_skipped": self.progress.bad_images,
            "nonfinite_steps_skipped": self.progress.nonfinite_skipped,
            "train_samples_per_s": throughput(self.progress.step_times),
            "device": str(self.device),
            "processes": self.world_size,
            "replicas_identical": len(set(self.replica_digests)) <= 1,
            "total_minutes": round((time.time() - self.started) / 60, 2),
        }

    def write_run(self, document: dict[str, Any], title: str = "") -> dict[str, Any]:
        """``metrics.json`` (``document`` + the training summary), ``train_log.jsonl`` and
        ``training_curves.png``; on the main process only. Returns the full document."""
        document = finite_or_none({**document, **self.summary()})
        if self.is_main:
            text = json.dumps(document, indent=2) + "\n"
            atomic_write(self.out / "metrics.json", lambda tmp: Path(tmp).write_text(text))
            lines = "".join(json.dumps(row) + "\n" for row in self.progress.history)
            atomic_write(self.out / "train_log.jsonl", lambda tmp: Path(tmp).write_text(lines))
            plot_training_curves(self.progress.history, self.out / "training_curves.png",
                                 title=title or f"{self.cfg.method}: {', '.join(self.cfg.tasks)}")
        return document
