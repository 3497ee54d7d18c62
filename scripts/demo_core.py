"""A tour of the adapter core on a small open_clip CLIP, offline, in about a minute on 2 CPU cores.

    python scripts/demo_core.py --output runs/demo_core

1. builds an open_clip CLIP (random weights, `pretrained=None`) and injects MTL-LoRA into
   the attention (q/k/v/out) and MLP of both towers;
2. trains it on two toy tasks at once from mixed-task batches: each task asks the image
   embedding to match its own fixed random target direction, so the tasks pull the
   shared adapters in different directions and only the task-specific parts can serve both;
3. checks a mixed batch against each sample alone, merges each task into the weights and
   compares, saves the adapters and loads them into a fresh model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vlmtl.adapters import (
    MTLLoRAConfig,
    MultiTaskModel,
    count_parameters,
    inject,
    load_adapters,
    merge,
    save_adapters,
    unmerge,
    use_tasks,
)

TASKS = ["left", "right"]


def build_clip(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=64,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
        text_cfg=dict(context_length=16, vocab_size=1000, width=64, heads=2, layers=2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/demo_core")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = build_clip(args.seed)
    config = MTLLoRAConfig(tasks=TASKS, r=8, alpha=16, n_up=2, temperature=0.5,
                           target_modules=["attn", "c_fc", "c_proj"])
    inject(model, config)
    trainable, total = count_parameters(model)
    print(f"MTL-LoRA on both towers: {trainable:,} trainable of {total:,} parameters")

    routed = MultiTaskModel(model)
    generator = torch.Generator().manual_seed(args.seed)
    targets = F.normalize(torch.randn(len(TASKS), 64, generator=generator), dim=-1)
    images = torch.randn(256, 3, 32, 32, generator=generator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def loss_of(batch: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        embeddings = F.normalize(routed(batch, None, task_ids=ids)[0], dim=-1)
        return (1 - (embeddings * targets[ids]).sum(-1)).mean()

    model.train()
    progress = tqdm(range(args.steps), desc="training")
    for _ in progress:
        index = torch.randint(0, len(images), (args.batch_size,), generator=generator)
        ids = torch.randint(0, len(TASKS), (args.batch_size,), generator=generator)  # tasks mix in a batch
        loss = loss_of(images[index], ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()

    with torch.no_grad():
        probe = images[:8]
        for task in TASKS:
            ids = torch.full((8,), TASKS.index(task))
            print(f"task {task!r}: mean cosine to its target {1 - loss_of(probe, ids).item():.3f}")
        mixed = torch.tensor([0, 1] * 4)
        with use_tasks(model, mixed):
            together = model.encode_image(probe)
        alone = []
        for i in range(8):
            with use_tasks(model, int(mixed[i])):
                alone.append(model.encode_image(probe[i : i + 1]))
        print(f"mixed batch vs each sample alone: max |diff| {(together - torch.cat(alone)).abs().max():.2e}")
        for task in TASKS:
            with use_tasks(model, task):
                routed_out = model.encode_image(probe)
            merge(model, task)
            merged_out = model.encode_image(probe)
            unmerge(model)
            print(f"merged {task!r} vs routed: max |diff| {(routed_out - merged_out).abs().max():.2e}")

        out = Path(args.output)
        save_adapters(model, out)
        fresh = build_clip(args.seed)
        load_adapters(fresh, out)
        with use_tasks(fresh, mixed):
            reloaded = fresh.encode_image(probe)
        print(f"saved to {out}; reloaded into a fresh model, bit-identical: {torch.equal(reloaded, together)}")


if __name__ == "__main__":
    main()
