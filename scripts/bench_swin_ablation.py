"""What each fused path of vlmtl's MTLoRA Swin step is worth: one process, one model, each path
switched back to its layer-by-layer composition in turn, interleaved with the plain backbone.

    python scripts/bench_swin_ablation.py                 # Swin-T 448², batch 2, 6 rounds
    python scripts/bench_swin_ablation.py --tiny --rounds 1

Variants (the model and the step are ``bench_swin.py``'s ``plain`` and ``vlmtl_mtlora``):
  plain              the plain timm Swin-T training step (the baseline);
  fused              vlmtl as shipped;
  no_fused_mlp       the stream blocks' MLP composed from ``fc1.forward_streams``, GELU, ``fc2.forward_streams``
                     (``vlmtl.adapters.stream_mlp`` off);
  no_fused_dropout   the adapters' down-projection as ``F.linear(dropout(x), A)`` (``dropout_down_projection`` off);
  no_channels_last   the decoders' 1×1 convolutions as batched matmuls over NCHW-contiguous maps;
  no_merged_reduction
                     each task stream patch-merged, then reduced by its decoder's 1×1 conv
                     (``swin_mtlora.merged_reduction`` off);
  no_conv_norm_act   each decoder's expansion conv, then BatchNorm over its output
                     (``dense.pointwise_conv_norm_act`` off);
  no_matmul_resize   the decoders' bilinear resizing by ``F.interpolate`` (``heads.resize.bilinear_resize`` off);
  no_fused_linear    an adapted linear as ``base(x)`` plus the fused low-rank add, autograd summing its two
                     input gradients (``vlmtl.adapters.fused_linear`` off);
  none               all of them off.

Separate processes per variant (``bench_swin.py``) measure memory and a fresh process's first
steps; here both models live in one warmed-up process, so the step time is that of a long run and
the rounds are far less noisy. Before timing, every variant's loss is checked against ``fused``'s
under the same seed (same dropout masks). Time: the process's CPU time per step
(``time.process_time``); results: median (min–max) over rounds, ratios against ``plain`` of the
same round.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_swin  # noqa: E402
from benchlib import cpu_model, publish, ratio, spread, summary  # noqa: E402

SWITCHES = ("fused_mlp", "fused_dropout", "channels_last", "merged_reduction", "conv_norm_act", "matmul_resize",
            "fused_linear")
VARIANTS = {"plain": None, "fused": (), **{f"no_{name}": (name,) for name in SWITCHES}, "none": SWITCHES}


def _dropped_then_projected(dropout, x, a):
    import torch.nn.functional as F

    return F.linear(dropout(x).to(a.dtype), a)


def _merged_then_reduced(merge, conv, x):
    from vlmtl.heads.dense import pointwise_conv

    return pointwise_conv(conv, merge(x).permute(0, 3, 1, 2))


def _base_then_low_rank(base, x, a, b, scale, dropout=None):
    from vlmtl.adapters.layers import _add_lora

    return _add_lora(base(x), x, a, b, scale, dropout)


def _conv_then_norm(conv, norm, act, x):
    from vlmtl.heads.dense import pointwise_conv

    return act(norm(pointwise_conv(conv, x)))


def _interpolate(x, size):
    import torch.nn.functional as F

    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _nchw_contiguous(x):
    return x.permute(0, 3, 1, 2).contiguous()


def _pointwise_conv_nchw(conv, x):
    import torch

    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    weight = conv.weight.flatten(1).expand(b, -1, -1)
    if conv.bias is None:
        return torch.bmm(weight, flat).view(b, -1, h, w)
    return torch.baddbmm(conv.bias.view(1, -1, 1).expand(b, -1, h * w), weight, flat).view(b, -1, h, w)


@contextlib.contextmanager
def switched_off(names: tuple[str, ...]):
    """Replace the named fused paths by their compositions for the duration."""
    import vlmtl.adapters.layers as layers
    import vlmtl.heads.dense as dense
    import vlmtl.models.swin_mtlora as swin
    from vlmtl.adapters.stream_mlp import composed_mlp_task_streams

    swaps = {"fused_mlp": [(swin, "mlp_task_streams", composed_mlp_task_streams)],
             "fused_dropout": [(layers, "dropout_down_projection", _dropped_then_projected)],
             "channels_last": [(swin, "_nchw", _nchw_contiguous), (dense, "pointwise_conv", _pointwise_conv_nchw)],
             "merged_reduction": [(swin, "merged_reduction", _merged_then_reduced)],
             "conv_norm_act": [(dense, "pointwise_conv_norm_act", _conv_then_norm)],
             "matmul_resize": [(dense, "bilinear_resize", _interpolate)],
             "fused_linear": [(layers, "_lora_linear", _base_then_low_rank)]}
    saved = []
    try:
        for name in names:
            for module, attr, replacement in swaps[name]:
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, replacement)
        yield
    finally:
        for module, attr, original in reversed(saved):
            setattr(module, attr, original)


def run(args) -> dict:
    import torch

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    child = argparse.Namespace(img_size=args.img_size, tiny=args.tiny, child="plain")
    torch.manual_seed(args.seed)
    plain, plain_forward = bench_swin.build_plain(child)
    torch.manual_seed(args.seed)
    model, model_forward = bench_swin.build_vlmtl(child, "mtlora")
    plain.train(), model.train()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         generator=torch.Generator().manual_seed(args.seed))

    def step(variant: str, seed: int | None = None) -> tuple[float, float]:
        module, forward = (plain, plain_forward) if variant == "plain" else (model, model_forward)
        for p in module.parameters():
            p.grad = None
        if seed is not None:
            torch.manual_seed(seed)
        with switched_off(VARIANTS[variant] or ()):
            start = time.process_time()
            loss = sum(o.float().square().mean() for o in forward(images))
            loss.backward()
            return time.process_time() - start, loss.item()

    losses = {v: step(v, seed=args.seed)[1] for v in args.variants if v != "plain"}
    for v, loss in losses.items():  # warm-up and check: the switches change the cost, not the result
        if abs(loss - losses["fused"]) > 1e-4 * abs(losses["fused"]):
            raise RuntimeError(f"{v}: loss {loss} differs from the fused path's {losses['fused']}")
    raw: dict[str, list[float]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        order = args.variants[r % len(args.variants):] + args.variants[:r % len(args.variants)]
        for v in order:
            raw[v].append(step(v)[0])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {raw[v][-1]:.2f} s" for v in args.variants),
              file=sys.stderr, flush=True)
    return {"img_size": args.img_size, "batch_size": args.batch_size, "rounds": args.rounds, "threads": args.threads,
            "cpu": cpu_model(), "torch": torch.__version__, "variants": args.variants, "losses": losses,
            "cpu_s": {v: summary(raw[v]) for v in args.variants},
            "ratio_to_plain": {v: ratio(raw[v], raw["plain"]) for v in args.variants},
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "wall_s": time.perf_counter() - started}


def report(doc: dict) -> str:
    lines = [f"Swin MTLoRA step at {doc['img_size']}², batch {doc['batch_size']}, one process, {doc['threads']} "
             f"thread(s), {doc['cpu']}; median (min–max) of {doc['rounds']} interleaved rounds", "",
             "| variant | CPU time (s) | CPU time / plain |", "|---|---:|---:|"]
    for v in doc["variants"]:
        lines.append(f"| {v} | {spread(doc['cpu_s'][v], fmt='{:.2f}')} | "
                     f"{spread(doc['ratio_to_plain'][v], fmt='{:.3f}')} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=None, help="default 448 (64 with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a tiny Swin at 64² (the tests)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/bench_swin_ablation.json"))
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or len(set(names)) != len(names):
        parser.error(f"--variants: unknown or repeated {unknown or names}; choose from {', '.join(VARIANTS)}")
    args.variants = ["plain", "fused", *(v for v in names if v not in ("plain", "fused"))]
    if args.img_size is None:
        args.img_size = 64 if args.tiny else 448
    if args.rounds < 1 or args.batch_size < 1:
        parser.error("--rounds and --batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    doc = run(args)
    publish(args.output, doc, report(doc))
    return doc


if __name__ == "__main__":
    main()
