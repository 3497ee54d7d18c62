"""Benchmark a dense multi-task training step on Swin-T at 448²: vlmtl MTLoRA against the plain
backbone, the official MTLoRA implementation, and vlmtl MTL-LoRA (batched and sequential passes).

    python scripts/bench_swin.py                      # Swin-T 448², batch 2, 3 rounds, every variant
    python scripts/bench_swin.py --variants plain,vlmtl_mtlora,official_mtlora
    python scripts/bench_swin.py --tiny               # a tiny Swin at 64² (the tests; minutes -> seconds)

Variants (``--variants``, comma-separated; ``plain`` is the baseline, always run):
  plain                 ``timm.create_model("swin_tiny_patch4_window7_224", img_size=448, features_only=True,
                        drop_path_rate=0.2)``: the four stage outputs (NHWC, 96/192/384/768 channels), every
                        weight trainable: the plain backbone's own training step (full fine-tuning), no decoders;
  vlmtl_mtlora          ``vlmtl.models.create_multitask_swin(method="mtlora", r=16, r_task=4, scale=4,
                        dropout=0.05, drop_path_rate=0.2)`` with its four decoders (semseg, human_parts, saliency,
                        normals): TA-LoRA on qkv/proj/fc1/fc2 everywhere, TS-LoRA in each stage's last block,
                        the base frozen, the paper's trainable set (adapters, patch embedding, norms, relative
                        position tables, patch merging, decoders);
  official_mtlora       the official code (github.com/scale-lab/MTLoRA) built as its ``main.py`` builds it:
                        ``config.get_config`` on ``configs/mtlora/tiny_448/mtlora_tiny_448_r16_scale4_pertask.yaml``
                        with ``--tasks semseg,human_parts,sal,normals --pascal``, ``models.build_model``,
                        ``build_mtl_model`` (decoders: its Downsamplers + HRNet heads), then
                        ``mark_only_lora_as_trainable(model.backbone, ...)`` with main.py's arguments;
  vlmtl_mtl_lora_batched, vlmtl_mtl_lora_sequential
                        ``create_multitask_swin(method="mtl_lora", task_pass=...)`` (r=16, alpha = 4·r, the
                        same decoders): MTL-LoRA adapts every layer per task, so each task needs its own
                        backbone pass: one pass over the images repeated per task (per-sample routing) or
                        one pass per task.
  vlmtl_full            ``create_multitask_swin(method="full")``: the same decoders on the shared features, every
                        weight trainable: the plain backbone with the decoders (separates the decoders' cost);
  vlmtl_mtlora_checkpointing
                        vlmtl_mtlora with ``set_grad_checkpointing(True)`` (each backbone block recomputed in
                        backward).

A step: forward on a batch of random images, the loss ``sum over outputs of mean(output²)`` (the
same for every variant, so the step measures the model; the real task losses cost little next to
it), backward; no optimizer step. Float32 (the official ``AMP_ENABLE`` autocast is CUDA-only).
The official sources are read from a bare git mirror (``--official-repo``) into a temporary folder
at run time (``config.py``, ``utils.py``, ``data/mtl_ds.py``, ``models/{__init__,build,swin_transformer,
swin_transformer_mtlora,swin_mtl,lora,seg_hrnet}.py``, the yaml); its imports need yacs, easydict,
termcolor and ptflops (``pip install yacs easydict termcolor ptflops``); ``cv2``, ``imageio`` and
``skimage`` are imported only by its data code and are stubbed (``data/__init__.py``, which imports
the whole data pipeline, is replaced by an empty one). Nothing of it enters the repository.

Each variant runs in a fresh subprocess, in interleaved rounds (the order rotated per round). A
child builds the model, warms up on one image (thread pools, lazy initialisation; smaller than the
measured step), returns freed memory to the OS (``malloc_trim``), records the RSS, resets the
peak-RSS counter (``/proc/self/clear_refs``; where that is refused the warm-up is smaller anyway),
runs one full step and reads the peak: memory = peak RSS during the step - RSS before it (what the
step adds: activations kept for backward, gradients, transient buffers). Then it times ``--steps``
more steps (allocator warm); its time is their median, as wall time and as the child's CPU time
(``time.process_time``: on a shared machine the wall time also counts waiting for a core; with one
thread the CPU time is the step's work). With ``--device cuda`` memory is the peak allocated.
Results: median (min-max) over rounds; ratios variant / plain of the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
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

VARIANTS = ("plain", "vlmtl_mtlora", "official_mtlora", "vlmtl_mtl_lora_batched", "vlmtl_mtl_lora_sequential",
            "vlmtl_full", "vlmtl_mtlora_checkpointing")
DEFAULT_VARIANTS = ",".join(VARIANTS)
TASKS = ("semseg", "human_parts", "saliency", "normals")
OFFICIAL_TASK = {"saliency": "sal"}  # the official code's name for the same task
OFFICIAL_REPO = Path("/work/.mirror/scale-lab+MTLoRA/repo")
OFFICIAL_CONFIG = "configs/mtlora/tiny_448/mtlora_tiny_448_r16_scale4_pertask.yaml"
OFFICIAL_FILES = ("config.py", "utils.py", "data/mtl_ds.py", "models/__init__.py", "models/build.py",
                  "models/swin_transformer.py", "models/swin_transformer_mtlora.py", "models/swin_mtl.py",
                  "models/lora.py", "models/seg_hrnet.py", OFFICIAL_CONFIG)
TIMM_NAME = "swin_tiny_patch4_window7_224"
RESULT_MARK = "BENCH_SWIN_RESULT "
MIB = 2**20


# --------------------------------------------------------------------------- models
def shape_kwargs(args) -> dict:
    """timm Swin keyword arguments for --tiny (empty: Swin-T)."""
    if not args.tiny:
        return {}
    return {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2}


def build_plain(args):
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False, img_size=args.img_size, features_only=True,
                              drop_path_rate=0.2, **shape_kwargs(args))
    model.requires_grad_(True)
    return model, lambda images: list(model(images))


def build_vlmtl(args, method: str, task_pass: str = "batched"):
    from vlmtl.models import create_multitask_swin

    model = create_multitask_swin(TIMM_NAME, tasks=TASKS, method=method, img_size=args.img_size, r=16, r_task=4,
                                  scale=4.0, dropout=0.05, drop_path_rate=0.2, task_pass=task_pass,
                                  **shape_kwargs(args))
    if method != "full":
        frozen = [n for n, p in model.backbone.named_parameters()
                  if n.endswith(("qkv.base_layer.weight", "fc1.base_layer.weight")) and p.requires_grad]
        if frozen:
            raise RuntimeError(f"the base is not frozen: {frozen[:3]}")
    return model, lambda images: list(model(images).values())


def _git_show(repo: Path, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, check=True).stdout


def _stub_data_only_modules() -> None:
    """cv2, imageio, skimage: imported by the official data code only (its config reads three cv2
    interpolation constants into FLAGVALS, which model building never uses)."""
    cv2 = types.ModuleType("cv2")
    cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC = 0, 1, 2  # OpenCV's values
    skimage, morphology = types.ModuleType("skimage"), types.ModuleType("skimage.morphology")
    morphology.thin = None
    skimage.morphology = morphology
    for name, module in (("cv2", cv2), ("imageio", types.ModuleType("imageio")), ("skimage", skimage),
                         ("skimage.morphology", morphology)):
        sys.modules.setdefault(name, module)


def build_official(args):
    """The official MTLoRA model, as main.py builds it, from the git mirror's sources."""
    import contextlib
    import io

    repo = Path(args.official_repo)
    if not (repo / "HEAD").exists() and not (repo / ".git").exists():
        raise SystemExit(f"official MTLoRA mirror not found at {repo} (--official-repo)")
    root = Path(tempfile.mkdtemp(prefix="mtlora_official_"))
    for path in OFFICIAL_FILES:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git_show(repo, path))
    (root / "data" / "__init__.py").write_text("")  # the official one imports the whole data pipeline
    _stub_data_only_modules()
    sys.path.insert(0, str(root))
    quiet = contextlib.redirect_stdout(io.StringIO())  # the official code prints its configuration
    with quiet:
        from config import get_config
        from models import build_model, build_mtl_model
        from models.lora import mark_only_lora_as_trainable

        opts = ["DATA.IMG_SIZE", str(args.img_size)]
        if args.tiny:
            k = shape_kwargs(args)
            opts += ["MODEL.SWIN.EMBED_DIM", str(k["embed_dim"]), "MODEL.SWIN.DEPTHS", str(list(k["depths"])),
                     "MODEL.SWIN.NUM_HEADS", str(list(k["num_heads"])), "MODEL.SWIN.WINDOW_SIZE",
                     str(k["window_size"])]
        ns = argparse.Namespace(cfg=str(root / OFFICIAL_CONFIG), opts=opts, batch_size=args.batch_size,
                                tasks=",".join(OFFICIAL_TASK.get(t, t) for t in TASKS), pascal=str(root),
                                local_rank=0, disable_wandb=True)
        config = get_config(ns)
        model = build_mtl_model(build_model(config), config)  # main.py: build_model, then build_mtl_model
        if config.MODEL.MTLORA.ENABLED and config.MODEL.MTLORA.FREEZE_PRETRAINED:  # main.py, verbatim arguments
            mark_only_lora_as_trainable(
                model.backbone, bias=config.MODEL.MTLORA.BIAS,
                freeze_patch_embed=config.TRAIN.FREEZE_PATCH_EMBED,
                freeze_norm=config.TRAIN.FREEZE_LAYER_NORM,
                free_relative_bias=config.TRAIN.FREEZE_RELATIVE_POSITION_BIAS,
                freeze_downsample_reduction=True if config.MODEL.MTLORA.DOWNSAMPLER_ENABLED
                else config.TRAIN.FREEZE_DOWNSAMPLE_REDUCTION)
    info = {"official_r": list(config.MODEL.MTLORA.R), "official_r_per_task": dict(config.MODEL.MTLORA.R_PER_TASK),
            "official_scale": list(config.MODEL.MTLORA.SHARED_SCALE), "official_tasks": list(config.TASKS)}
    return model, (lambda images: list(model(images).values())), info


def build(args):
    """(model, forward(images) -> list of outputs, info)."""
    info: dict = {}
    if args.child == "plain":
        model, forward = build_plain(args)
    elif args.child == "official_mtlora":
        model, forward, info = build_official(args)
    elif args.child == "vlmtl_mtlora":
        model, forward = build_vlmtl(args, "mtlora")
    elif args.child == "vlmtl_full":
        model, forward = build_vlmtl(args, "full")
    elif args.child == "vlmtl_mtlora_checkpointing":
        model, forward = build_vlmtl(args, "mtlora")
        model.set_grad_checkpointing(True)
    else:
        model, forward = build_vlmtl(args, "mtl_lora", args.child.rsplit("_", 1)[-1])
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, forward, info


# --------------------------------------------------------------------------- child
def run_child(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model, forward, info = build(args)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g).to(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step(x) -> tuple[float, float, int]:
        """(wall seconds, CPU seconds of this process, number of outputs) of one training step."""
        for p in params:  # as optimizer.zero_grad(set_to_none=True)
            p.grad = None
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        outputs = forward(x)
        loss = sum(o.float().square().mean() for o in outputs)
        loss.backward()
        sync()
        elapsed, cpu_time = time.perf_counter() - start, time.process_time() - cpu_start
        if not torch.isfinite(loss):
            raise RuntimeError(f"{args.child}: loss is not finite")
        return elapsed, cpu_time, len(outputs)

    step(images[:1])  # warm-up, smaller than the measured step
    for p in params:
        p.grad = None
    result = {"variant": args.child, "malloc_trim": release_freed_memory(), **info}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before = rss_bytes()
    hwm_reset = reset_hwm()
    first, _, n_outputs = step(images)
    hwm = hwm_bytes() if hwm_reset else None
    peak_rss = hwm if hwm is not None else maxrss_bytes()
    result.update(outputs=n_outputs, rss_before_bytes=rss_before, peak_rss_bytes=peak_rss, hwm_reset=hwm_reset,
                  rss_increment_bytes=peak_rss - rss_before, first_step_s=first)
    if cuda:
        result.update(memory_kind="cuda_allocated", increment_bytes=torch.cuda.max_memory_allocated() - before)
    else:
        result.update(memory_kind="rss", increment_bytes=peak_rss - rss_before)
    times = [step(images)[:2] for _ in range(args.steps)]
    result.update(step_s=statistics.median(t for t, _ in times), step_times=[t for t, _ in times],
                  cpu_s=statistics.median(c for _, c in times), cpu_times=[c for _, c in times],
                  threads=torch.get_num_threads(), torch=torch.__version__)
    return result


# --------------------------------------------------------------------------- parent
def child_command(args, variant: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--batch-size", str(args.batch_size),
           "--img-size", str(args.img_size), "--steps", str(args.steps), "--device", args.device,
           "--threads", str(args.threads), "--seed", str(args.seed), "--official-repo", str(args.official_repo)]
    return cmd + (["--tiny"] if args.tiny else [])


def run_variant(args, variant: str) -> dict:
    proc = subprocess.run(child_command(args, variant), capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the {variant!r} child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        raise RuntimeError(f"the {variant!r} child printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def run_parent(args) -> dict:
    start = time.perf_counter()
    variants = args.variants
    raw: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for variant in order:
            res = run_variant(args, variant)
            raw[variant].append(res)
            print(f"round {r + 1}/{args.rounds} {variant}: step {res['step_s']:.2f} s (CPU {res['cpu_s']:.2f} s), "
                  f"memory +{res['increment_bytes'] / MIB:.0f} MiB", file=sys.stderr)
    results, ratios = {}, {}
    for v in variants:
        results[v] = {k: summary([float(x[k]) for x in raw[v]])
                      for k in ("step_s", "cpu_s", "first_step_s", "increment_bytes", "rss_before_bytes")}
        ratios[v] = {}
        for key, field in (("step_s", "step_s"), ("cpu_s", "cpu_s"), ("memory", "increment_bytes")):
            per_round = [x[field] / p[field] for x, p in zip(raw[v], raw["plain"], strict=True)]
            ratios[v][key] = {"median": results[v][field]["median"] / results["plain"][field]["median"],
                              "min": min(per_round), "max": max(per_round), "per_round": per_round}
    first = raw["plain"][0]
    doc = {
        "model": "tiny Swin (embed 24, depths 1,1,1,1, window 2)" if args.tiny else f"{TIMM_NAME} (Swin-T)",
        "img_size": args.img_size, "batch_size": args.batch_size, "tasks": list(TASKS), "rounds": args.rounds,
        "steps": args.steps, "variants": variants, "device": args.device, "memory_kind": first["memory_kind"],
        "threads": first["threads"], "cpu": cpu_model(), "nproc": os.cpu_count(), "torch": first["torch"],
        "python": platform.python_version(),
        "setup": {v: {k: raw[v][0].get(k) for k in ("parameters", "trainable_parameters", "outputs")}
                  for v in variants},
        "official": {k: raw["official_mtlora"][0][k] for k in raw["official_mtlora"][0] if k.startswith("official_")}
        if "official_mtlora" in raw else None,
        "results": results, "ratios": ratios,
        "ratio_step_time": {v: ratios[v]["step_s"]["median"] for v in variants},
        "ratio_cpu_time": {v: ratios[v]["cpu_s"]["median"] for v in variants},
        "ratio_memory": {v: ratios[v]["memory"]["median"] for v in variants},
        "raw": raw, "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }
    doc["wall_s"] = time.perf_counter() - start
    return doc


def report(doc: dict) -> str:
    mem = "peak allocated increment (MiB)" if doc["memory_kind"] == "cuda_allocated" else "peak RSS increment (MiB)"
    lines = [
        f"{doc['model']} at {doc['img_size']}², batch {doc['batch_size']}, tasks {','.join(doc['tasks'])}; one "
        f"training step (forward + backward, no optimizer), float32 on {doc['device']} ({doc['threads']} threads, "
        f"{doc['cpu']}, nproc {doc['nproc']}); median (min–max) of {doc['rounds']} interleaved rounds, one "
        f"subprocess per variant and round, step time the median of {doc['steps']} steps",
        "",
        f"| variant | parameters | trainable | step time (s) | time / plain | CPU time (s) | CPU / plain | {mem} "
        "| memory / plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in doc["variants"]:
        r, ratio, s = doc["results"][v], doc["ratios"][v], doc["setup"][v]
        lines.append(f"| {v} | {s['parameters']:,} | {s['trainable_parameters']:,} | "
                     f"{spread(r['step_s'], fmt='{:.2f}')} | {spread(ratio['step_s'], fmt='{:.3f}')} | "
                     f"{spread(r['cpu_s'], fmt='{:.2f}')} | "
                     f"{spread(ratio['cpu_s'], fmt='{:.3f}')} | {spread(r['increment_bytes'], MIB, '{:.0f}')} | "
                     f"{spread(ratio['memory'], fmt='{:.3f}')} |")
    lines += ["", "Ratios: median(variant) / median(plain); the spread is that of the per-round ratios (variant / "
              "plain of the same round). CPU time: the child's (time.process_time), which leaves out the time "
              "spent waiting for a core shared with other processes."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated, from {', '.join(VARIANTS)}; plain is always run (the baseline)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=None, help="default 448 (64 with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny Swin (embed 24, depths 1,1,1,1, heads 1, window 2) at 64²: for tests")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per child after the measured one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default); 1 by default: on a small shared CPU box more "
                             "threads mostly wait at OpenMP barriers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--official-repo", type=Path, default=OFFICIAL_REPO,
                        help="the official MTLoRA repository (a bare git mirror or a clone): its HEAD is read")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_swin.json"))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or len(set(names)) != len(names):
        parser.error(f"--variants: unknown or repeated {unknown or names}; choose from {', '.join(VARIANTS)}")
    args.variants = ["plain", *(v for v in names if v != "plain")]
    if args.img_size is None:
        args.img_size = 64 if args.tiny else 448
    if args.batch_size < 2 or args.rounds < 1 or args.steps < 1:
        parser.error("--batch-size must be at least 2 (the warm-up runs one image), --rounds and --steps at least 1")
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
