"""LLaVA in the VL path: the trainer's view of a ``MultiTaskLlava``, whose ``forward(batch)``
gives the per-task causal-LM losses of a mixed batch."""

from __future__ import annotations

import torch
from torch import nn

from vlmtl.heads.lm_loss import per_task_lm_losses, per_task_token_counts
from vlmtl.models.llava import MultiTaskLlava
from vlmtl.registry import GENERATIVE_TASKS

from .llava_collate import LlavaCollator


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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.llava.set_grad_checkpointing(enable)

    @property
    def preprocess(self):
        return self.llava.preprocess

    def collator(self, answers=None, with_targets: bool = True) -> LlavaCollator:
        """``answers`` is accepted for the trainer's one call shape; generation needs no vocabulary."""
        return LlavaCollator(self.llava.tokenizer, self.llava.num_image_tokens, self.llava.prompts, with_targets)

    def loss_counts(self, batch: dict) -> dict[str, float]:
        """Each task's labelled tokens in ``batch`` (what its loss averages over)."""
        return per_task_token_counts(batch["labels"], batch["task_ids"], self.tasks)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        output = self.llava(batch["pixel_values"], batch["input_ids"], attention_mask=batch["attention_mask"],
                            task_ids=batch["task_ids"])
        return per_task_lm_losses(output.logits, batch["labels"], batch["task_ids"], self.tasks)
