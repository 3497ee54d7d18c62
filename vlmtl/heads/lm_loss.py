"""The per-task loss of a language model that answers every task by generation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlmtl.registry import LM_IGNORE_INDEX


def per_task_lm_losses(logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor,
                       tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Mean next-token cross-entropy over each task's labelled tokens (tasks absent from
    the batch, or with no labelled token, are left out). Per task rather than per token, so
    tasks are weighted like the CLIP heads' losses instead of by how many tokens they have."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    token_loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                 ignore_index=LM_IGNORE_INDEX, reduction="none").view(shift_labels.shape)
    counted = shift_labels != LM_IGNORE_INDEX
    losses: dict[str, torch.Tensor] = {}
    task_ids = task_ids.to(logits.device)
    for index, task in enumerate(tasks):
        rows = task_ids == index
        tokens = counted & rows[:, None]
        if bool(tokens.any()):
            losses[task] = token_loss[tokens].mean()
    return losses


def per_task_token_counts(labels: torch.Tensor, task_ids: torch.Tensor, tasks: Sequence[str]) -> dict[str, int]:
    """How many labelled tokens each task's loss of :func:`per_task_lm_losses` averages over."""
    counted = labels[:, 1:] != LM_IGNORE_INDEX
    task_ids = task_ids.to(labels.device)
    return {task: int((counted & (task_ids == index)[:, None]).sum()) for index, task in enumerate(tasks)}
