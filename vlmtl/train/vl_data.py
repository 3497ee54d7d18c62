"""Turn a training config into train/val samples: the synthetic default or real files."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from vlmtl.data import (
    Sample,
    open_hf_source,
    read_jsonl,
    read_karpathy,
    read_vqav2,
    samples_from_hf,
    write_synthetic_dataset,
)
from vlmtl.data.cache import cached_dataset
from vlmtl.paths import cache_dir

from .config import VLTrainConfig

logger = logging.getLogger(__name__)


def ensure_synthetic(cfg: VLTrainConfig) -> Path:
    """The synthetic set of ``cfg`` (deterministic in its seed and sizes), written once."""
    spec = {"kind": "vl", "seed": cfg.synthetic_seed, "train": cfg.synthetic_train_images,
            "val": cfg.synthetic_val_images}
    name = f"synthetic-s{cfg.synthetic_seed}-{cfg.synthetic_train_images}-{cfg.synthetic_val_images}"
    if cfg.synthetic_interference:  # level 0 keeps the folder (and spec) of sets written before the knob
        spec["interference"] = float(cfg.synthetic_interference)
        name += f"-i{cfg.synthetic_interference:g}"
    return cached_dataset(name, spec, lambda folder: write_synthetic_dataset(
        folder, n_train=spec["train"], n_val=spec["val"], seed=spec["seed"],
        interference=spec.get("interference", 0.0)), cfg.data_root,
        holds=lambda folder: _generator_meta_matches(folder, spec))


def _generator_meta_matches(root: Path, spec: dict) -> bool:
    """A folder ``write_synthetic_dataset`` made for the same seed and sizes (its
    ``meta.json``, written last): e.g. a set written by hand with the library."""
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    sizes = {s: meta.get("splits", {}).get(s, {}).get("n_images") for s in ("train", "val")}
    return (meta.get("seed") == spec["seed"] and sizes == {"train": spec["train"], "val": spec["val"]}
            and meta.get("interference", 0.0) == spec.get("interference", 0.0))


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
    elif cfg.data == "hf":
        train, val = _read_hf(cfg)
        source = f"the Hugging Face dataset {cfg.hf_dataset}"
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
        v = cfg.vqav2  # its keys were checked by the config
        train += read_vqav2(v["train_questions"], v["train_annotations"], v["train_images"])
        val += read_vqav2(v["val_questions"], v["val_annotations"], v["val_images"])
    for task in ("retrieval", "caption"):
        if task in cfg.tasks:
            k = cfg.karpathy
            train += read_karpathy(k["json"], k["image_dir"], "train", task)
            val += read_karpathy(k["json"], k["image_dir"], "val", task)
    return train, val


def _read_hf(cfg: VLTrainConfig) -> tuple[list[Sample], list[Sample]]:
    """The train and validation splits of ``cfg.hf_dataset`` as samples."""
    splits = open_hf_source(cfg.hf_dataset)
    missing = [s for s in (cfg.hf_train_split, cfg.hf_val_split) if s not in splits]
    if missing:
        raise ValueError(f"the Hugging Face dataset {cfg.hf_dataset} has no split(s) {missing}; it has "
                         f"{list(splits)} (set hf_train_split / hf_val_split)")
    cache = Path(cfg.data_root).expanduser() if cfg.data_root else cache_dir()
    return tuple(samples_from_hf(splits[split], image_dir=cfg.image_dir, cache_dir=cache, name=split)
                 for split in (cfg.hf_train_split, cfg.hf_val_split))
