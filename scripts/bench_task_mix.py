"""Benchmark what mixing tasks in one batch costs an MTL-LoRA adapted model's training step.

    python scripts/bench_task_mix.py                   # open_clip ViT-B-16 image tower, batch 16, 8 tasks, 3 rounds
    python scripts/bench_task_mix.py --model default   # the embedded tiny CLIP (a quick check)
    python scripts/bench_task_mix.py --device cuda

One model: open_clip ViT-B-16 built with random weights (pretrained=None, nothing downloaded),
MTL-LoRA (``create_multitask_clip(method="mtl_lora")``, r=8, n_up=3) on every image-tower block's
attention (fused in_proj and out_proj) and MLP (c_fc, c_proj), with 8 tasks configured; base
weights frozen, the text tower left out. A step: ``encode_image`` on one batch (16 images at
224², 197 tokens of width 768), a loss, backward (gradients of the adapters only; no optimizer).

Mixes, all at the same batch size: the batch's per-sample task ids (a tensor) cycle through the
first k of the 8 tasks, k = 1, 2, 4, 8 (``ids = arange(batch) % k``). k = 1 is the baseline: one
task for the whole batch, which the layers run as one matmul (the single-task path); k > 1 takes
the mixed path (per-sample up-projections, a batched matmul). Every ratio is mix / single-task.

Interleaved rounds: each round times every mix ``--repeats`` times, one step of each mix in turn
(the order rotated one place per round, so no mix always runs first); the reported time is the
median over all rounds' steps with the min-max spread; the ratio, per round the mix's median step
over the single-task median step, is the median (min-max) of the per-round ratios. Both for the
wall time and for this process's CPU time (``time.process_time``): on a shared machine the wall
time also counts waiting for a core, the CPU time does not (with one thread it is the step's work).
Memory (one model for every mix, so no subprocesses): the bytes of every tensor autograd saves
for backward plus the output (what training keeps alive between forward and backward), counted
by storage; on CUDA also the peak allocated during the step.
Before timing, each mix's rows of task 0 are checked against the single-task batch's (a sample's
output must not depend on the other samples' tasks).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded by file path (tests)

from benchlib import cpu_model, publish, saved_bytes, spread, summary  # noqa: E402

MODELS = {"vit-b-16": "ViT-B-16", "default": None}
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="vit-b-16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-tasks", type=int, default=8, help="tasks configured in the model")
    parser.add_argument("--mixes", default="1,2,4,8", help="comma-separated numbers of tasks in the batch; 1 is "
                                                           "the baseline (added where missing)")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--n-up", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per mix and round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default); 1 by default: on a small shared CPU box more "
                             "threads mostly wait at OpenMP barriers and the numbers drift with the neighbours")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/bench_task_mix.json"))
    args = parser.parse_args(argv)
    try:
        mixes = sorted({int(m) for m in args.mixes.split(",") if m.strip()} | {1})
    except ValueError:
        parser.error(f"--mixes must be integers, got {args.mixes!r}")
    if mixes[0] < 1 or mixes[-1] > min(args.num_tasks, args.batch_size):
        parser.error(f"every mix must be between 1 and min(--num-tasks, --batch-size), got {mixes}")
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    args.mixes = mixes
    return args


def build(args: argparse.Namespace):
    """(adapted MultiTaskCLIP, images, info); the model in training mode, base frozen."""
    from vlmtl import create_multitask_clip
    from vlmtl.adapters.layers import MTLLoRALinear

    torch.manual_seed(args.seed)
    tasks = [f"task{i}" for i in range(args.num_tasks)]
    clip = create_multitask_clip(MODELS[args.model], tasks=tasks, method="mtl_lora", backbone="open_clip",
                                 r=args.r, n_up=args.n_up, text_targets=[])
    device = torch.device(args.device)
    clip.to(device).train()
    layers = [m for m in clip.backbone.visual.modules() if isinstance(m, MTLLoRALinear)]
    with torch.no_grad():  # B starts at zero: give every task a different, non-zero update
        for layer in layers:
            layer.B.normal_(std=0.02)
            layer.Lambda.add_(0.1 * torch.randn_like(layer.Lambda))
    trainable = [n for n, p in clip.backbone.named_parameters() if p.requires_grad]
    if not trainable or any(not n.endswith((".A", ".B", ".Lambda", ".w")) for n in trainable):
        raise RuntimeError(f"only the adapters should train, got {trainable[:5]}")
    visual = clip.backbone.visual
    size = visual.image_size
    size = int(size[0] if isinstance(size, tuple | list) else size)
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch_size, 3, size, size, generator=g).to(device)
    patch = visual.conv1.kernel_size[0]
    info = {
        "image_size": size,
        "tokens": (size // patch) ** 2 + 1,
        "width": int(visual.transformer.width),
        "blocks": len(visual.transformer.resblocks),
        "adapted_linears": len(layers),
        "parameters": sum(p.numel() for p in visual.parameters()),
        "trainable_parameters": sum(p.numel() for p in visual.parameters() if p.requires_grad),
        "tasks": tasks,
    }
    return clip, images, info


def task_ids(batch: int, mix: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(batch) % mix).to(device)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} given but CUDA is not available")
    start = time.perf_counter()
    clip, images, info = build(args)
    params = [p for p in clip.parameters() if p.requires_grad]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward(mix: int) -> torch.Tensor:
        return clip.encode_image(images, task_ids=task_ids(args.batch_size, mix, device))

    def step(mix: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) of one training step."""
        for p in params:
            p.grad = None
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = forward(mix).float().square().mean()
        loss.backward()
        sync()
        elapsed, cpu_time = time.perf_counter() - t0, time.process_time() - c0
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss is not finite with {mix} tasks: {loss.item()}")
        return elapsed, cpu_time

    # Check, and warm up: a sample's output depends on its own task only.
    with torch.no_grad():
        outputs = {mix: forward(mix) for mix in args.mixes}
    checks = {}
    for mix in args.mixes:
        rows = task_ids(args.batch_size, mix, device) == 0
        diff = (outputs[mix][rows] - outputs[1][rows]).abs().max().item()
        scale = outputs[1].abs().max().item()
        checks[mix] = diff
        if diff > 1e-4 * max(scale, 1.0):
            raise RuntimeError(f"with {mix} tasks the rows of task 0 differ from the single-task batch by {diff}")
        if mix > 1:
            other = task_ids(args.batch_size, mix, device) == 1
            if torch.allclose(outputs[mix][other], outputs[1][other]):
                raise RuntimeError(f"with {mix} tasks the rows of task 1 equal task 0's: tasks are not routed")
    for mix in args.mixes:
        step(mix)

    memory = {mix: saved_bytes(lambda mix=mix: forward(mix)) for mix in args.mixes}
    peak = {}
    if cuda:
        for mix in args.mixes:
            for p in params:
                p.grad = None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            forward(mix).float().square().mean().backward()
            torch.cuda.synchronize()
            peak[mix] = torch.cuda.max_memory_allocated() - before

    clocks = ("step_s", "cpu_s")  # wall time; CPU time of this process (what waiting for a shared core hides)
    times = {c: {mix: [] for mix in args.mixes} for c in clocks}
    per_round = {c: {mix: [] for mix in args.mixes} for c in clocks}
    for r in range(args.rounds):
        order = args.mixes[r % len(args.mixes):] + args.mixes[:r % len(args.mixes)]
        this_round = {c: {mix: [] for mix in args.mixes} for c in clocks}
        for _ in range(args.repeats):
            for mix in order:
                for c, value in zip(clocks, step(mix), strict=True):
                    this_round[c][mix].append(value)
        for c in clocks:
            for mix in args.mixes:
                times[c][mix].extend(this_round[c][mix])
                per_round[c][mix].append(statistics.median(this_round[c][mix]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{mix} task{'s' if mix > 1 else ''} {per_round['step_s'][mix][-1]:.3f} s "
            f"(CPU {per_round['cpu_s'][mix][-1]:.3f} s)" for mix in args.mixes), file=sys.stderr)

    def ratio(c: str, mix: int) -> dict:
        values = [t / b for t, b in zip(per_round[c][mix], per_round[c][1], strict=True)]
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": values,
                "of_medians": statistics.median(times[c][mix]) / statistics.median(times[c][1])}

    results = {}
    for mix in args.mixes:
        results[str(mix)] = {
            "step_s": summary(times["step_s"][mix]),
            "ratio": ratio("step_s", mix),
            "cpu_s": summary(times["cpu_s"][mix]),
            "cpu_ratio": ratio("cpu_s", mix),
            "saved_bytes": memory[mix],
            "saved_ratio": memory[mix] / memory[1],
            "peak_allocated_bytes": peak.get(mix),
            "max_abs_diff_task0_rows": checks[mix],
        }
    return {
        "model": args.model, "setup": info, "batch_size": args.batch_size, "num_tasks": args.num_tasks,
        "mixes": args.mixes, "r": args.r, "n_up": args.n_up, "rounds": args.rounds, "repeats": args.repeats,
        "device": args.device, "threads": torch.get_num_threads(), "cpu": cpu_model(), "nproc": os.cpu_count(),
        "torch": torch.__version__, "python": platform.python_version(), "results": results,
        "ratio_step_time": {str(m): results[str(m)]["ratio"]["median"] for m in args.mixes},
        "ratio_cpu_time": {str(m): results[str(m)]["cpu_ratio"]["median"] for m in args.mixes},
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "wall_s": time.perf_counter() - start,
    }


def report(doc: dict) -> str:
    s = doc["setup"]
    cuda = any(r["peak_allocated_bytes"] is not None for r in doc["results"].values())
    lines = [
        f"{doc['model']} image tower ({s['blocks']} blocks, width {s['width']}, {s['tokens']} tokens; "
        f"{s['adapted_linears']} MTL-LoRA linears, r={doc['r']}, n_up={doc['n_up']}, {doc['num_tasks']} tasks "
        f"configured; {s['parameters']:,} parameters, {s['trainable_parameters']:,} trainable), batch "
        f"{doc['batch_size']} at {s['image_size']}², forward+backward, float32 on {doc['device']} "
        f"({doc['threads']} threads, {doc['cpu']}, nproc {doc['nproc']}); median (min–max) of {doc['rounds']} "
        f"interleaved rounds × {doc['repeats']} steps",
        "",
        "| tasks in the batch | step time (s) | time / single-task | CPU time (s) | CPU / single-task "
        "| autograd saved (MiB) | saved / single-task |" + (" peak allocated (MiB) |" if cuda else ""),
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if cuda else ""),
    ]
    for mix in doc["mixes"]:
        r = doc["results"][str(mix)]
        row = (f"| {mix} | {spread(r['step_s'], fmt='{:.3f}')} | {spread(r['ratio'], fmt='{:.3f}')} | "
               f"{spread(r['cpu_s'], fmt='{:.3f}')} | {spread(r['cpu_ratio'], fmt='{:.3f}')} | "
               f"{r['saved_bytes'] / MIB:.1f} | {r['saved_ratio']:.3f} |")
        if cuda:
            row += f" {r['peak_allocated_bytes'] / MIB:.1f} |"
        lines.append(row)
    lines += ["", "Ratios: per round, the mix's median step over the single-task median step of the same round; "
              "the median (min–max) of those per-round ratios. CPU time: this process's (time.process_time), "
              "which leaves out the time spent waiting for a core shared with other processes."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    doc = run(args)
    publish(args.output, doc, report(doc))


if __name__ == "__main__":
    main()
