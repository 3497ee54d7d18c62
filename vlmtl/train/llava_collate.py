"""LLaVA batches from task-tagged dataset items: prompts, targets and masked labels.

Every sample is ``[bos] <image>×N prompt target [eos]`` with its task's prompt template;
the target is the majority answer (vqa) or the caption (caption)."""

from __future__ import annotations

from typing import Any

import torch

from vlmtl.data import collate_common
from vlmtl.data.answers import majority_answer
from vlmtl.models.llava_text import LlavaTokenizer, build_inputs, format_prompt


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
