"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the trainable tensors (adapters, heads; the frozen backbone is not
copied), optimizer, scheduler and grad-scaler state, the sampler's position in its epoch,
the RNG states, the run's history and its config. Files are ``checkpoint-<step>.pt`` in
``<output>/checkpoints/``; the newest ``keep_last`` and the best one are kept.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlmtl import distributed
from vlmtl.adapters.io import atomic_write

logger = logging.getLogger(__name__)

_NAME = re.compile(r"checkpoint-(\d+)\.pt$")
BEST_FILE = "best.json"
# Options that may change between a run and its resumption (they do not alter the result).
RESUMABLE_CHANGES = {"output", "resume", "workers", "threads", "log_every", "keep_last", "save_every"}


@dataclass
class Progress:
    """What a checkpoint must restore besides tensors: where the run is and what it saw."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    bad_images: int = 0
    nonfinite_skipped: int = 0
    history: list[dict] = field(default_factory=list)
    step_times: list[tuple[float, int]] = field(default_factory=list)  # (compute seconds, samples) per step


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: every trainable parameter, plus the buffers of the modules
    that own one (e.g. a trained decoder's BatchNorm statistics, needed for inference)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not any(p.requires_grad for p in own.values()):
            continue
        dot = f"{prefix}." if prefix else ""
        tensors.update({dot + n: p for n, p in own.items() if p.requires_grad})
        tensors.update({dot + n: b for n, b in module.named_buffers(recurse=False) if b is not None})
    return tensors


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of :func:`trainable_tensors` (checkpoints and run folders)."""
    return {n: t.detach().cpu().clone() for n, t in trainable_tensors(model).items()}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``state`` (from :func:`trainable_state`) into a model built the same way."""
    tensors = trainable_tensors(model)
    if set(tensors) != set(state):
        missing, extra = sorted(set(tensors) - set(state)), sorted(set(state) - set(tensors))
        raise ValueError(f"checkpoint {source} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            if tensors[name].shape != tensor.shape:
                raise ValueError(f"checkpoint {source}: {name} has shape {tuple(tensor.shape)}, "
                                 f"model {tuple(tensors[name].shape)}")
            tensors[name].copy_(tensor)


def checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], score: float | None, keep_last: int) -> Path:
    """Write ``checkpoint-<step>.pt`` atomically, then drop old ones (keeping the best)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{step:08d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    best_file = folder / BEST_FILE
    best = json.loads(best_file.read_text()) if best_file.is_file() else None
    if score is not None and (best is None or score < best["score"]):
        best = {"checkpoint": path.name, "step": step, "score": score}
        atomic_write(best_file, lambda tmp: Path(tmp).write_text(json.dumps(best, indent=2) + "\n"))
    keep = {p.name for p in checkpoints(folder)[-max(1, keep_last):]}
    if best is not None:
        keep.add(best["checkpoint"])
    for old in checkpoints(folder):
        if old.name not in keep:
            old.unlink()
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err


def check_same_config(saved: dict[str, Any], current: dict[str, Any], source: Path) -> None:
    """A checkpoint continues only the run it came from: other options are refused."""
    differing = {k: (saved.get(k), current.get(k)) for k in set(saved) | set(current)
                 if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)}
    if differing:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(differing.items())[:5])
        raise ValueError(f"checkpoint {source} comes from another config ({shown}); "
                         "use another --output, or --resume never to start over")


def discard_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted ``atomic_write`` left in ``folder`` (a
    SIGKILL gives it no chance to clean up); the files they were meant to replace are whole."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted write", path)
    return stale


def find_resume_checkpoint(resume: str, folder: Path) -> Path | None:
    """``resume`` is "never", "auto" (the newest checkpoint in ``folder``, if any) or a path."""
    if resume == "never":
        return None
    if resume == "auto":
        found = checkpoints(folder)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
    return path


def own_rng_state(saved: dict[str, Any] | list[dict[str, Any]], source: Path) -> dict[str, Any]:
    """This rank's RNG state from a checkpoint (a list of them when several ranks wrote it).
    Resuming with another number of processes would change every batch: refused."""
    written_by = len(saved) if isinstance(saved, list) else 1
    if written_by != distributed.world_size():
        raise ValueError(f"checkpoint {source} comes from a run of {written_by} process(es); resume it with as many "
                         f"(this run has {distributed.world_size()}), or start over with --resume never")
    return saved[distributed.rank()] if isinstance(saved, list) else saved


def training_state(config: dict[str, Any], model: nn.Module, optimizer, scheduler, scaler, sampler,
                   progress: Progress) -> dict[str, Any]:
    """The checkpoint document shared by the trainers (they may add keys)."""
    return {
        "step": progress.step,
        "progress": dict(vars(progress)),
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "sampler": sampler.state_dict(batches_done=progress.batches_in_epoch),
        "rng": rng_state(),
        "config": config,
    }


def restore_training_state(path: Path, config: dict[str, Any], model: nn.Module, optimizer, scheduler, scaler,
                           sampler, progress: Progress) -> dict[str, Any]:
    """Load ``path`` into everything :func:`training_state` saved; returns the document."""
    state = load_checkpoint(path)
    check_same_config(state["config"], config, path)
    rng = own_rng_state(state["rng"], path)
    load_trainable_state(model, state["model"], path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") is not None and scaler is not None:
        scaler.load_state_dict(state["scaler"])
    sampler.load_state_dict(state["sampler"])
    for key, value in state["progress"].items():
        setattr(progress, key, value)
    progress.step_times = [tuple(x) for x in progress.step_times]
    set_rng_state(rng)
    logger.info("resumed from %s at step %d", path, progress.step)
    return state
