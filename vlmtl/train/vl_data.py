"""Turn a training config into train/val samples: the synthetic default or real files."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from vlmtl.data import Sample, read_jsonl, read_karpathy, read_vqav2, write_synthetic_dataset

from .config import VLTrainConfig

logger = logging.getLogger(__name__)


def synthetic_root(cfg: VLTrainConfig) -> Path:
    if cfg.data_root:
        return Path(cfg.data_root)
    name = f"synthetic-s{cfg.synthetic_seed}-{cfg.synthetic_train_images}-{cfg.synthetic_val_images}"
    return Path.home() / ".cache" / "vlmtl" / name


def ensure_synthetic(cfg: VLTrainConfig) -> Path:
    """Write the synthetic set once (deterministic in its seed and sizes), then reuse it."""
    root = synthetic_root(cfg)
    meta_file = root / "meta.json"
    want = {"train": cfg.synthetic_train_images, "val": cfg.synthetic_val_images}
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        have = {s: meta.get("splits", {}).get(s, {}).get("n_images") for s in want}
        if have == want and meta.get("seed") == cfg.synthetic_seed:
            return root
    logger.info("writing the synthetic data set to %s", root)
    write_synthetic_dataset(root, n_train=want["train"], n_val=want["val"], seed=cfg.synthetic_seed)
    return root


def load_samples(cfg: VLTrainConfig) -> tuple[list[Sample], list[Sample]]:
    """(train, val) samples of the configured tasks; an empty task is an error naming it."""
    if cfg.data == "synthetic":
        root = ensure_synthetic(cfg)
        train, val = read_jsonl(root / "train.jsonl", root), read_jsonl(root / "val.jsonl", root)
        source = str(root)
    elif cfg.data == "jsonl":
        if not cfg.train_file or not cfg.val_file:
            raise ValueError("data 'jsonl' needs train_file and val_file (and image_dir for relative paths)")
        image_dir = cfg.image_dir or str(Path(cfg.train_file).parent)
        train, val = read_jsonl(cfg.train_file, image_dir), read_jsonl(cfg.val_file, image_dir)
        source = f"{cfg.train_file} / {cfg.val_file}"
    else:
        train, val = _read_public(cfg)
        source = "VQAv2 + Karpathy files"
    left_out = Counter(s.task for s in (*train, *val) if s.task not in cfg.tasks)
    if left_out:
        logger.info("left out samples of tasks not in this run's tasks %s: %s", cfg.tasks, dict(left_out))
    train = [s for s in train if s.task in cfg.tasks]
    val = [s for s in val if s.task in cfg.tasks]
    for task in cfg.tasks:
        if not any(s.task == task for s in train):
            raise ValueError(f"no training samples for task {task!r} in {source}")
        if not any(s.task == task for s in val):
            raise ValueError(f"no validation samples for task {task!r} in {source}")
    return train, val


def _read_public(cfg: VLTrainConfig) -> tuple[list[Sample], list[Sample]]:
    train: list[Sample] = []
    val: list[Sample] = []
    if "vqa" in cfg.tasks:
        v = cfg.vqav2
        needed = ["train_questions", "train_annotations", "val_questions", "val_annotations", "train_images",
                  "val_images"]
        missing = [k for k in needed if not v.get(k)]
        if missing:
            raise ValueError(f"vqav2 config lacks {missing}")
        train += read_vqav2(v["train_questions"], v["train_annotations"], v["train_images"])
        val += read_vqav2(v["val_questions"], v["val_annotations"], v["val_images"])
    for task in ("retrieval", "caption"):
        if task in cfg.tasks:
            k = cfg.karpathy
            if not k.get("json") or not k.get("image_dir"):
                raise ValueError("karpathy config needs json and image_dir")
            train += read_karpathy(k["json"], k["image_dir"], "train", task)
            val += read_karpathy(k["json"], k["image_dir"], "val", task)
    return train, val
