"""Multi-task vision-language training: MTL-LoRA (or LoRA, or heads only) in both CLIP
towers, or in the decoder of a LLaVA that answers and captions by generation.

    python scripts/train_vl.py --tasks vqa,retrieval
    python scripts/train_vl.py --tasks vqa,retrieval,caption --method lora --output runs/lora
    python scripts/train_vl.py --model llava --tasks vqa,caption --output runs/llava
    python scripts/train_vl.py --config configs/vl_default.yaml --max-steps 100

Every option of the config is a flag (--max-steps, --save-every, --resume, ...); lists and
mappings are written as YAML (--vision-targets '[q_proj, v_proj]', --loss-weights '{vqa: 2}').
Defaults: configs/vl_default.yaml (configs/vl_llava.yaml with --model llava): the embedded
base model and the procedurally generated data set (written once to the cache dir,
$VLMTL_CACHE or ~/.cache/vlmtl). Writes to --output: adapters/ (the core's format),
heads.safetensors and answer_vocab.json (CLIP), metrics.json, config.yaml (the resolved
config), train_log.jsonl, training_curves.png and checkpoints/ (resumed automatically).
"""

from __future__ import annotations

import argparse
import json

from vlmtl.cli.flags import config_parser, parse_config
from vlmtl.cli.logs import configure_logging, is_rank_zero
from vlmtl.registry import VL_METHODS, VL_TASKS
from vlmtl.train.config import VLTrainConfig


def build_parser() -> argparse.ArgumentParser:
    return config_parser(VLTrainConfig, VL_METHODS, VL_TASKS, description=__doc__)


def parse_args(argv: list[str] | None = None) -> VLTrainConfig:
    return parse_config(VLTrainConfig, build_parser(), argv)[0]


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    cfg = parse_args(argv)
    from vlmtl.train import train_vl

    document = train_vl(cfg)
    if is_rank_zero():
        print(json.dumps({"output": cfg.output, "metrics": document["metrics"],
                          "trainable_parameters": document["trainable_parameters"],
                          "total_minutes": document["total_minutes"]}, indent=2))


if __name__ == "__main__":
    main()
