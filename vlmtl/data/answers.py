"""VQA answer vocabulary and soft targets (VQAv2 classification convention).

VQA is trained as multi-label classification over the most frequent training answers;
each candidate's target is ``min(1, #humans who gave it / 3)``. The official accuracy
averages ``min(1, matches / 3)`` over the 10 leave-one-out subsets of the 10 answers,
which these targets approximate (1 match: 0.33 vs 0.3; >= 4 matches: 1 in both).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .samples import Sample

Normalize = Callable[[str], str]


def default_normalize(answer: str) -> str:
    """``answer.strip().lower()``; pass the official VQA normaliser for real data."""
    return answer.strip().lower()


def majority_answer(answers: list[str]) -> str:
    """Most frequent answer, ties broken by first occurrence (like ``multiple_choice_answer``)."""
    return Counter(answers).most_common(1)[0][0]


class AnswerVocab:
    """Ordered answer list ↔ class index, plus soft-score encoding.

    Answers are stored normalised; ``normalize`` must be a picklable (module-level)
    function when the vocabulary goes into DataLoader workers.
    """

    def __init__(self, answers: Iterable[str], normalize: Normalize = default_normalize):
        self.answers = list(answers)
        self.normalize = normalize
        self.index = {a: i for i, a in enumerate(self.answers)}
        if len(self.index) != len(self.answers):
            dupes = sorted(a for a, c in Counter(self.answers).items() if c > 1)
            raise ValueError(f"duplicate answers in vocabulary: {dupes[:10]}")

    @classmethod
    def build(
        cls,
        samples: Iterable[Sample],
        top_k: int = 3129,
        normalize: Normalize = default_normalize,
        count: str = "majority",
        min_count: int = 1,
    ) -> AnswerVocab:
        """The ``top_k`` most frequent answers of the vqa ``samples``.

        ``count="majority"`` (default) counts each question once, by its majority
        normalised answer, as the common 3129-answer VQAv2 vocabulary does (answers whose
        ``multiple_choice_answer`` count passes a threshold); ``count="all"`` counts all
        human answers. Ties in frequency are ordered alphabetically, so the result is
        deterministic; answers seen fewer than ``min_count`` times are dropped.
        """
        if count not in ("majority", "all"):
            raise ValueError(f"count must be 'majority' or 'all', not {count!r}")
        counts: Counter[str] = Counter()
        for s in samples:
            if s.task != "vqa" or not s.answers:
                continue
            normed = [normalize(a) for a in s.answers]
            counts.update([majority_answer(normed)] if count == "majority" else normed)
        ranked = sorted(((c, a) for a, c in counts.items() if c >= min_count and a), key=lambda ca: (-ca[0], ca[1]))
        if not ranked:
            raise ValueError("no vqa answers found to build an answer vocabulary")
        return cls([a for _, a in ranked[:top_k]], normalize=normalize)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return self.normalize(answer) in self.index

    def encode(self, answer: str) -> int | None:
        """Class index of ``answer`` (normalised), or None if out of vocabulary."""
        return self.index.get(self.normalize(answer))

    def decode(self, index: int) -> str:
        return self.answers[int(index)]

    def encode_soft(self, answers: list[str]) -> torch.Tensor:
        """FloatTensor (len(vocab),): ``min(1, count / 3)`` for each in-vocabulary answer."""
        target = torch.zeros(len(self.answers), dtype=torch.float32)
        for answer, c in Counter(self.normalize(a) for a in answers).items():
            i = self.index.get(answer)
            if i is not None:
                target[i] = min(1.0, c / 3.0)
        return target

    def to_json(self) -> str:
        return json.dumps({"answers": self.answers}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, normalize: Normalize = default_normalize) -> AnswerVocab:
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("answers"), list):
            raise ValueError("answer vocabulary JSON must be an object with an 'answers' list")
        return cls(doc["answers"], normalize=normalize)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, normalize: Normalize = default_normalize) -> AnswerVocab:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"answer vocabulary not found: {path}")
        try:
            return cls.from_json(path.read_text(encoding="utf-8"), normalize=normalize)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
