"""The one vocabulary of vlmtl: task names, method names and backbones that scripts,
configs and factories read (argparse choices come from here). Imports nothing of vlmtl,
so every layer may import it.

Methods are named once for every path. An adapter method names the adapter core's config
(``lora``, ``mtl_lora``, ``mtlora``); ``heads_only`` trains the task heads (decoders,
and LLaVA's projector) on a frozen backbone; ``full`` trains everything;
``single_task`` is one task with a plain LoRA (the dense path's baseline rows).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

# --------------------------------------------------------------------------- tasks
VL_TASKS: tuple[str, ...] = ("vqa", "retrieval", "caption")
GENERATIVE_TASKS: tuple[str, ...] = ("vqa", "caption")  # what a LLaVA decoder answers by generation
# PASCAL-Context dense tasks and their output channels (the official task heads)
DENSE_TASKS: dict[str, int] = {"semseg": 21, "human_parts": 7, "saliency": 1, "normals": 3}

# --------------------------------------------------------------------------- methods
ADAPTER_METHODS: tuple[str, ...] = ("lora", "mtl_lora", "mtlora")  # the adapter core's configs
VL_METHODS: tuple[str, ...] = ("mtl_lora", "lora", "heads_only")
DENSE_METHODS: tuple[str, ...] = ("mtlora", "mtl_lora", "lora", "single_task", "heads_only", "full")
# Words earlier versions used; read with a warning, never written.
METHOD_ALIASES: dict[str, str] = {"none": "heads_only", "decoders_only": "heads_only"}

# --------------------------------------------------------------------------- backbones
CLIP_BACKBONES: tuple[str, ...] = ("open_clip", "hf")
VL_BACKBONES: tuple[str, ...] = (*CLIP_BACKBONES, "llava")

# --------------------------------------------------------------------------- label values
IGNORE_INDEX = 255  # dense labels: pixels no loss or metric counts (PASCAL convention)
LM_IGNORE_INDEX = -100  # language-model labels: tokens the loss skips (Hugging Face convention)


def resolve_method(method: str, allowed: Sequence[str]) -> str:
    """The canonical name of ``method`` (old aliases map with a warning), checked against
    the methods a path offers."""
    if method in METHOD_ALIASES:
        new = METHOD_ALIASES[method]
        warnings.warn(f"method {method!r} is now called {new!r}", DeprecationWarning, stacklevel=3)
        method = new
    if method not in allowed:
        raise ValueError(f"unknown method {method!r}; choose one of {list(allowed)}")
    return method


def check_tasks(tasks: Sequence[str], known: Sequence[str], where: str = "tasks") -> list[str]:
    """``tasks`` as a list: non-empty, unique, each one of ``known``; errors name the task."""
    tasks = [t for t in tasks.split(",") if t] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in {where}; known tasks: {list(known)}")
    if not tasks:
        raise ValueError(f"{where} is empty: name at least one of {', '.join(known)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"a task is named twice in {where}={tasks}")
    return tasks
