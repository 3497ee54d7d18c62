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

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlmtl.adapters.io import atomic_write
from vlmtl.data import ImageTransform, MultiTaskCollator, MultiTaskDataset, read_jsonl, write_synthetic_dataset
from vlmtl.heads import RetrievalHead
from vlmtl.metrics import recall_at_k
from vlmtl.models import WordTokenizer
from vlmtl.models.clip import DEFAULT_CLIP_DIR, WORD_TOKENIZER_FILE

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


def evaluate(model, loader) -> dict[str, float]:
    """Zero-shot Recall@K on held-out pretrain scenes (unique images vs all captions)."""
    model.eval()
    image_rows: dict[str, int] = {}
    image_embs, text_embs, owners = [], [], []
    with torch.no_grad():
        for batch in loader:
            img = model.encode_image(batch["images"], normalize=True)
            txt = model.encode_text(batch["text_tokens"], normalize=True)
            for i, image_id in enumerate(batch["image_ids"]):
                if image_id not in image_rows:
                    image_rows[image_id] = len(image_rows)
                    image_embs.append(img[i])
                owners.append(image_rows[image_id])
            text_embs.append(txt)
    similarity = torch.stack(image_embs) @ torch.cat(text_embs).T
    model.train()
    return recall_at_k(similarity, owners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(DEFAULT_CLIP_DIR))
    parser.add_argument("--data", default=None, help="where to write the synthetic pretrain split (default: a temp dir)")
    parser.add_argument("--images", type=int, default=4000, help="pretrain scenes")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    start = time.time()

    data_root = Path(args.data or tempfile.mkdtemp(prefix="vlmtl-pretrain-"))
    write_synthetic_dataset(data_root, n_train=0, n_val=0, n_pretrain=args.images, seed=args.seed,
                            image_size=IMAGE_SIZE)
    samples = read_jsonl(data_root / "pretrain.jsonl", data_root)
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
    model = open_clip.CLIP(**config)
    head = RetrievalHead()
    transform = ImageTransform(IMAGE_SIZE, MEAN, STD)
    collate = MultiTaskCollator(tokenizer)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(MultiTaskDataset(train, transform, tasks=["retrieval"]), batch_size=args.batch_size,
                        shuffle=True, drop_last=True, num_workers=args.workers, collate_fn=collate,
                        generator=generator, persistent_workers=args.workers > 0)
    val_loader = DataLoader(MultiTaskDataset(val, transform, tasks=["retrieval"]), batch_size=256,
                            collate_fn=collate)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / args.steps)).item()),
    )

    model.train()
    progress = tqdm(total=args.steps, desc="pre-training")
    step = 0
    while step < args.steps:
        for batch in loader:
            img = model.encode_image(batch["images"])
            txt = model.encode_text(batch["text_tokens"])
            loss = head(img, txt, batch["image_ids"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
            if step >= args.steps:
                break
    progress.close()
    recall = evaluate(model, val_loader)
    logging.info("held-out zero-shot retrieval: %s", {k: round(v, 1) for k, v in recall.items()})

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "model_cfg": config,
        "preprocess_cfg": {"size": IMAGE_SIZE, "mean": list(MEAN), "std": list(STD),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "open_clip_model.safetensors", lambda tmp: save_file(state, tmp))
    atomic_write(out / "open_clip_config.json", lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    atomic_write(out / WORD_TOKENIZER_FILE, tokenizer.save)
    card = {
        "made_by": "python scripts/pretrain_base.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("output", "data", "workers")),
        "pretrain_scenes": args.images,
        "held_out_zero_shot_retrieval": {k: round(v, 2) for k, v in recall.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "minutes": round((time.time() - start) / 60, 1),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
    }
    atomic_write(out / "pretrain_card.json", lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    logging.info("wrote %s (%d parameters) in %.1f min", out, card["parameters"], card["minutes"])


if __name__ == "__main__":
    main()
