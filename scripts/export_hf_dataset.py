"""Export the embedded synthetic VL set as a Hugging Face ``datasets.DatasetDict``
(``train`` and ``validation``, image bytes embedded), written with ``save_to_disk``:

    python scripts/export_hf_dataset.py --output data/synthetic_hf
    python scripts/train_vl.py --data hf --hf-dataset data/synthetic_hf --tasks vqa,retrieval

Columns: image (an ``Image`` feature), task, text, image_id, sample_id, answers, references,
answer_type: the columns ``--data hf`` reads. The set is the one ``train_vl.py`` generates
by default (same seed and sizes unless changed here).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlmtl.cli.logs import configure_logging  # noqa: E402
from vlmtl.data import read_jsonl, to_hf_dataset  # noqa: E402
from vlmtl.train.config import VLTrainConfig  # noqa: E402
from vlmtl.train.vl_data import ensure_synthetic  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    defaults = VLTrainConfig.from_defaults()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="the save_to_disk folder to write")
    parser.add_argument("--synthetic-train-images", type=int, default=defaults.synthetic_train_images)
    parser.add_argument("--synthetic-val-images", type=int, default=defaults.synthetic_val_images)
    parser.add_argument("--synthetic-seed", type=int, default=defaults.synthetic_seed)
    parser.add_argument("--data-root", default=None, help="where the synthetic set is generated (default: cache)")
    args = parser.parse_args(argv)
    configure_logging()
    import datasets

    cfg = VLTrainConfig.from_defaults(synthetic_train_images=args.synthetic_train_images,
                                      synthetic_val_images=args.synthetic_val_images,
                                      synthetic_seed=args.synthetic_seed, data_root=args.data_root)
    root = ensure_synthetic(cfg)
    splits = datasets.DatasetDict({
        "train": to_hf_dataset(read_jsonl(root / "train.jsonl", root)),
        "validation": to_hf_dataset(read_jsonl(root / "val.jsonl", root)),
    })
    splits.save_to_disk(str(args.output))
    logging.info("wrote %s: %s", args.output, {k: len(v) for k, v in splits.items()})


if __name__ == "__main__":
    main()
