"""Merge one task's update into the frozen weights, undo it, or export a plain model."""

from __future__ import annotations

from torch import nn

from .inject import CONFIG_ATTR, get_config
from .layers import AdaptedMultiheadAttention, AdapterLayer, MTLLoRALinear


def _task_index(model: nn.Module, task: str | int | None) -> int | None:
    layers = [m for m in model.modules() if isinstance(m, AdapterLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no adapter layers to merge")
    multi_task = any(isinstance(m, MTLLoRALinear) for m in layers)
    if not multi_task:
        return None
    if task is None:
        raise ValueError("this model has per-task adapters: name the task to merge")
    return get_config(model).task_index(task) if hasattr(model, CONFIG_ATTR) else int(task)


def merge(model: nn.Module, task: str | int | None = None) -> nn.Module:
    """W ← W + ΔW_task in every adapter layer, so a single-task model runs at the base
    model's cost. A mixed batch (or another task) is refused until :func:`unmerge`."""
    index = _task_index(model, task)
    for module in model.modules():
        if isinstance(module, AdapterLayer):
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
    a plain model with the original module types and no adapter code."""
    unmerge(model)
    merge(model, task)
    for name, module in list(model.named_modules()):
        if isinstance(module, (AdapterLayer, AdaptedMultiheadAttention)) and _is_outermost(model, name):
            model.set_submodule(name, module.base_layer)
    if hasattr(model, CONFIG_ATTR):
        delattr(model, CONFIG_ATTR)
    return model


def _is_outermost(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    return not parent or not isinstance(model.get_submodule(parent), AdaptedMultiheadAttention)

