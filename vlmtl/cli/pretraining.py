"""What the two pre-training scripts (``scripts/pretrain_base.py``, ``scripts/pretrain_llava.py``)
share: their common flags, the engine config they train under, the synthetic ``pretrain``
split, and the card that records how the shipped model was made."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from vlmtl.adapters.io import atomic_write
from vlmtl.data import Sample, read_jsonl, write_synthetic_dataset
from vlmtl.train.config import TrainConfig

NOT_IN_CARD = ("output", "data", "workers", "run_dir")  # where things go, not what the model is


def pretrain_parser(description: str, output: Path, run_dir: str, steps: int, batch_size: int,
                    ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(output))
    parser.add_argument("--run-dir", default=run_dir, dest="run_dir",
                        help="the engine's run folder (checkpoints, log, curves); a rerun resumes from it")
    parser.add_argument("--data", default=None,
                        help="where to write the synthetic pretrain split (default: a temp dir)")
    parser.add_argument("--images", type=int, default=4000, help="pretrain scenes")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def pretrain_config(args: argparse.Namespace, task: str) -> TrainConfig:
    """Every parameter trains (method ``full``): AdamW wd 0.05, 5 % warm-up then cosine, clip 1."""
    return TrainConfig(tasks=[task], method="full", max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=0.05, warmup_ratio=0.05, grad_clip=1.0, workers=args.workers, seed=args.seed,
                       output=args.run_dir, save_every=max(1, args.steps // 5))


def pretrain_samples(args: argparse.Namespace, image_size: int) -> list[Sample]:
    """The synthetic ``pretrain`` split (scenes apart from train/val/test), written for this run."""
    root = Path(args.data or tempfile.mkdtemp(prefix="vlmtl-pretrain-"))
    write_synthetic_dataset(root, n_train=0, n_val=0, n_pretrain=args.images, seed=args.seed, image_size=image_size)
    return read_jsonl(root / "pretrain.jsonl", root)


def write_card(folder: Path, script: str, args: argparse.Namespace, **facts) -> dict:
    """``pretrain_card.json``: the command that made the model (its flags) and what it scored."""
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in NOT_IN_CARD)
    card = {"made_by": f"python scripts/{script} {flags}", **facts}
    atomic_write(folder / "pretrain_card.json", lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    return card
