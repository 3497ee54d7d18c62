"""Multi-task dense prediction on PASCAL-Context (semseg, human parts, saliency, normals) with
MTLoRA or a baseline on a timm Swin.

    python scripts/train_dense.py --config configs/pascal_mtlora_r16.yaml --data /data/PASCAL_MT
    python scripts/train_dense.py --max-steps 50
    python scripts/train_dense.py --config configs/pascal_mtlora_r16.yaml --describe

Every option of the config is a flag, named as for train_vl.py. Default config:
configs/dense_synthetic_small.yaml. ``--data`` is a PASCAL_MT folder or ``synthetic``
(generated once into the cache dir). ``--describe`` builds the model only (no data) and
prints ``trainable parameters: N`` and ``total parameters: N``. A run writes to --output:
metrics.json (per-task metrics, Δm, parameters, throughputs), config.yaml, train_log.jsonl,
training_curves.png, adapters/ (or trainable.safetensors), heads.safetensors (the
decoders) and checkpoints/ (resumed automatically).
"""

from __future__ import annotations

import argparse
import json
import sys

from vlmtl.adapters import count_parameters
from vlmtl.cli.flags import config_parser, parse_config
from vlmtl.cli.logs import configure_logging, is_rank_zero
from vlmtl.registry import DENSE_METHODS, DENSE_TASKS
from vlmtl.train.dense_config import DenseTrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = config_parser(DenseTrainConfig, DENSE_METHODS, tuple(DENSE_TASKS), description=__doc__)
    parser.add_argument("--describe", action="store_true", help="print the parameter counts and exit")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[DenseTrainConfig, bool]:
    """The resolved config, and whether --describe was given."""
    cfg, extra = parse_config(DenseTrainConfig, build_parser(), argv, extra=("describe",))
    return cfg, extra["describe"]


def describe(cfg: DenseTrainConfig) -> None:
    """Build the model (no data, no forward) and print its parameter counts."""
    from vlmtl.train.dense_trainer import build_dense_model

    trainable, total = count_parameters(build_dense_model(cfg))
    print(f"trainable parameters: {trainable}")
    print(f"total parameters: {total}")


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    cfg, only_describe = parse_args(argv)
    if only_describe:
        describe(cfg)
        return
    from vlmtl.train.dense_trainer import train_dense

    try:
        document = train_dense(cfg)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    if is_rank_zero():
        print(json.dumps({"output": cfg.output, "metrics": document["metrics"], "delta_m": document["delta_m"],
                          "trainable_parameters": document["trainable_parameters"],
                          "train_images_per_s": document["train_images_per_s"],
                          "inference_images_per_s": document["inference_images_per_s"],
                          "total_minutes": document["total_minutes"]}, indent=2))


if __name__ == "__main__":
    main()
