"""LLaVA in the VL trainer: the batch collator (prompts, targets, masked labels) and the
per-task causal-LM losses of a mixed batch.

Every sample is ``[bos] <image>×N prompt target [eos]`` with its task's prompt template;
the target is the majority answer (vqa) or the caption (caption). The loss of a task is
the mean token cross-entropy over that task's target tokens, so tasks are weighted like
the CLIP heads' losses (``loss_weights``) instead of by how many tokens they happen to have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmtl.data import collate_common
from .config import GENERATIVE_TASKS
from vlmtl.data.answers import majority_answer
from vlmtl.models.llava import MultiTaskLlava
from vlmtl.models.llava_text import IGNORE_INDEX, LlavaTokenizer, build_inputs, format_prompt


def llava_target(item: dict[str, Any]) -> str:
    """What the model learns to generate for a dataset item."""
    if item["task"] == "vqa":
        return majority_answer(item["answers"])
    return item["text"]


class LlavaCollator:
    """Dataset items (``MultiTaskDataset``) → a LLaVA batch: ``pixel_values``, ``input_ids``,
    ``attention_mask``, ``labels`` (training) plus the bookkeeping keys every collator
    shares (``collate_common``: ``task_ids``, ``size``, ``bad_images``, ``image_ids``, ...).

    ``with_targets=False`` builds left-padded prompts for generation."""

    def __init__(self, tokenizer: LlavaTokenizer, num_image_tokens: int, prompts: dict[str, str],
                 with_targets: bool = True, max_length: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.prompts = dict(prompts)
        self.with_targets = with_targets
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch, items = collate_common(items)
        if not items:
            return batch
        prompts = [format_prompt(it["task"], it["text"] if it["task"] == "vqa" else "", self.prompts)
                   for it in items]
        targets = [llava_target(it) for it in items] if self.with_targets else None
        batch.update(build_inputs(prompts, targets, self.tokenizer, self.num_image_tokens,
                                  max_length=self.max_length))
        batch["pixel_values"] = torch.stack([it["image"] for it in items])
        return batch


def per_task_lm_losses(logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor,
                       tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Mean next-token cross-entropy over each task's labelled tokens (tasks absent from
    the batch, or with no labelled token, are left out)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    token_loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                 ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape)
    counted = shift_labels != IGNORE_INDEX
    losses: dict[str, torch.Tensor] = {}
    task_ids = task_ids.to(logits.device)
    for index, task in enumerate(tasks):
        rows = task_ids == index
        tokens = counted & rows[:, None]
        if bool(tokens.any()):
            losses[task] = token_loss[tokens].mean()
    return losses


class VLLlavaModel(nn.Module):
    """The trainer's view of a ``MultiTaskLlava``: ``forward(batch)`` gives per-task losses."""

    def __init__(self, llava: MultiTaskLlava) -> None:
        super().__init__()
        unknown = [t for t in llava.tasks if t not in GENERATIVE_TASKS]
        if unknown:
            raise ValueError(f"the LLaVA decoder trains tasks {list(GENERATIVE_TASKS)} by generation, not {unknown}")
        if llava.preprocess is None:
            raise ValueError("the MultiTaskLlava has no image preprocess (build it with create_multitask_llava)")
        self.llava = llava
        self.tasks = list(llava.tasks)
        self.heads = nn.ModuleDict()  # answers and captions come from the language model itself

    @property
    def adapted(self) -> nn.Module:
        """The module holding the adapters (and the projector, when it trains)."""
        return self.llava.model

    @property
    def preprocess(self):
        return self.llava.preprocess

    def collator(self, answers=None, with_targets: bool = True) -> LlavaCollator:
        """``answers`` is accepted for the trainer's one call shape; generation needs no vocabulary."""
        return LlavaCollator(self.llava.tokenizer, self.llava.num_image_tokens, self.llava.prompts, with_targets)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        output = self.llava(batch["pixel_values"], batch["input_ids"], attention_mask=batch["attention_mask"],
                            task_ids=batch["task_ids"])
        return per_task_lm_losses(output.logits, batch["labels"], batch["task_ids"], self.tasks)
