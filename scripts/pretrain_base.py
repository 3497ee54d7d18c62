"""Pre-train the embedded base model: a small open_clip CLIP on the synthetic `pretrain` split.

    python scripts/pretrain_base.py                      # writes assets/vlmtl-tiny-clip/
    python scripts/pretrain_base.py --steps 200 --output /tmp/clip   # a quick one

The adaptation experiments (scripts/train_vl.py) start from this model, so they adapt a
backbone that already aligns images with captions, as a real CLIP does. It is trained
contrastively (symmetric InfoNCE) on captions of the `pretrain` split only, whose scenes
never occur in the train/val/test splits. The output folder is in open_clip's
`local-dir:` layout (open_clip_config.json + open_clip_model.safetensors) plus the
word-level tokenizer, so open_clip loads it through its own factory:
`open_clip.create_model_and_transforms("local-dir:assets/vlmtl-tiny-clip")`.
Deterministic for a seed on one machine; about 6 minutes on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import open_clip  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from vlmtl.adapters.io import atomic_write  # noqa: E402
from vlmtl.cli.logs import configure_logging
from vlmtl.cli.pretraining import pretrain_config, pretrain_parser, pretrain_samples, write_card  # noqa: E402
from vlmtl.data import ImageTransform, MultiTaskBatchSampler, MultiTaskCollator, MultiTaskDataset  # noqa: E402
from vlmtl.models import MultiTaskCLIP, WordTokenizer  # noqa: E402
from vlmtl.models.clip import DEFAULT_CLIP_DIR  # noqa: E402
from vlmtl.models.tokenizer import WORD_TOKENIZER_FILE  # noqa: E402
from vlmtl.train import Job, Trainer, VLMultiTaskModel  # noqa: E402
from vlmtl.train.vl_eval import evaluate_retrieval  # noqa: E402

IMAGE_SIZE = 64
CONTEXT_LENGTH = 40
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def model_config(width: int, layers: int) -> dict:
    return {
        "embed_dim": width,
        "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": width, "layers": layers,
                       "head_width": 32, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 0, "width": width, "heads": width // 32,
                     "layers": layers},
    }


def main() -> None:
    parser = pretrain_parser(__doc__, DEFAULT_CLIP_DIR, "runs/pretrain_clip", steps=1000, batch_size=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    configure_logging()
    start = time.time()
    trainer = Trainer(pretrain_config(args, "retrieval"))
    samples = pretrain_samples(args, IMAGE_SIZE)
    tokenizer = WordTokenizer.build(
        [s.text for s in samples] + [a for s in samples for a in (s.answers or [])], context_length=CONTEXT_LENGTH
    )
    captions = [s for s in samples if s.task == "retrieval"]
    held_out = {s.image_id for s in captions[-400:]}  # the last scenes score the pre-training
    train = [s for s in captions if s.image_id not in held_out]
    val = [s for s in captions if s.image_id in held_out]
    logging.info("pretrain split: %d captions of %d scenes for training, %d held out; vocabulary %d words",
                 len(train), len({s.image_id for s in train}), len(val), tokenizer.vocab_size)

    config = model_config(args.width, args.layers)
    config["text_cfg"]["vocab_size"] = tokenizer.vocab_size
    transform = ImageTransform(IMAGE_SIZE, MEAN, STD)
    clip = MultiTaskCLIP(open_clip.CLIP(**config), "open_clip", ["retrieval"], tokenizer=tokenizer,
                         preprocess=transform)
    model = VLMultiTaskModel(clip, ["retrieval"])  # every parameter trains, with the InfoNCE head
    dataset = MultiTaskDataset(train, transform, tasks=["retrieval"])
    sampler = MultiTaskBatchSampler(dataset.task_of_each_index, args.batch_size, seed=args.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers,
                        collate_fn=MultiTaskCollator(tokenizer), generator=torch.Generator().manual_seed(args.seed))
    model = trainer.fit(Job(model=model, loader=loader, step=lambda m, batch: m(batch), title="pre-training CLIP",
                            loss_counts=model.loss_counts))
    recall = evaluate_retrieval(model.eval(), val, transform, device=trainer.device)
    logging.info("held-out zero-shot retrieval: %s", {k: round(v, 1) for k, v in recall.items()})
    trainer.write_run({"held_out_zero_shot_retrieval": recall})

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "model_cfg": config,
        "preprocess_cfg": {"size": IMAGE_SIZE, "mean": list(MEAN), "std": list(STD),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in clip.backbone.state_dict().items()}
    atomic_write(out / "open_clip_model.safetensors", lambda tmp: save_file(state, tmp))
    atomic_write(out / "open_clip_config.json", lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    atomic_write(out / WORD_TOKENIZER_FILE, tokenizer.save)
    card = write_card(
        out, "pretrain_base.py", args, pretrain_scenes=args.images,
        held_out_zero_shot_retrieval={k: round(v, 2) for k, v in recall.items()},
        parameters=sum(p.numel() for p in clip.backbone.parameters()),
        minutes=round((time.time() - start) / 60, 1), torch=torch.__version__, open_clip=open_clip.__version__,
    )
    logging.info("wrote %s (%d parameters) in %.1f min", out, card["parameters"], card["minutes"])


if __name__ == "__main__":
    main()
