"""Pre-train the embedded LLaVA base: a small CLIP-vision + LLaMA LLaVA on synthetic captions.

    python scripts/pretrain_llava.py                     # writes assets/vlmtl-tiny-llava/
    python scripts/pretrain_llava.py --steps 50 --output /tmp/llava   # a quick one

Like LLaVA's first stage, the base learns to describe images ("describe the image:" →
the caption); it never sees a question. Since no pretrained vision tower or language
model can be loaded offline, every part is trained here, from scratch, on the captions
of the synthetic `pretrain` split (scenes apart from the train/val splits that
`scripts/train_vl.py --model llava` adapts it on, where it must learn vqa). The output
is a Hugging Face `save_pretrained` folder (config.json, model.safetensors,
generation_config.json, preprocessor_config.json) plus vlmtl's word tokenizer, read by
`LlavaForConditionalGeneration.from_pretrained` / `vlmtl.models.load_llava`.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import transformers  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import CLIPImageProcessor  # noqa: E402

from vlmtl.cli.logs import configure_logging
from vlmtl.cli.pretraining import pretrain_config, pretrain_parser, pretrain_samples, write_card  # noqa: E402
from vlmtl.data import MultiTaskBatchSampler, MultiTaskDataset  # noqa: E402
from vlmtl.models.clip import HFImageTransform  # noqa: E402
from vlmtl.models.llava import MultiTaskLlava  # noqa: E402
from vlmtl.models.llava_build import DEFAULT_LLAVA_DIR, save_llava, tiny_llava_for  # noqa: E402
from vlmtl.models.llava_text import PROMPTS, LlavaWordTokenizer  # noqa: E402
from vlmtl.train import Job, Trainer  # noqa: E402
from vlmtl.train.llava_model import VLLlavaModel  # noqa: E402
from vlmtl.train.vl_eval import evaluate_llava  # noqa: E402

IMAGE_SIZE = 64
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]  # the synthetic images' statistics, as for the tiny CLIP


def main() -> None:
    parser = pretrain_parser(__doc__, DEFAULT_LLAVA_DIR, "runs/pretrain_llava", steps=1500, batch_size=48)
    parser.add_argument("--held-out", type=int, default=200, dest="held_out", help="scenes kept for the score")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vision-layers", type=int, default=4, dest="vision_layers")
    args = parser.parse_args()
    configure_logging()
    start = time.time()
    trainer = Trainer(pretrain_config(args, "caption"))
    samples = pretrain_samples(args, IMAGE_SIZE)
    # the vocabulary covers questions and answers too: the adaptation run must be able to say them
    tokenizer = LlavaWordTokenizer.build([s.text for s in samples] + [a for s in samples for a in (s.answers or [])])
    captions = [s for s in samples if s.task == "caption"]
    scene_ids = list(dict.fromkeys(s.image_id for s in captions))
    held_out = set(scene_ids[-args.held_out:])
    train = [s for s in captions if s.image_id not in held_out]
    val = [s for s in captions if s.image_id in held_out]  # scored once per scene
    logging.info("pretrain split: %d captions of %d scenes for training, %d scenes held out; %d token ids",
                 len(train), len(scene_ids) - len(held_out), len(held_out), tokenizer.vocab_size)

    backbone = tiny_llava_for(tokenizer, image_size=IMAGE_SIZE, patch_size=8, hidden=args.hidden,
                              layers=args.layers, heads=args.hidden // 32, vision_layers=args.vision_layers,
                              vision_feature_layer=-1)
    processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                   "width": IMAGE_SIZE}, image_mean=MEAN, image_std=STD)
    transform = HFImageTransform(processor)
    llava = MultiTaskLlava(backbone, tokenizer, None, tasks=["caption"], prompts={"caption": PROMPTS["caption"]},
                           preprocess=transform)
    backbone.requires_grad_(True)  # pre-training: every part learns
    model = VLLlavaModel(llava)
    dataset = MultiTaskDataset(train, transform, tasks=["caption"])
    sampler = MultiTaskBatchSampler(dataset.task_of_each_index, args.batch_size, seed=args.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers, collate_fn=model.collator(),
                        generator=torch.Generator().manual_seed(args.seed))
    model = trainer.fit(Job(model=model, loader=loader, step=lambda m, batch: m(batch), title="pre-training LLaVA",
                            loss_counts=model.loss_counts))

    # greedy captions of the held-out scenes, scored as train_vl.py scores its validation captions
    scores = evaluate_llava(model.eval(), val, "caption", max_new_tokens=48, device=trainer.device)
    logging.info("held-out captions: %s", {k: round(v, 1) for k, v in scores.items()})
    trainer.write_run({"held_out_captions_greedy": scores})

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)
    save_llava(backbone.cpu(), tokenizer, staging, image_processor=processor)
    card = write_card(
        staging, "pretrain_llava.py", args,
        objective="captioning ('describe the image:') on the synthetic pretrain split; no questions",
        pretrain_scenes=args.images, held_out_captions_greedy={k: round(v, 2) for k, v in scores.items()},
        parameters=sum(p.numel() for p in backbone.parameters()), minutes=round((time.time() - start) / 60, 1),
        device=str(trainer.device), torch=torch.__version__, transformers=transformers.__version__,
    )
    if out.exists():  # replace the folder as a whole: a crash never leaves half a model
        shutil.rmtree(out)
    staging.rename(out)
    logging.info("wrote %s (%d parameters) in %.1f min", out, card["parameters"], card["minutes"])


if __name__ == "__main__":
    main()
