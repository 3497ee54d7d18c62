"""Multi-task vision-language training: MTL-LoRA (or LoRA, or none) in both CLIP towers,
or in the decoder of a LLaVA that answers and captions by generation.

    python scripts/train_vl.py --tasks vqa,retrieval
    python scripts/train_vl.py --tasks vqa,retrieval,caption --method lora --output runs/lora
    python scripts/train_vl.py --model llava --tasks vqa,caption --output runs/llava
    python scripts/train_vl.py --config configs/vl_default.yaml --max-steps 100

Defaults: the embedded base model (assets/vlmtl-tiny-clip; with --model llava
assets/vlmtl-tiny-llava and configs/vl_llava.yaml) and the procedurally generated data set
(written once to ~/.cache/vlmtl). Writes to --output: adapters/ (the core's format),
heads.safetensors and answer_vocab.json (CLIP), metrics.json, config.yaml (the resolved
config), train_log.jsonl and training_curves.png. Prints the per-task validation metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlmtl.train import VLTrainConfig, train_vl  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIGS / "vl_default.yaml"
DEFAULT_LLAVA_CONFIG = CONFIGS / "vl_llava.yaml"


def parse_args(argv: list[str] | None = None) -> VLTrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of options (flags override it); default: "
                        "configs/vl_default.yaml, or configs/vl_llava.yaml with --model/--backbone llava")
    parser.add_argument("--tasks", help="comma-separated: vqa,retrieval,caption")
    parser.add_argument("--method", choices=["mtl_lora", "lora", "none"])
    parser.add_argument("--output")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-steps", type=int, dest="max_steps")
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--backbone", choices=["open_clip", "hf", "llava"])
    parser.add_argument("--model", help="open_clip model name, local-dir:PATH, a HF CLIP or LLaVA folder "
                        "('default': the embedded base; 'llava': the embedded LLaVA)")
    parser.add_argument("--pretrained", help="open_clip pretrained tag or local checkpoint path")
    parser.add_argument("--data", choices=["synthetic", "jsonl", "vqav2_karpathy"])
    parser.add_argument("--data-root", dest="data_root", help="where the synthetic set is written")
    parser.add_argument("--train-file", dest="train_file")
    parser.add_argument("--val-file", dest="val_file")
    parser.add_argument("--image-dir", dest="image_dir")
    parser.add_argument("--r", type=int)
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--n-up", type=int, dest="n_up")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--lambda-type", choices=["full", "diagonal"], dest="lambda_type")
    parser.add_argument("--sampling", choices=["proportional", "uniform", "temperature", "round_robin"])
    parser.add_argument("--workers", type=int)
    parser.add_argument("--num-beams", type=int, dest="num_beams")
    parser.add_argument("--eval-max-samples", type=int, dest="eval_max_samples", help="per task (quick checks)")
    parser.add_argument("--on-bad-image", choices=["raise", "skip"], dest="on_bad_image")
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    if config_path is None:
        llava = args["model"] == "llava" or args["backbone"] == "llava"
        config_path = DEFAULT_LLAVA_CONFIG if llava else DEFAULT_CONFIG
    try:
        return VLTrainConfig.from_sources(config_path, **args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    cfg = parse_args(argv)
    document = train_vl(cfg)
    print(json.dumps({"output": cfg.output, "metrics": document["metrics"],
                      "trainable_parameters": document["trainable_parameters"],
                      "total_minutes": document["total_minutes"]}, indent=2))


if __name__ == "__main__":
    main()
