"""Evaluation metrics: pure functions / accumulators of predictions and labels.

Independent of the rest of vlmtl (no model or data code), so they can be tested and reused alone.
"""

from .captioning import bleu4, caption_tokenizer, cider, tokenize_caption, tokenize_captions
from .dense import LOWER_IS_BETTER, PAPER_SINGLE_TASK, ConfusionMatrix, NormalsMeter, SaliencyMeter, delta_m
from .retrieval import recall_at_k
from .vqa import accuracy_by_answer_type, answer_soft_score, normalize_answer, vqa_accuracy, vqa_score

__all__ = [
    "normalize_answer",
    "vqa_accuracy",
    "accuracy_by_answer_type",
    "vqa_score",
    "answer_soft_score",
    "recall_at_k",
    "tokenize_caption",
    "tokenize_captions",
    "caption_tokenizer",
    "bleu4",
    "cider",
    "ConfusionMatrix",
    "SaliencyMeter",
    "NormalsMeter",
    "delta_m",
    "PAPER_SINGLE_TASK",
    "LOWER_IS_BETTER",
]
