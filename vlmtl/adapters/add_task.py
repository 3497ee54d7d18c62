"""A new task for a trained MTL-LoRA model, without touching the tasks it already serves.

MTL-LoRA's per-task parts are small: an r×r (or r) transform Λ_t and n mixing logits w_t per
adapted layer. A new task gets its own, appended after the existing tasks (whose indices,
and so whose outputs, stay as they were), and trains them on top of the frozen shared
down-projection A and up-projections B_i; the MTL-LoRA paper names this extension as open.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .inject import get_config
from .layers import MTLLoRALinear


def _zero_rows_below(count: int):
    """A gradient hook that keeps the first ``count`` rows (the existing tasks) at zero."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:count] = 0
        return grad

    return hook


def add_task(model: nn.Module, name: str, train_shared: bool = False) -> list[nn.Parameter]:
    """Give every MTL-LoRA layer of ``model`` the task ``name``: Λ as at injection (identity,
    or ones for ``lambda_type="diagonal"``) and mixing logits drawn as at injection, appended
    as the last task. The existing tasks' rows of Λ and w get no gradient, and A and the B_i
    are frozen unless ``train_shared`` (then the existing tasks' outputs change too).

    Returns the parameters that now hold the new task (every layer's Λ and w). Train them
    without weight decay: AdamW decays every element of a parameter, including the existing
    tasks' rows whose gradient is zero, and they would no longer be bit-identical."""
    config = get_config(model)
    if config.method != "mtl_lora":
        raise ValueError(f"add_task extends MTL-LoRA models; this one holds {config.method!r} adapters "
                         "(with LoRA a new task is a new adapter: inject one into a fresh copy)")
    if name in config.tasks:
        raise ValueError(f"task {name!r} is already one of this model's tasks {config.tasks}")
    layers = [m for m in model.modules() if isinstance(m, MTLLoRALinear)]
    if not layers:
        raise ValueError("the model's config says mtl_lora but it holds no MTLLoRALinear layer")
    if any(layer.merged for layer in layers):
        raise ValueError("unmerge the model before adding a task")
    tasks = (*config.tasks, name)
    extended: list[nn.Parameter] = []
    for layer in layers:
        existing = layer.num_tasks
        lam, w = layer.Lambda.detach(), layer.w.detach()
        new_lambda = torch.eye(layer.r, dtype=lam.dtype, device=lam.device)[None] \
            if layer.lambda_type == "full" else torch.ones(1, layer.r, dtype=lam.dtype, device=lam.device)
        bound = 1.0 / math.sqrt(layer.n_up)
        new_w = torch.empty(1, layer.n_up, dtype=w.dtype, device=w.device).uniform_(-bound, bound)
        layer.Lambda = nn.Parameter(torch.cat([lam, new_lambda]))
        layer.w = nn.Parameter(torch.cat([w, new_w]))
        for parameter in (layer.Lambda, layer.w):
            parameter.register_hook(_zero_rows_below(existing))
            extended.append(parameter)
        layer.A.requires_grad_(train_shared)
        layer.B.requires_grad_(train_shared)
        layer.num_tasks = existing + 1
        layer.task_names = tasks
    config.tasks.append(name)
    return extended
