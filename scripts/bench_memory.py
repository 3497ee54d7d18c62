"""Benchmark peak memory and time of one training step under the training scripts' memory savers:
gradient checkpointing (``--grad-checkpointing``) and mixed precision (``--mixed-precision bf16|fp16``).

    python scripts/bench_memory.py                        # ViT-B/16 (random weights), batch 32, 3 rounds
    python scripts/bench_memory.py --model default        # the embedded tiny CLIP with the trainer's heads
    python scripts/bench_memory.py --device cuda          # peak from torch.cuda.max_memory_allocated
    python scripts/bench_memory.py --configs off,fp16,checkpointing+fp16

Configurations (``--configs``, comma-separated; default off,checkpointing,bf16,checkpointing+bf16):
  off            float32, no checkpointing (the baseline every ratio is taken against; always run);
  checkpointing  backbone blocks recomputed in backward (``set_grad_checkpointing``; ``on`` is an alias);
  bf16, fp16     the forward and the loss under ``torch.autocast(device_type, dtype)``, backward outside
                 it, weights kept float32: what accelerate's ``mixed_precision`` does in the trainers
                 (no gradient scaler for fp16: one step, and scaling the loss costs no memory);
  a+b            both, e.g. checkpointing+bf16.

Models, adapted with task-routed MTL-LoRA in both towers (base weights frozen, as in training):
  vit-b-16  open_clip ViT-B-16 built with random weights (pretrained=None, nothing downloaded);
  default   the embedded tiny CLIP (what ``train_vl.py --model default`` loads).
A step: forward both towers on one batch whose per-sample task ids cycle through every task,
a loss, backward. No optimizer step (only the gradients of the adapters and heads). Losses:
  contrastive  CLIP's symmetric InfoNCE between the image and text embeddings of the whole batch;
  heads        the trainer's step: VLMultiTaskModel's per-task losses (vqa classifier, retrieval
               InfoNCE, caption decoder) summed; rows of a task without a head only use the
               image tower, and the text tower runs on the vqa and retrieval rows only.
  (default: heads for --model default, contrastive for vit-b-16.)

Each configuration runs in a fresh subprocess, in interleaved rounds (``for round: [off,
checkpointing, bf16, ...]``), so machine noise hits all alike and no allocator state is shared.
A child builds the model, runs one warm-up step on a small batch (lazy initialisation, thread
pools), returns freed memory to the OS (``malloc_trim``), records the RSS, runs the measured
full-size step and reads ``ru_maxrss`` (peak RSS of the process: the warm-up was smaller, so it
is this step's peak), then times one more full step with a warm allocator (the step time).
The warm-up also notes the dtypes the modules output (``forward_dtypes`` in the JSON: bfloat16 or
float16 appear only where autocast took effect).
The increment (peak - RSS before the step) is what the step adds: activations kept for backward,
gradients, and transient buffers. With ``--device cuda`` memory is ``torch.cuda.memory_allocated``
before and ``max_memory_allocated`` during the step instead. Linux only on CPU (reads /proc).
Results are medians with min-max spread, and ratios (config / off) against the off runs of the
same rounds: median(config) / median(off), the spread that of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded by file path (tests)

from benchlib import (  # noqa: E402
    cpu_model,
    hwm_bytes,
    maxrss_bytes,
    publish,
    release_freed_memory,
    reset_hwm,
    rss_bytes,
    spread,
    summary,
)

SAVERS = ("checkpointing", "bf16", "fp16")  # the parts of a configuration name, in this order
ALIASES = {"on": "checkpointing"}  # the earlier name of checkpointing on
PRECISIONS = ("bf16", "fp16")
DEFAULT_CONFIGS = "off,checkpointing,bf16,checkpointing+bf16"
MODELS = ("vit-b-16", "default")
LOSSES = ("auto", "contrastive", "heads")
RESULT_MARK = "BENCH_MEMORY_RESULT "
MIB = 2**20
WORDS = ("a photo of the red small dog cat car on left right near big blue green tree house man "
         "woman two three sitting standing street table white black").split()


# --------------------------------------------------------------------------- configurations
def parse_config(name: str) -> dict:
    """``off`` or savers joined by ``+`` (any order, ``on`` for checkpointing) -> the canonical name,
    ``checkpointing`` (bool) and ``mixed_precision`` ("no", "bf16" or "fp16")."""
    parts = [ALIASES.get(part, part) for part in name.strip().split("+")]
    if parts == ["off"]:
        parts = []
    unknown = [part for part in parts if part not in SAVERS]
    if unknown or not name.strip():
        raise ValueError(f"unknown configuration {name!r}: use off or {'+'.join(SAVERS[:2])} style names "
                         f"from {', '.join(SAVERS)} (on = checkpointing)")
    if len(set(parts)) != len(parts) or len(set(parts) & set(PRECISIONS)) > 1:
        raise ValueError(f"configuration {name!r} repeats a saver or names two precisions")
    parts = [saver for saver in SAVERS if saver in parts]
    precision = next((part for part in parts if part in PRECISIONS), "no")
    return {"name": "+".join(parts) or "off", "checkpointing": "checkpointing" in parts, "mixed_precision": precision}


def parse_configs(text: str) -> list[str]:
    """The canonical names of a comma list, off first (added where missing: it is the baseline)."""
    names = [parse_config(part)["name"] for part in text.split(",") if part.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"--configs names a configuration twice: {names}")
    return ["off", *(n for n in names if n != "off")]


# --------------------------------------------------------------------------- child: one configuration
def make_texts(tokenizer, n: int, generator) -> list[str]:
    import torch

    vocab = getattr(tokenizer, "vocab", None)  # vlmtl WordTokenizer: draw from its own words
    words = [w for w in vocab if not w.startswith("<")] if isinstance(vocab, list) else list(WORDS)
    lengths = torch.randint(6, 13, (n,), generator=generator).tolist()
    return [" ".join(words[i] for i in torch.randint(len(words), (k,), generator=generator).tolist())
            for k in lengths]


def build(args):
    """(model, make_batch(batch_size) -> inputs, loss_fn(model, inputs) -> scalar, info)."""
    import torch
    import torch.nn.functional as F

    from vlmtl import create_multitask_clip
    from vlmtl.train.vl_model import VLMultiTaskModel

    name = "ViT-B-16" if args.model == "vit-b-16" else None
    clip = create_multitask_clip(name, tasks=args.tasks, method="mtl_lora", backbone="open_clip", r=args.r)
    image_size = clip.backbone.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, tuple | list) else image_size)
    context = int(getattr(clip.tokenizer, "context_length", 77))
    num_tasks = len(args.tasks)
    model = clip
    if args.loss == "heads":
        model = VLMultiTaskModel(clip, args.tasks, num_answers=args.num_answers, max_caption_len=context)
    model.set_grad_checkpointing(args.checkpointing)
    model.train()
    device = torch.device(args.device)
    model.to(device)
    frozen_trainable = [n for n, p in clip.backbone.named_parameters()
                        if p.requires_grad and not n.endswith((".A", ".B", ".Lambda", ".w"))]
    if frozen_trainable:
        raise RuntimeError(f"base weights are not frozen: {frozen_trainable[:5]}")

    def make_batch(b: int) -> dict:
        g = torch.Generator().manual_seed(args.seed)
        task_ids = torch.arange(b) % num_tasks  # every task in every batch
        batch = {
            "images": torch.randn(b, 3, image_size, image_size, generator=g),
            "text_tokens": clip.tokenize(make_texts(clip.tokenizer, b, g)),
            "task_ids": task_ids,
            "image_ids": [f"image{i}" for i in range(b)],
        }
        for t in ("vqa", "retrieval", "caption"):
            batch[f"{t}_index"] = torch.tensor([i for i in range(b) if args.tasks[i % num_tasks] == t],
                                               dtype=torch.long)
        answers = torch.randint(args.num_answers, (len(batch["vqa_index"]),), generator=g)
        batch["vqa_targets"] = F.one_hot(answers, args.num_answers).float()
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def contrastive(m, batch: dict) -> torch.Tensor:
        ids = batch["task_ids"]
        image = m.encode_image(batch["images"], task_ids=ids, normalize=True)
        text = m.encode_text(batch["text_tokens"], task_ids=ids, normalize=True)
        logits = image @ text.t() / 0.07
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    def heads(m, batch: dict) -> torch.Tensor:
        return sum(m(batch).values())

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = {"image_size": image_size, "context_length": context, "parameters": total, "trainable_parameters": trainable}
    return model, make_batch, contrastive if args.loss == "contrastive" else heads, info


def run_child(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} given but CUDA is not available")
    model, make_batch, loss_fn, info = build(args)
    batch = make_batch(args.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step(inputs: dict) -> float:
        for p in params:  # as optimizer.zero_grad(set_to_none=True): the step allocates the gradients
            p.grad = None
        sync()
        start = time.perf_counter()
        # As accelerate's mixed precision: the forward and the loss autocast, the backward outside.
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = loss_fn(model, inputs)
        loss.float().backward()
        sync()
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss is not finite: {loss.item()}")
        return time.perf_counter() - start

    # Warm-up: small, so it sets no peak. Hooks note the dtypes the modules output (bfloat16 /
    # float16 where autocast took effect), removed before the measured steps.
    forward_dtypes: set[str] = set()

    def note_dtype(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            forward_dtypes.add(str(output.dtype).removeprefix("torch."))

    hooks = [m.register_forward_hook(note_dtype) for m in model.modules()]
    step(make_batch(min(args.warmup_batch, args.batch_size)))
    for hook in hooks:
        hook.remove()
    for p in params:
        p.grad = None
    trimmed = release_freed_memory()
    result: dict = {"config": args.child, "checkpointing": args.checkpointing,
                    "mixed_precision": args.mixed_precision, "forward_dtypes": sorted(forward_dtypes),
                    "malloc_trim": trimmed, **info}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before = rss_bytes()
    hwm_reset = reset_hwm()
    first = step(batch)
    result["maxrss_bytes"] = maxrss_bytes()
    result["rss_before_bytes"] = rss_before
    hwm = hwm_bytes() if hwm_reset else None
    result["hwm_bytes"] = hwm  # this step's own peak RSS, where /proc/self/clear_refs allows a reset
    result["rss_increment_bytes"] = result["maxrss_bytes"] - rss_before
    if cuda:
        result["memory_kind"] = "cuda_allocated"
        result["before_bytes"] = before
        result["peak_bytes"] = torch.cuda.max_memory_allocated()
    else:
        result["memory_kind"] = "rss"
        result["before_bytes"] = rss_before
        result["peak_bytes"] = result["maxrss_bytes"]
    result["increment_bytes"] = result["peak_bytes"] - result["before_bytes"]
    result["first_step_s"] = first
    result["step_s"] = step(batch)  # allocator warm: the steady-state step time
    result["threads"] = torch.get_num_threads()
    result["torch"] = torch.__version__
    return result


# --------------------------------------------------------------------------- parent: rounds and report
def child_command(args, config: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config, "--model", args.model,
           "--batch-size", str(args.batch_size), "--tasks", ",".join(args.tasks), "--device", args.device,
           "--loss", args.loss, "--r", str(args.r), "--warmup-batch", str(args.warmup_batch),
           "--num-answers", str(args.num_answers), "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_config(args, config: str) -> dict:
    proc = subprocess.run(child_command(args, config), capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the {config!r} child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        raise RuntimeError(f"the {config!r} child printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def report(doc: dict) -> str:
    cuda = doc["memory_kind"] == "cuda_allocated"
    peak_name = "peak allocated (MiB)" if cuda else "peak RSS (MiB)"
    inc_name = "step increment over allocated before (MiB)" if cuda else "step increment over RSS before (MiB)"
    s = doc["setup"]
    lines = [
        f"{doc['model']} ({s['parameters']:,} parameters, {s['trainable_parameters']:,} trainable), "
        f"mtl_lora r={doc['r']}, tasks {','.join(doc['tasks'])} mixed per sample, batch {doc['batch_size']} at "
        f"{s['image_size']}² + {s['context_length']} text tokens, loss {doc['loss']}, no optimizer, float32 "
        f"weights on {doc['device']} ({doc['threads']} threads, {doc['cpu']}, nproc {doc['nproc']}); "
        f"median (min–max) of {doc['rounds']} interleaved rounds, one subprocess each",
        "",
        f"| config | grad checkpointing | autocast | {peak_name} | {inc_name} | increment / off | step time (s) "
        "| time / off |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for config in doc["configs"]:
        r = doc["results"][config]
        ratio = doc["ratios"][config]
        settings = doc["settings"][config]
        lines.append(f"| {config} | {'on' if settings['checkpointing'] else 'off'} | {settings['mixed_precision']} | "
                     f"{spread(r['peak_bytes'], MIB)} | {spread(r['increment_bytes'], MIB)} | "
                     f"{spread(ratio['increment'], fmt='{:.3f}')} | {spread(r['step_s'], fmt='{:.2f}')} | "
                     f"{spread(ratio['step_s'], fmt='{:.3f}')} |")
    lines += ["", "Ratios: median(config) / median(off); the spread is that of the per-round ratios (config / off "
              "of the same round)."]
    return "\n".join(lines)


def run_parent(args) -> dict:
    start = time.perf_counter()
    configs = args.configs
    raw: dict[str, list[dict]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for config in configs:
            res = run_config(args, config)
            raw[config].append(res)
            print(f"round {r + 1}/{args.rounds} {config}: peak {res['peak_bytes'] / MIB:.1f} MiB, increment "
                  f"{res['increment_bytes'] / MIB:.1f} MiB, step {res['step_s']:.2f} s", file=sys.stderr)
    keys = ("peak_bytes", "before_bytes", "increment_bytes", "maxrss_bytes", "rss_before_bytes",
            "rss_increment_bytes", "step_s", "first_step_s")
    results = {c: {k: summary([float(x[k]) for x in raw[c]]) for k in keys} for c in configs}
    for c in configs:
        hwm = [x["hwm_bytes"] for x in raw[c]]
        results[c]["hwm_bytes"] = summary([float(v) for v in hwm]) if all(v is not None for v in hwm) else None
    ratios = {}
    for c in configs:
        ratios[c] = {}
        for key, field in (("increment", "increment_bytes"), ("peak", "peak_bytes"), ("step_s", "step_s")):
            per_round = [x[field] / off[field] for x, off in zip(raw[c], raw["off"], strict=True)]
            ratios[c][key] = {"median": results[c][field]["median"] / results["off"][field]["median"],
                              "min": min(per_round), "max": max(per_round), "per_round": per_round}
    first = raw["off"][0]
    doc = {
        "model": args.model, "tasks": args.tasks, "batch_size": args.batch_size, "rounds": args.rounds,
        "loss": args.loss, "r": args.r, "method": "mtl_lora", "optimizer": None, "weights_dtype": "float32",
        "configs": configs, "settings": {c: parse_config(c) for c in configs},
        "device": args.device, "memory_kind": first["memory_kind"], "threads": first["threads"],
        "warmup_batch": args.warmup_batch, "setup": {k: first[k] for k in
                                                      ("image_size", "context_length", "parameters",
                                                       "trainable_parameters")},
        "cpu": cpu_model(), "nproc": os.cpu_count(), "torch": first["torch"], "python": platform.python_version(),
        "results": results, "ratios": ratios,
        "forward_dtypes": {c: raw[c][0]["forward_dtypes"] for c in configs},
        "ratio_increment": {c: ratios[c]["increment"]["median"] for c in configs},  # config / off
        "ratio_step_time": {c: ratios[c]["step_s"]["median"] for c in configs},
        "raw": raw, "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }
    doc["wall_s"] = time.perf_counter() - start
    return doc


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="vit-b-16")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated configurations: off, checkpointing (alias on), bf16, fp16 and "
                             "'+' combinations such as checkpointing+bf16; off is always run (the baseline)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", default="vqa,retrieval,caption,extra",
                        help="comma-separated task names; the adapters take any names, the heads loss only has "
                             "heads for vqa, retrieval and caption")
    parser.add_argument("--loss", choices=LOSSES, default="auto")
    parser.add_argument("--r", type=int, default=8, help="adapter rank")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default); 1 by default: on a small shared CPU box more "
                             "threads mostly wait at OpenMP barriers")
    parser.add_argument("--warmup-batch", type=int, default=2)
    parser.add_argument("--num-answers", type=int, default=100, help="vqa classifier size (heads loss)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.configs = parse_configs(args.configs)
        child = parse_config(args.child) if args.child else None
    except ValueError as e:
        parser.error(str(e))
    if child:
        args.child, args.checkpointing, args.mixed_precision = (child["name"], child["checkpointing"],
                                                                child["mixed_precision"])
    args.tasks = [t for t in args.tasks.split(",") if t]
    if len(args.tasks) < 1 or len(set(args.tasks)) != len(args.tasks):
        parser.error(f"--tasks must name distinct tasks, got {args.tasks}")
    if args.loss == "auto":
        args.loss = "heads" if args.model == "default" else "contrastive"
    if args.loss == "heads" and not {"vqa", "retrieval", "caption"} & set(args.tasks):
        parser.error("--loss heads needs at least one of vqa, retrieval, caption in --tasks")
    if args.batch_size < 2 or args.rounds < 1:
        parser.error("--batch-size must be at least 2 and --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(RESULT_MARK + json.dumps(run_child(args)), flush=True)
        return
    doc = run_parent(args)
    publish(args.output, doc, report(doc))


if __name__ == "__main__":
    main()
