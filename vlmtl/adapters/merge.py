"""Merge one task's update into the frozen weights, undo it, or export a plain model.

What each method can merge:

* LoRA: its one update, shared by every task (a task name, if given, is only checked).
* MTL-LoRA: one task's update ``U_t A``; the merged model then serves that task only.
* MTLoRA: the task-agnostic LoRA only, and never per task: the task-specific LoRAs act on
  each task's own stream input, not on W's input, so no weight can hold them. They keep
  working on a merged model (its task streams take the merged shared LoRA back out).
"""

from __future__ import annotations

from torch import nn

from .inject import CONFIG_ATTR
from .layers import AdaptedMultiheadAttention, AdapterLayer, MTLLoRALinear, MTLoRALinear
from .routing import task_index


def _adapter_layers(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no adapter layers to merge")
    return layers


def _resolve_task(model: nn.Module, layers: list[AdapterLayer], task: str | int) -> int:
    """The index of ``task`` among the model's tasks (its config, else the layers' task names)."""
    config = getattr(model, CONFIG_ATTR, None)
    if config is not None:
        return config.task_index(task)
    names = getattr(layers[0], "task_names", None)
    num_tasks = len(names) if names else max(getattr(m, "num_tasks", 0) for m in layers)
    return task_index(task, names, num_tasks)


def _merge_index(model: nn.Module, task: str | int | None) -> int | None:
    """The task index MTL-LoRA layers merge (None for the other methods), checked up front."""
    layers = [m for _, m in _adapter_layers(model)]
    if task is not None and any(isinstance(m, MTLoRALinear) for m in layers):
        raise ValueError(
            f"MTLoRA has no per-task merge (got task {task!r}): its task-specific LoRAs act on each task's own "
            "stream input, not on W's input, so no weight can hold them. Call merge(model) without a task: "
            "it merges the task-agnostic LoRA and keeps the task-specific ones working"
        )
    if not any(isinstance(m, MTLLoRALinear) for m in layers):
        if task is not None:
            _resolve_task(model, layers, task)  # plain LoRA serves every task: only reject unknown ones
        return None
    if task is None:
        raise ValueError("this model has per-task adapters: name the task to merge")
    return _resolve_task(model, layers, task)


def merge(model: nn.Module, task: str | int | None = None) -> nn.Module:
    """W ← W + ΔW_task in every adapter layer, so a single-task model runs at the base
    model's cost. MTL-LoRA: a mixed batch (or another task) is refused until :func:`unmerge`.
    MTLoRA: ``task`` must be None (see the module docstring)."""
    index = _merge_index(model, task)
    layers = _adapter_layers(model)
    merged = [name for name, m in layers if m.merged]
    if merged:  # refuse before changing any weight
        raise RuntimeError(f"{len(merged)} adapter layers are already merged (e.g. {merged[0]!r}); unmerge first")
    for _, module in layers:
        module.merge(index if isinstance(module, MTLLoRALinear) else None)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Restore every merged layer's original weight exactly."""
    for module in model.modules():
        if isinstance(module, AdapterLayer):
            module.unmerge()
    return model


def merge_and_unload(model: nn.Module, task: str | int | None = None) -> nn.Module:
    """Merge ``task`` and replace every adapter wrapper by its (now merged) base module:
    a plain model with the original module types and no adapter code.

    Refused for MTLoRA layers with task-specific LoRAs: a plain linear cannot hold them."""
    _check_unloadable(model)
    unmerge(model)
    merge(model, task)
    for name, module in list(model.named_modules()):
        if isinstance(module, (AdapterLayer, AdaptedMultiheadAttention)) and _is_outermost(model, name):
            model.set_submodule(name, module.base_layer)
    if hasattr(model, CONFIG_ATTR):
        delattr(model, CONFIG_ATTR)
    return model


def _check_unloadable(model: nn.Module) -> None:
    with_tasks = [n for n, m in model.named_modules() if isinstance(m, MTLoRALinear) and m.num_tasks > 0]
    if with_tasks:
        raise ValueError(
            f"merge_and_unload would drop the task-specific LoRAs of {len(with_tasks)} MTLoRA layers "
            f"(e.g. {with_tasks[0]!r}): they act on per-task streams, which a plain linear cannot hold. "
            "merge(model) merges the task-agnostic LoRA and keeps them"
        )


def _is_outermost(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    return not parent or not isinstance(model.get_submodule(parent), AdaptedMultiheadAttention)
