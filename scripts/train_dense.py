"""Multi-task dense prediction on PASCAL-Context (semseg, human parts, saliency, normals) with
MTLoRA or a baseline on a timm Swin.

    python scripts/train_dense.py --config configs/pascal_mtlora_r16.yaml --data /data/PASCAL_MT
    python scripts/train_dense.py --config configs/dense_synthetic_small.yaml --max-steps 50
    python scripts/train_dense.py --config configs/pascal_mtlora_r16.yaml --describe

Flags override the YAML file. ``--data`` is a PASCAL_MT folder or ``synthetic`` (generated
once into a cache dir). ``--describe`` builds the model only (no data) and prints
``trainable parameters: N`` and ``total parameters: N``. A run writes to --output:
metrics.json (per-task metrics, Δm, parameters, throughputs), config.yaml, train_log.jsonl,
training_curves.png, weights.safetensors and checkpoints/ (resumed automatically).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlmtl.adapters import count_parameters  # noqa: E402
from vlmtl.models.swin_mtlora import METHODS  # noqa: E402
from vlmtl.train.dense_config import DenseTrainConfig  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dense_synthetic_small.yaml"


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML file of options (flags override it)")
    parser.add_argument("--describe", action="store_true", help="print the parameter counts and exit")
    parser.add_argument("--data", help="a PASCAL_MT folder, or 'synthetic'")
    parser.add_argument("--data-root", dest="data_root", help="where the synthetic set is written")
    parser.add_argument("--output")
    parser.add_argument("--tasks", help="comma-separated: semseg,human_parts,saliency,normals")
    parser.add_argument("--method", choices=list(METHODS))
    parser.add_argument("--r", type=int)
    parser.add_argument("--r-task", type=int, dest="r_task")
    parser.add_argument("--mtlora-plus", type=_bool, dest="mtlora_plus", metavar="{true,false}")
    parser.add_argument("--backbone", help="timm Swin name")
    parser.add_argument("--pretrained", help="local Swin checkpoint (timm or Microsoft layout)")
    parser.add_argument("--img-size", type=int, dest="img_size")
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int, dest="max_steps")
    parser.add_argument("--lr", type=float, help="default 5e-4 * batch / 512")
    parser.add_argument("--warmup-ratio", type=float, dest="warmup_ratio")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], dest="mixed_precision")
    parser.add_argument("--grad-checkpointing", type=_bool, dest="grad_checkpointing", metavar="{true,false}")
    parser.add_argument("--save-every", type=int, dest="save_every")
    parser.add_argument("--resume", help="auto | never | a checkpoint path")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the cores the loader workers leave)")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[DenseTrainConfig, argparse.Namespace]:
    """The resolved config, and the options that are not part of it (--describe, --threads)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    extra = argparse.Namespace(**{k: args.pop(k) for k in ("config", "describe", "threads")})
    try:
        return DenseTrainConfig.from_sources(extra.config, **args), extra
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))


def describe(cfg: DenseTrainConfig) -> None:
    """Build the model (no data, no forward) and print its parameter counts."""
    from vlmtl.train.dense_trainer import build_dense_model

    trainable, total = count_parameters(build_dense_model(cfg))
    print(f"trainable parameters: {trainable}")
    print(f"total parameters: {total}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    cfg, extra = parse_args(argv)
    if extra.describe:
        describe(cfg)
        return
    import torch

    from vlmtl.train.dense_trainer import cpu_threads, train_dense

    torch.set_num_threads(cpu_threads(cfg.workers, extra.threads))
    try:
        document = train_dense(cfg)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    print(json.dumps({"output": cfg.output, "metrics": document["metrics"], "delta_m": document["delta_m"],
                      "trainable_parameters": document["trainable_parameters"],
                      "train_images_per_s": document["train_images_per_s"],
                      "inference_images_per_s": document["inference_images_per_s"],
                      "total_minutes": document["total_minutes"]}, indent=2))


if __name__ == "__main__":
    main()
