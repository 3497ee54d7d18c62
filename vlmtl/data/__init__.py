"""Data for the vision-language tasks (vqa, retrieval, caption): readers of the public
formats, a mixed-task dataset, task-mixing samplers, collation and a procedural
synthetic dataset. Knows no model: tokenizer and image transform are passed in."""

from __future__ import annotations

from .answers import AnswerVocab, default_normalize
from .hf_datasets import open_hf_source, samples_from_hf, to_hf_dataset
from .images import ImageLoadError, ImageTransform, load_image
from .mixed import MultiTaskCollator, MultiTaskDataset, collate_common
from .pascal import AnnotationLoadError, AugParams, PascalContextMT
from .readers import read_jsonl, read_karpathy, read_vqav2
from .samplers import STRATEGIES, MultiTaskBatchSampler, task_probabilities
from .samples import Sample
from .scenes import Scene, SceneObject, generate_scenes, render_scene
from .synthetic import SPLITS, write_synthetic_dataset
from .synthetic_pascal import write_synthetic_pascal

__all__ = [
    "Sample",
    "read_vqav2",
    "read_karpathy",
    "read_jsonl",
    "samples_from_hf",
    "to_hf_dataset",
    "open_hf_source",
    "ImageLoadError",
    "load_image",
    "ImageTransform",
    "AnswerVocab",
    "default_normalize",
    "MultiTaskDataset",
    "MultiTaskCollator",
    "collate_common",
    "MultiTaskBatchSampler",
    "STRATEGIES",
    "task_probabilities",
    "Scene",
    "SceneObject",
    "generate_scenes",
    "render_scene",
    "SPLITS",
    "write_synthetic_dataset",
    "AnnotationLoadError",
    "AugParams",
    "PascalContextMT",
    "write_synthetic_pascal",
]
