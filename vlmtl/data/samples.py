"""One record shared by every reader and task, validated on creation.

Readers of very different public formats (VQAv2, Karpathy splits, JSONL) all produce
``Sample`` objects, so the dataset, samplers and collator see one schema and a bad
record fails where it is read, with its id in the message, not deep inside training.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from vlmtl.registry import VL_TASKS


def check_task(task: str, where: str = "") -> str:
    """Return ``task`` if it is known; otherwise a ValueError naming it and ``VL_TASKS``."""
    if task not in VL_TASKS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown task {task!r}; known tasks are {list(VL_TASKS)}")
    return task


@dataclass
class Sample:
    """An image path plus the text of one task.

    ``text`` is the caption (retrieval, caption) or the question (vqa); ``answers`` holds
    the human answers of a vqa question (10 in VQAv2); ``references`` holds every
    reference caption of the image (caption task; defaults to ``[text]``). ``sample_id``
    is unique within a task (VQAv2 ``question_id``, Karpathy ``sentid``, ...); left empty
    it is derived from task, image id and text.
    """

    task: str
    image: str
    image_id: str
    text: str
    answers: list[str] | None = None
    references: list[str] | None = None
    sample_id: str = ""
    answer_type: str | None = None  # vqa: VQAv2's "yes/no", "number" or "other" (scores are reported per type)

    def __post_init__(self) -> None:
        self.image_id = str(self.image_id)
        self.sample_id = str(self.sample_id)
        name = self.sample_id or f"image {self.image_id!r}"
        check_task(self.task, where=f"sample {name}")
        if not isinstance(self.image, str) or not self.image:
            raise ValueError(f"sample {name}: 'image' must be a non-empty path string, got {self.image!r}")
        if not isinstance(self.text, str):
            kind = type(self.text).__name__
            raise ValueError(f"sample {name} ({self.task}): 'text' must be a non-empty string, got {kind}")
        if not self.text.strip():
            raise ValueError(f"sample {name} ({self.task}): empty text")
        if self.answers is not None:
            self.answers = _string_list(self.answers, "answers", name)
        if self.references is not None:
            self.references = _string_list(self.references, "references", name)
        if self.answer_type is not None and not isinstance(self.answer_type, str):
            kind = type(self.answer_type).__name__
            raise ValueError(f"sample {name}: 'answer_type' must be a string, got {kind}")
        if self.task == "vqa" and not self.answers:
            raise ValueError(f"sample {name}: a vqa sample needs a non-empty 'answers' list")
        if self.task == "caption" and not self.references:
            self.references = [self.text]
        if not self.sample_id:
            digest = hashlib.sha1(self.text.encode("utf-8")).hexdigest()[:10]
            self.sample_id = f"{self.task}-{self.image_id}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


def _string_list(values: Any, field_name: str, name: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"sample {name}: {field_name!r} must be a list of strings, got {type(values).__name__}")
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"sample {name}: every entry of {field_name!r} must be a string")
    return list(values)
