"""Benchmark one adapted linear: time and memory of forward+backward, as ratios to PEFT LoRA.

    python scripts/bench_adapters.py            # d=768, 32x197 tokens, r=8, T=4, n=3
    python scripts/bench_adapters.py --device cuda

Variants, measured in one run and interleaved (so machine noise hits all alike):
  base linear, vlmtl LoRALinear, PEFT LoRA, vlmtl MTLLoRALinear on a mixed-task batch,
  a straightforward per-sample-gather MTL-LoRA (the reference), and, for inference,
  MTLLoRALinear merged for one task against the base linear.
Memory: on CUDA the peak allocated during forward+backward; on CPU the bytes of the
output plus every tensor autograd saves for backward (what training keeps alive).
Needs PEFT (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlmtl.adapters import LoRALinear, MTLLoRALinear, use_tasks

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded by file path (tests)

from benchlib import saved_bytes  # noqa: E402


def reference_mtl_lora(layer: MTLLoRALinear, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The equation written plainly: gather each sample's mixed B and Λ, then bmm twice."""
    mix = torch.softmax(layer.w.float() / layer.temperature, dim=-1)[ids]  # (B, n)
    mixed_b = torch.einsum("bn,nor->bor", mix, layer.B.float()).to(x.dtype)  # (B, d_out, r)
    lam = layer.Lambda[ids]  # (B, r, r)
    h = F.linear(x, layer.A)  # (B, L, r)
    delta = torch.bmm(torch.bmm(h, lam.transpose(1, 2)), mixed_b.transpose(1, 2))
    return layer.base_layer(x) + layer.scaling * delta


def peak_bytes(fn: Callable[[], torch.Tensor], device: torch.device) -> int:
    if device.type != "cuda":
        return saved_bytes(fn)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    fn().float().sum().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - start


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=197)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--n-up", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    base = nn.Linear(args.dim, args.dim).to(device, dtype).requires_grad_(False)
    x = torch.randn(args.batch, args.tokens, args.dim, device=device, dtype=dtype, requires_grad=True)
    ids = torch.arange(args.batch, device=device) % args.tasks  # every task in every batch

    lora = LoRALinear(base, r=args.r, alpha=2 * args.r)
    peft = get_peft_model(nn.Sequential(OrderedDict(lin=base)),
                          LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules=["lin"]))
    peft.to(device, dtype)
    mtl = MTLLoRALinear(base, num_tasks=args.tasks, r=args.r, alpha=2 * args.r, n_up=args.n_up,
                        temperature=0.1)
    ref = MTLLoRALinear(base, num_tasks=args.tasks, r=args.r, alpha=2 * args.r, n_up=args.n_up,
                        temperature=0.1)
    with torch.no_grad():
        for layer in (mtl, ref):
            layer.B.normal_(std=0.02)
        ref.load_state_dict(mtl.state_dict())

    def run_mtl() -> torch.Tensor:
        with use_tasks(mtl, ids):
            return mtl(x)

    training: dict[str, Callable[[], torch.Tensor]] = {
        "base linear": lambda: base(x),
        "vlmtl LoRALinear": lambda: lora(x),
        "PEFT LoRA": lambda: peft(x),
        "vlmtl MTLLoRALinear (mixed batch)": run_mtl,
        "per-sample gather reference": lambda: reference_mtl_lora(ref, x, ids),
    }
    torch.testing.assert_close(run_mtl(), reference_mtl_lora(ref, x, ids), atol=1e-3, rtol=1e-3)

    def step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            x.grad = None
            fn().float().sum().backward()
        return run

    times: dict[str, list[float]] = {name: [] for name in training}
    for _ in range(3):  # warm-up
        for fn in training.values():
            step(fn)()
    for _ in range(args.repeats):
        for name, fn in training.items():
            times[name].append(timed(step(fn), device))
    memory = {name: peak_bytes(fn, device) for name, fn in training.items()}

    # Inference: merged single-task layer against the base linear.
    inference_x = x.detach()
    mtl.merge(1)
    infer = {"base linear (inference)": lambda: base(inference_x),
             "MTLLoRALinear merged, one task (inference)": lambda: mtl(inference_x)}
    infer_times: dict[str, list[float]] = {name: [] for name in infer}
    with torch.no_grad():
        for _ in range(3):
            for fn in infer.values():
                fn()
        for _ in range(args.repeats * 2):
            for name, fn in infer.items():
                infer_times[name].append(timed(fn, device))
    mtl.unmerge()

    peft_time = statistics.median(times["PEFT LoRA"])
    peft_mem = memory["PEFT LoRA"]
    print(f"one linear {args.dim}->{args.dim}, {args.batch}x{args.tokens} tokens, r={args.r}, T={args.tasks}, "
          f"n={args.n_up}, {args.dtype} on {device} ({torch.get_num_threads()} threads), median of {args.repeats}")
    print()
    print("| forward+backward | time (ms) | time / PEFT LoRA | memory (MiB) | memory / PEFT LoRA |")
    print("|---|---:|---:|---:|---:|")
    for name in training:
        t = statistics.median(times[name])
        print(f"| {name} | {1000 * t:.2f} | {t / peft_time:.3f} | {memory[name] / 2**20:.1f} | "
              f"{memory[name] / peft_mem:.3f} |")
    base_infer = statistics.median(infer_times["base linear (inference)"])
    print()
    print("| inference | time (ms) | time / base linear |")
    print("|---|---:|---:|")
    for name, values in infer_times.items():
        t = statistics.median(values)
        print(f"| {name} | {1000 * t:.2f} | {t / base_infer:.3f} |")


if __name__ == "__main__":
    main()
