"""Write the procedural multi-task dataset to disk (nothing can be downloaded here).

Layout under ``root``: ``images/<scene_id>.png``, ``<split>.jsonl`` in the
``read_jsonl`` format (every image serves retrieval, caption and vqa samples),
``scenes/<split>.jsonl`` (the ground-truth scene of every image) and ``meta.json``.
Splits ``pretrain``/``train``/``val``/``test`` get their own seeds and id prefixes and
never share a scene description, so a base model pre-trained on ``pretrain`` has not
seen the adaptation or evaluation scenes. Same arguments → byte-identical files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .scene_language import make_captions, make_questions
from .scenes import BACKGROUNDS, COLORS, SHAPES, Scene, generate_scenes, render_scene

SPLITS = ("pretrain", "train", "val", "test")
# Generation order: evaluation splits first, so their content never depends on the
# sizes of the training splits.
GENERATION_ORDER = ("test", "val", "train", "pretrain")
EVAL_SPLITS = ("val", "test")
FORMAT_VERSION = 1

__all__ = ["SPLITS", "generate_scenes", "render_scene", "split_seed", "scene_records", "write_synthetic_dataset",
           "retrieval_colour_names"]


def split_seed(seed: int, split: str) -> int:
    """Seed of one split, independent of the other splits' seeds."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def retrieval_colour_names(interference: float) -> dict[str, str]:
    """The colour words retrieval captions use at an ``interference`` level in [0, 1]: the first
    ``round(interference · 8)`` colours pass their names on cyclically (red is called by the next
    one's name, ...), the rest keep theirs. VQA questions and captions keep the true names, so
    at a high level the shared text tower must read the same word one way for retrieval and
    another for VQA: the tasks conflict, and one shared adapter cannot serve both."""
    if not 0.0 <= interference <= 1.0:
        raise ValueError(f"interference must be in [0, 1], got {interference}")
    names = list(COLORS)
    k = int(round(interference * len(names)))
    swapped = names[:k]
    mapping = {c: c for c in names}
    if k >= 2:
        mapping.update({c: swapped[(i + 1) % k] for i, c in enumerate(swapped)})
    return mapping


def _rename_colours(text: str, names: dict[str, str]) -> str:
    changed = {c: n for c, n in names.items() if c != n}
    if not changed:
        return text
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, changed)) + r")\b")
    return pattern.sub(lambda m: changed[m.group(1)], text)


def scene_records(scene: Scene, image: str, split: str, interference: float = 0.0) -> list[dict[str, Any]]:
    """JSONL records of one scene: retrieval (one per caption), caption (one per caption
    in training splits, one per image with every caption as reference in val/test) and
    vqa (one per question, with 10 answers plus the truth and question type). At
    ``interference`` > 0 the retrieval captions name colours by :func:`retrieval_colour_names`."""
    captions = make_captions(scene, np.random.default_rng([scene.seed, 2]))
    questions = make_questions(scene, np.random.default_rng([scene.seed, 3]))
    sid = scene.scene_id
    base = {"image": image, "image_id": sid}
    records: list[dict[str, Any]] = []
    names = retrieval_colour_names(interference)
    retrieval_captions = [_rename_colours(c, names) for c in captions]
    for k, cap in enumerate(retrieval_captions):
        records.append({"id": f"{sid}_r{k}", "task": "retrieval", **base, "text": cap,
                        "references": retrieval_captions})
    caption_texts = captions[:1] if split in EVAL_SPLITS else captions
    for k, cap in enumerate(caption_texts):
        records.append({"id": f"{sid}_c{k}", "task": "caption", **base, "text": cap, "references": captions})
    for k, qa in enumerate(questions):
        records.append(
            {
                "id": f"{sid}_q{k}",
                "task": "vqa",
                **base,
                "text": qa.question,
                "answers": qa.answers,
                "answer": qa.answer,
                "question_type": qa.qtype,
                "answer_type": qa.answer_type,
            }
        )
    return records


def write_synthetic_dataset(
    root: str | Path,
    n_train: int,
    n_val: int,
    n_test: int = 0,
    seed: int = 0,
    image_size: int = 64,
    n_pretrain: int = 0,
    interference: float = 0.0,
) -> dict[str, Any]:
    """Render and write the splits with a non-zero size; returns the ``meta.json`` content.
    ``interference`` (adaptation splits only, not ``pretrain``) makes retrieval captions
    name colours differently from VQA questions: see :func:`retrieval_colour_names`."""
    names = retrieval_colour_names(interference)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "scenes").mkdir(exist_ok=True)
    sizes = {"pretrain": n_pretrain, "train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if n < 0:
            raise ValueError(f"n_{split} must be >= 0, got {n}")
    meta: dict[str, Any] = {
        "generator": "vlmtl.data.synthetic",
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "backgrounds": list(BACKGROUNDS),
        "caption_samples": {s: ("per_image" if s in EVAL_SPLITS else "per_caption") for s in SPLITS},
        "interference": float(interference),
        "retrieval_colour_names": {c: n for c, n in names.items() if c != n},
        "splits": {},
    }
    used: set[tuple] = set()
    for split in GENERATION_ORDER:
        n = sizes[split]
        if n == 0:
            continue
        s_seed = split_seed(seed, split)
        scenes = generate_scenes(n, s_seed, image_size=image_size, exclude=used, id_prefix=split)
        used.update(sc.signature() for sc in scenes)
        counts = {"retrieval": 0, "caption": 0, "vqa": 0}
        with (root / f"{split}.jsonl").open("w", encoding="utf-8") as out, (root / "scenes" / f"{split}.jsonl").open(
            "w", encoding="utf-8"
        ) as scene_out:
            for scene in scenes:
                image = f"images/{scene.scene_id}.png"
                render_scene(scene).save(root / image, format="PNG")
                scene_out.write(json.dumps(scene.to_dict()) + "\n")
                level = 0.0 if split == "pretrain" else interference
                for rec in scene_records(scene, image, split, interference=level):
                    counts[rec["task"]] += 1
                    out.write(json.dumps(rec) + "\n")
        meta["splits"][split] = {"n_images": n, "seed": s_seed, "n_samples": counts}
    meta["splits"] = {s: meta["splits"][s] for s in SPLITS if s in meta["splits"]}
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta
