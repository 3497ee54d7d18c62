"""Mixed-task dataset and collator: one batch may hold vqa, retrieval and caption samples.

The collator gives every sample the shared inputs (image, text tokens, task id) and
gives per-task targets only to that task's rows, with ``<task>_index`` saying which
batch positions they are, so a model runs one forward pass and each loss picks its rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from vlmtl.registry import VL_TASKS

from .answers import AnswerVocab
from .images import ImageLoadError, load_image
from .samples import Sample, check_task

logger = logging.getLogger(__name__)

Transform = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]

ON_BAD_IMAGE = ("raise", "skip")  # stop naming the file, or drop and count the sample


class MultiTaskDataset(Dataset):
    """Samples of several tasks; ``tasks`` fixes the task ids (default: the tasks present,
    in ``VL_TASKS`` order).

    ``on_bad_image="skip"`` turns an unreadable image into an item with ``image=None``
    and ``bad_image`` set (the collator drops and counts it) and increments
    ``self.bad_images`` — in the process that loaded it, so with DataLoader workers the
    per-batch ``bad_images`` of the collator is the count to trust. Every skip is logged.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform,
        tasks: Sequence[str] | None = None,
        on_bad_image: str = "raise",
    ):
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', not {on_bad_image!r}")
        self.samples = list(samples)
        if tasks is None:
            present = {s.task for s in self.samples}
            tasks = [t for t in VL_TASKS if t in present]
        self.tasks = [check_task(t, where="MultiTaskDataset tasks") for t in tasks]
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"duplicate task in tasks={self.tasks}")
        task_id = {t: i for i, t in enumerate(self.tasks)}
        for s in self.samples:
            if s.task not in task_id:
                raise ValueError(f"sample {s.sample_id} has task {s.task!r}, which is not in tasks={self.tasks}")
        self.task_of_each_index = [task_id[s.task] for s in self.samples]
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.bad_images = 0
        self.bad_image_paths: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def task_counts(self) -> dict[str, int]:
        counts = Counter(s.task for s in self.samples)
        return {t: counts.get(t, 0) for t in self.tasks}

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        item: dict[str, Any] = {
            "task": s.task,
            "task_id": self.task_of_each_index[index],
            "image": None,
            "text": s.text,
            "answers": s.answers,
            "references": s.references,
            "image_id": s.image_id,
            "sample_id": s.sample_id,
            "index": int(index),
        }
        try:
            item["image"] = self.transform(load_image(s.image))
        except ImageLoadError as e:
            if self.on_bad_image == "raise":
                raise
            self.bad_images += 1
            self.bad_image_paths.append(s.image)
            logger.warning("skipping sample %s (%s): %s", s.sample_id, s.task, e)
            item["bad_image"] = str(e)
        return item


def collate_common(items: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The model-independent part of every collator: drop (and count) items whose image
    failed, then ``size``, ``bad_images``, ``bad_sample_ids``, ``task_ids``, ``tasks``,
    ``texts``, ``sample_ids``, ``image_ids``, ``indices``, ``<task>_index``,
    ``vqa_answers`` and ``caption_references``. Returns the batch and the kept items."""
    bad = [it for it in items if it.get("image") is None]
    items = [it for it in items if it.get("image") is not None]
    batch: dict[str, Any] = {
        "size": len(items),
        "bad_images": len(bad),
        "bad_sample_ids": [it["sample_id"] for it in bad],
        "task_ids": torch.tensor([it["task_id"] for it in items], dtype=torch.long),
        "tasks": [it["task"] for it in items],
        "texts": [it["text"] for it in items],
        "sample_ids": [it["sample_id"] for it in items],
        "image_ids": [it["image_id"] for it in items],
        "indices": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }
    rows = {t: [b for b, it in enumerate(items) if it["task"] == t] for t in VL_TASKS}
    for t in VL_TASKS:
        batch[f"{t}_index"] = torch.tensor(rows[t], dtype=torch.long)
    batch["vqa_answers"] = [list(items[b]["answers"]) for b in rows["vqa"]]
    batch["caption_references"] = [list(items[b]["references"] or [items[b]["text"]]) for b in rows["caption"]]
    return batch, items


class MultiTaskCollator:
    """List of dataset items → one batch dict (see the module docstring).

    Keys: ``task_ids`` (B,), ``tasks``, ``images`` (B,3,H,W), ``texts``, ``text_tokens``
    (B,L) from ``tokenizer(texts)``, ``sample_ids``, ``image_ids``, ``indices`` (B,),
    ``image_groups`` (B,) (equal ints for equal image ids: the positives mask of a
    contrastive loss), ``vqa_index``, ``vqa_answers``, ``vqa_targets`` (n_vqa, V; only
    with an ``answer_vocab``), ``caption_index``, ``caption_references``,
    ``retrieval_index``, ``retrieval_image_ids``, ``size`` and ``bad_images`` (items
    dropped for unreadable images; ``bad_sample_ids`` names them). A batch whose every
    image failed has ``size == 0``: skip it.
    """

    def __init__(self, tokenizer: Tokenizer, answer_vocab: AnswerVocab | None = None):
        self.tokenizer = tokenizer
        self.answer_vocab = answer_vocab

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch, items = collate_common(items)
        if items:
            batch["images"] = torch.stack([it["image"] for it in items])
            batch["text_tokens"] = self._tokenize(batch["texts"])
        else:
            batch["images"] = torch.empty(0, 3, 0, 0)
            batch["text_tokens"] = torch.empty(0, 0, dtype=torch.long)
        group_of: dict[str, int] = {}
        batch["image_groups"] = torch.tensor(
            [group_of.setdefault(i, len(group_of)) for i in batch["image_ids"]], dtype=torch.long
        )
        if self.answer_vocab is not None:
            targets = [self.answer_vocab.encode_soft(a) for a in batch["vqa_answers"]]
            batch["vqa_targets"] = (
                torch.stack(targets) if targets else torch.zeros(0, len(self.answer_vocab), dtype=torch.float32)
            )
        batch["retrieval_image_ids"] = [batch["image_ids"][b] for b in batch["retrieval_index"].tolist()]
        return batch

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts)
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] != len(texts):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokenizer must return a (batch, length) tensor for {len(texts)} texts, got {shape}")
        return tokens.long()
