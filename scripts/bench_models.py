"""Whole-model cost of vlmtl against PEFT LoRA: a training step, and merged single-task inference.

    python scripts/bench_models.py clip      # open_clip ViT-B-16, both towers, batch 8 at 224², 3 rounds
    python scripts/bench_models.py llava     # LLaMA-7B-shaped decoder (1 layer), batch 4 x 256 tokens
    python scripts/bench_models.py merged    # merged one-task inference vs the base model (ViT-B-16 + decoder)
    python scripts/bench_models.py all --tiny --rounds 1   # every benchmark on tiny shapes (the test)
    python scripts/bench_models.py clip --device cuda      # memory from torch.cuda.max_memory_allocated

Benchmarks (each writes ``<output-dir>/bench_models_<what>.json`` and ``.md``, and prints the table):

clip    open_clip ``--clip-model`` (ViT-B-16, random weights: nothing is downloaded; ``default`` is the
        embedded tiny CLIP) with adapters in both towers on what ``create_multitask_clip`` adapts by
        default: every residual block's ``attn`` (nn.MultiheadAttention: its fused q/k/v in_proj and
        its out_proj) and ``mlp.c_fc``/``mlp.c_proj``. vlmtl: ``create_multitask_clip(method=
        "mtl_lora")``. PEFT: ``get_peft_model`` with the same full-name regex
        (``tower_target_regex("open_clip")``); PEFT's ``lora.MultiheadAttention`` adapts the same
        fused in_proj (one A, one B of 3·width rows) and the out_proj, so both adapt the same modules
        with the same shapes (the check below asserts it). Loss: CLIP's symmetric InfoNCE.
llava   a LLaVA decoder without its vision tower: transformers ``LlamaForCausalLM`` with LLaMA-7B
        layer shapes (hidden 4096, MLP 11008, 32 heads; ``--llava-layers`` layers, a small vocabulary),
        random weights, q/k/v/o/gate/up/down adapted (vlmtl's ``TEXT_TARGETS``, what
        ``create_multitask_llava`` adapts in the decoder) by vlmtl MTL-LoRA (``inject``) or PEFT
        LoRA. Loss: the causal LM loss on the sequence itself.
merged  forward only, no grad, eval: vlmtl MTL-LoRA with one task merged into the base weights
        (``merge(model, task)``, the adapter wrappers kept) and ``merge_and_unload(model, task)``
        against the same backbone without adapters (``--merged-backbones clip,llava``).

A training step: ``zero_grad(set_to_none)``, forward, loss, backward, and an AdamW step (lr 1e-4) on
the trainable parameters (``--optimizer none``: no optimizer step); base weights frozen, adapters
trainable, float32 (``--dtype``), r=8, alpha=16, no dropout; MTL-LoRA with vlmtl's defaults (n_up=3,
temperature 0.1, full Λ) and ``--tasks`` tasks; the batch's per-sample task ids cycle 0,1,2,3,0,...
so every batch mixes every task (vlmtl's mixed path, a batched matmul per layer).

Measurement (training): interleaved rounds; in each round every variant runs in its own process,
forked from this one after the imports (fresh allocator, nothing computed before the fork), in
an order rotated per round. A child builds its model, runs a warm-up step on a small batch
without the optimizer step (noting which tasks reached every routed layer), returns freed memory
to the OS (malloc_trim), reads its RSS, resets VmHWM, runs the memory step (full batch, with the
optimizer step: AdamW allocates its state here), reads the peak RSS of that step (VmHWM; ru_maxrss
where VmHWM cannot be reset), then times ``--steps`` more steps (their median is the round's time).
Memory = the step's peak RSS minus the RSS before it (activations kept for backward, gradients,
optimizer state, transient buffers); with ``--device cuda`` it is max_memory_allocated minus the
allocated memory before the step. Time: wall clock (perf_counter; the targets are judged on it) and,
beside it, the process's CPU time (process_time: the work done, without the time spent waiting for
a core on a shared, oversubscribed machine; with one torch thread every op runs on the calling
thread). Each variant's result is the median (min-max) over rounds; a ratio is median(variant) /
median(PEFT), its spread that of the per-round ratios.
Merged inference runs in one forked process per backbone: ``--rounds`` rounds, each timing
``--steps`` forwards per variant interleaved step by step (order rotated per round).

Before the rounds a check process builds both models and records: the same adapted modules; at
initialisation (B = 0) vlmtl, PEFT and the base model (PEFT's ``disable_adapter``) give the same
outputs; with PEFT's B random and every vlmtl task's adapter set equal to PEFT's (A, every B_i = B,
Λ_t = I) vlmtl on the mixed batch still equals PEFT; with per-task Λ_t the mixed batch's rows equal
single-task runs of their own task and the tasks differ (so the 4 tasks really are routed); and
which routed layers the mixed batch reached with which task ids. PEFT 0.21 adds the LoRA of an
nn.MultiheadAttention's out_proj twice in its forward (huggingface/peft#3774): the equal-adapters
comparison keeps those B at zero, and a second one (``mha_out_proj``) sets them too and compares
vlmtl with B and with 2·B. How the two adapt nn.MultiheadAttention differs (same result, other cost):
PEFT merges W + s·BA into the fused weights before every forward and calls torch's MHA (autograd
then forms the full d×3d weight gradient); vlmtl re-implements MHA around adapted projections
(``AdaptedMultiheadAttention``: x·Wᵀ + s·(x·Aᵀ)·Bᵀ, then scaled_dot_product_attention).
``--profile N`` adds the top N ops by self CPU time of one profiled step per variant (round 1).
Linux only (fork, /proc). Needs PEFT (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded by file path (tests)

from benchlib import (  # noqa: E402
    cpu_model,
    hwm_bytes,
    maxrss_bytes,
    ratio,
    release_freed_memory,
    reset_hwm,
    rss_bytes,
    spread,
    summary,
    write_json,
)

MIB = 2**20
BENCHES = ("clip", "llava", "merged")
VARIANTS = ("peft", "mtl_lora", "lora")  # peft is the baseline of the training benchmarks
LABELS = {
    "peft": "PEFT LoRA (baseline)",
    "mtl_lora": "vlmtl MTL-LoRA, {tasks} tasks mixed per sample",
    "lora": "vlmtl LoRA (one adapter)",
    "base": "base model, no adapters (baseline)",
    "merge": "vlmtl MTL-LoRA merge(task)",
    "merge_and_unload": "vlmtl MTL-LoRA merge_and_unload(task)",
}
TARGETS = {"time": 1.10, "memory": 1.10, "merged_time": 1.02}
WORDS = ("a photo of the red small dog cat car on left right near big blue green tree house man "
         "woman two three sitting standing street table white black").split()
ADAPTER_PARAM_SUFFIXES = (".A", ".B", ".Lambda", ".w")

# Full-size and --tiny defaults of the shape options (None on the command line: take these).
FULL = dict(clip_model="ViT-B-16", clip_batch=8, llava_layers=1, llava_hidden=4096, llava_intermediate=11008,
            llava_heads=32, llava_seq=256, llava_vocab=1024, llava_batch=4)
TINY = dict(clip_model="default", clip_batch=4, llava_layers=1, llava_hidden=64, llava_intermediate=172,
            llava_heads=4, llava_seq=16, llava_vocab=64, llava_batch=4)


# --------------------------------------------------------------------------- memory and time
def versions() -> dict:
    import open_clip
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "peft": peft.__version__, "transformers": transformers.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version()}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- models
@dataclass
class Built:
    """One benchmark model: what holds its parameters, its loss / outputs on a batch, batches."""

    model: object  # nn.Module holding every parameter
    root: object  # the module whose names the adapters are listed under (PEFT: the wrapped model)
    loss: Callable[[dict], object]
    outputs: Callable[[dict, object], object]  # (batch, task ids) -> a tensor of per-row outputs
    batch: Callable[[int, bool], dict]  # (rows, small) -> a batch whose task ids cycle over the tasks
    info: dict = field(default_factory=dict)


def task_names(args) -> list[str]:
    return [f"task{i}" for i in range(args.tasks)]


def task_ids(rows: int, num_tasks: int):
    import torch

    return torch.arange(rows) % num_tasks


def make_texts(tokenizer, n: int, generator) -> list[str]:
    import torch

    vocab = getattr(tokenizer, "vocab", None)  # vlmtl WordTokenizer: its own words
    words = [w for w in vocab if not w.startswith("<")] if isinstance(vocab, list) else list(WORDS)
    lengths = torch.randint(6, 13, (n,), generator=generator).tolist()
    return [" ".join(words[i] for i in torch.randint(len(words), (k,), generator=generator).tolist())
            for k in lengths]


def peft_config(args, targets):
    from peft import LoraConfig

    return LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=targets)


def build_clip(args, variant: str) -> Built:
    """open_clip CLIP with adapters in both towers; ``variant`` peft, mtl_lora, lora or base."""
    import torch
    import torch.nn.functional as F

    from vlmtl.models.clip import DEFAULT_CLIP, MultiTaskCLIP, create_multitask_clip, load_open_clip, tower_target_regex

    name = DEFAULT_CLIP if args.clip_model == "default" else args.clip_model
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    targets = tower_target_regex("open_clip")  # what create_multitask_clip adapts by default
    tasks = task_names(args)
    torch.manual_seed(args.seed)  # the same random base weights in every variant
    if variant in ("peft", "base"):
        base, _, tokenizer = load_open_clip(name)
        if variant == "peft":
            from peft import get_peft_model

            model = get_peft_model(base, peft_config(args, targets))
            root = model.base_model.model
        else:
            base.requires_grad_(False)
            model = root = MultiTaskCLIP(base, "open_clip", tasks, tokenizer=tokenizer)
    else:
        model = create_multitask_clip(name, tasks=tasks, method=variant, r=args.r, alpha=args.alpha)
        tokenizer, root = model.tokenizer, model.backbone
    model.to(device, dtype)
    clip = root.backbone if variant == "base" else root
    image_size = clip.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, tuple | list) else image_size)

    def batch(rows: int, small: bool = False) -> dict:
        g = torch.Generator().manual_seed(args.seed + rows)
        images = torch.randn(rows, 3, image_size, image_size, generator=g)
        tokens = tokenizer(make_texts(tokenizer, rows, g))
        return {"images": images.to(device, dtype), "tokens": tokens.to(device),
                "task_ids": task_ids(rows, args.tasks).to(device)}

    def outputs(b: dict, ids=None):
        ids = b["task_ids"] if ids is None else ids
        if variant == "peft":
            image, text = model.encode_image(b["images"]), model.encode_text(b["tokens"])
        else:
            image = model.encode_image(b["images"], task_ids=ids)
            text = model.encode_text(b["tokens"], task_ids=ids)
        return torch.cat([image, text], dim=-1)

    def loss(b: dict):
        out = outputs(b).float()
        half = out.shape[-1] // 2
        image, text = F.normalize(out[:, :half], dim=-1), F.normalize(out[:, half:], dim=-1)
        logits = image @ text.t() / 0.07
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    info = {"model": args.clip_model, "image_size": image_size,
            "context_length": int(getattr(tokenizer, "context_length", 77)), "batch_size": args.clip_batch}
    return Built(model, root, loss, outputs, batch, info)


def build_decoder(args, variant: str) -> Built:
    """A LLaMA decoder (LLaVA's language model) with q/k/v/o/gate/up/down adapted."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlmtl.adapters import inject, use_tasks
    from vlmtl.models.adapter_config import build_adapter_config
    from vlmtl.models.llava import TEXT_TARGETS

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = LlamaConfig(vocab_size=args.llava_vocab, hidden_size=args.llava_hidden,
                         intermediate_size=args.llava_intermediate, num_hidden_layers=args.llava_layers,
                         num_attention_heads=args.llava_heads, num_key_value_heads=args.llava_heads,
                         max_position_embeddings=max(512, args.llava_seq), pad_token_id=0, bos_token_id=None,
                         eos_token_id=None, use_cache=False)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    if variant == "peft":
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(args, list(TEXT_TARGETS)))
        root = model.base_model.model
    elif variant == "base":
        model.requires_grad_(False)
        root = model
    else:
        inject(model, build_adapter_config(variant, task_names(args), list(TEXT_TARGETS), r=args.r, alpha=args.alpha))
        root = model
    model.to(device, dtype)
    routed = variant == "mtl_lora"

    def batch(rows: int, small: bool = False) -> dict:
        g = torch.Generator().manual_seed(args.seed + rows)
        seq = min(16, args.llava_seq) if small else args.llava_seq
        ids = torch.randint(args.llava_vocab, (rows, seq), generator=g)
        return {"input_ids": ids.to(device), "task_ids": task_ids(rows, args.tasks).to(device)}

    def run(b: dict, ids, labels: bool):
        from contextlib import nullcontext

        ids = b["task_ids"] if ids is None else ids
        with use_tasks(model, ids) if routed else nullcontext():
            return model(input_ids=b["input_ids"], labels=b["input_ids"] if labels else None, use_cache=False)

    info = {"layers": args.llava_layers, "hidden": args.llava_hidden, "intermediate": args.llava_intermediate,
            "heads": args.llava_heads, "seq": args.llava_seq, "vocab": args.llava_vocab,
            "batch_size": args.llava_batch, "attn_implementation": config._attn_implementation}
    return Built(model, root, lambda b: run(b, None, True).loss, lambda b, ids=None: run(b, ids, False).logits,
                 batch, info)


BUILDERS = {"clip": build_clip, "llava": build_decoder}


def batch_rows(args, bench: str) -> int:
    return args.clip_batch if bench == "clip" else args.llava_batch


# --------------------------------------------------------------------------- adapters on both sides
def vlmtl_layers(root) -> dict:
    from vlmtl.adapters import AdapterLayer

    return {name: m for name, m in root.named_modules() if isinstance(m, AdapterLayer)}


def peft_layers(root) -> dict:
    """PEFT's LoRA layers under the wrapped model, by the name vlmtl gives the same module: an MHA's
    own LoRA is on its fused in_proj (``<mha>.in_proj``), its out_proj's sits under ``base_layer``."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import MultiheadAttention as PeftMHA

    layers = {}
    for name, m in root.named_modules():
        if isinstance(m, LoraLayer):
            key = f"{name}.in_proj" if isinstance(m, PeftMHA) else name
            layers[key.replace(".base_layer", "")] = m
    return layers


def adapted_names(built: Built, variant: str) -> list[str]:
    if variant == "peft":
        return sorted(peft_layers(built.root))
    if variant in ("mtl_lora", "lora"):
        return sorted(vlmtl_layers(built.root))
    return []


def trainable_check(built: Built, variant: str) -> list:
    """The trainable parameters; raises if a base weight is trainable."""
    params, wrong = [], []
    for name, p in built.model.named_parameters():
        if not p.requires_grad:
            continue
        params.append(p)
        adapter = "lora_" in name if variant == "peft" else name.endswith(ADAPTER_PARAM_SUFFIXES)
        if not adapter:
            wrong.append(name)
    if wrong:
        raise RuntimeError(f"{variant}: base weights are trainable: {wrong[:5]}")
    if not params:
        raise RuntimeError(f"{variant}: nothing is trainable")
    return params


class RoutingRecorder:
    """Forward pre-hooks on every routed layer noting the task ids it was given (read only)."""

    def __init__(self, root) -> None:
        from vlmtl.adapters.routing import routed_layers

        self.layers = list(routed_layers(root))
        self.called: set[int] = set()
        self.mixed_all: set[int] = set()
        self.tasks: set[int] = set()
        self.num_tasks = self.layers[0].num_tasks if self.layers else 0
        self.hooks = [layer.register_forward_pre_hook(self.note) for layer in self.layers]

    def note(self, module, inputs) -> None:
        routing = module._routing
        self.called.add(id(module))
        if routing is None or routing.ids is None:
            if routing is not None:
                self.tasks.add(int(routing.uniform))
            return
        seen = set(routing.ids.tolist())
        self.tasks |= seen
        if routing.uniform is None and len(seen) == self.num_tasks:
            self.mixed_all.add(id(module))

    def remove(self) -> dict:
        for hook in self.hooks:
            hook.remove()
        return {"routed_layers": len(self.layers), "layers_called": len(self.called),
                "layers_mixed_all_tasks": len(self.mixed_all), "tasks_seen": sorted(self.tasks)}


def mha_out_proj_keys(root) -> set[str]:
    """vlmtl names of the out_proj LoRAs PEFT puts inside its MultiheadAttention layers."""
    from peft.tuners.lora.layer import MultiheadAttention as PeftMHA

    return {f"{name}.out_proj" for name, m in root.named_modules() if isinstance(m, PeftMHA)}


def copy_peft_adapters(p_layers: dict, v_layers: dict, out_proj_factor: dict | None = None) -> None:
    """Set every vlmtl task's adapter to PEFT's: A = lora_A, every B_i = factor * lora_B, Λ_t = I
    (then U_t = scaling * B for every t, whatever the mixing weights)."""
    import torch

    with torch.no_grad():
        for key, layer in v_layers.items():
            p = p_layers[key]
            factor = (out_proj_factor or {}).get(key, 1.0)
            layer.A.copy_(p.lora_A["default"].weight)
            b = p.lora_B["default"].weight * factor
            if hasattr(layer, "Lambda"):
                layer.B.copy_(b.expand_as(layer.B))
                layer.Lambda.copy_(torch.eye(layer.r).to(layer.Lambda).expand_as(layer.Lambda))
            else:
                layer.B.copy_(b)


def max_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def check_child(args, bench: str) -> dict:
    """Same adapted modules; equal outputs at init and with equal adapters; 4 tasks routed."""
    import torch

    build = BUILDERS[bench]
    peft_b, vl_b = build(args, "peft"), build(args, "mtl_lora")
    for b in (peft_b, vl_b):
        b.model.eval()
    p_layers, v_layers = peft_layers(peft_b.root), vlmtl_layers(vl_b.root)
    if sorted(p_layers) != sorted(v_layers):
        only_p, only_v = sorted(set(p_layers) - set(v_layers)), sorted(set(v_layers) - set(p_layers))
        raise RuntimeError(f"PEFT and vlmtl adapt different modules: PEFT only {only_p[:5]}, vlmtl only {only_v[:5]}")
    batch = vl_b.batch(args.tasks, True)  # one sample per task
    ids = batch["task_ids"]
    out: dict = {"adapted_modules": len(v_layers), "same_modules": True, "rows": int(ids.numel()),
                 "task_ids": ids.tolist()}
    with torch.no_grad():
        with peft_b.model.disable_adapter():
            base = peft_b.outputs(batch)
        peft0, vl0 = peft_b.outputs(batch), vl_b.outputs(batch)
        out["init"] = {"max_abs_vlmtl_minus_peft": max_diff(vl0, peft0),
                       "max_abs_peft_minus_base": max_diff(peft0, base), "max_abs_base": float(base.abs().max())}
        # Every task's adapter equal to PEFT's, PEFT's B random: U_t = scaling * B for every t. PEFT 0.21
        # adds the LoRA of an nn.MultiheadAttention's out_proj twice in its forward (huggingface/peft#3774,
        # open): those B stay zero here, and the ``mha_out_proj`` entry measures that separately.
        mha_out = mha_out_proj_keys(peft_b.root)
        g = torch.Generator().manual_seed(args.seed + 1)
        for key, p in p_layers.items():
            if abs(p.scaling["default"] - v_layers[key].scaling) > 1e-12:
                raise RuntimeError(f"{key}: PEFT scaling {p.scaling['default']} != vlmtl {v_layers[key].scaling}")
            b = p.lora_B["default"].weight
            b.copy_(torch.zeros_like(b) if key in mha_out else torch.randn(b.shape, generator=g).to(b) * 0.05)
        copy_peft_adapters(p_layers, v_layers)
        with peft_b.model.disable_adapter():
            base = peft_b.outputs(batch)
        peft1 = peft_b.outputs(batch)
        recorder = RoutingRecorder(vl_b.root)
        vl1 = vl_b.outputs(batch)
        out["routing"] = recorder.remove()
        out["equal_adapters"] = {"max_abs_vlmtl_minus_peft": max_diff(vl1, peft1),
                                 "max_abs_peft_minus_base": max_diff(peft1, base),
                                 "max_abs_peft": float(peft1.abs().max()), "mha_out_proj_b_zero": len(mha_out)}
        if mha_out:  # out_proj B random too: vlmtl with B, and with 2·B (what PEFT 0.21 applies)
            for key in mha_out:
                b = p_layers[key].lora_B["default"].weight
                b.copy_(torch.randn(b.shape, generator=g).to(b) * 0.05)
            copy_peft_adapters(p_layers, v_layers)
            peft2, vl2 = peft_b.outputs(batch), vl_b.outputs(batch)
            copy_peft_adapters(p_layers, v_layers, out_proj_factor={k: 2.0 for k in mha_out})
            vl2x = vl_b.outputs(batch)
            import peft

            out["mha_out_proj"] = {"layers": len(mha_out), "peft": peft.__version__,
                                   "max_abs_vlmtl_minus_peft": max_diff(vl2, peft2),
                                   "max_abs_vlmtl_2x_out_proj_minus_peft": max_diff(vl2x, peft2),
                                   "max_abs_peft_minus_base": max_diff(peft2, base)}
            copy_peft_adapters(p_layers, v_layers)
        # Per-task transforms: the mixed batch's rows must equal single-task runs of their task.
        for layer in v_layers.values():
            scale = 1.0 + torch.arange(layer.num_tasks, dtype=layer.Lambda.dtype, device=layer.Lambda.device)
            layer.Lambda.mul_(scale.view(-1, 1, 1))
        mixed = vl_b.outputs(batch)
        single = [vl_b.outputs(batch, t) for t in range(args.tasks)]
        rows = torch.stack([single[int(t)][i] for i, t in enumerate(ids.tolist())])
        pairs = [max_diff(single[s], single[t]) for s in range(args.tasks) for t in range(s + 1, args.tasks)]
        out["per_task"] = {"max_abs_mixed_minus_single_task": max_diff(mixed, rows),
                           "min_task_to_task_max_abs": min(pairs) if pairs else None}
    return out


# --------------------------------------------------------------------------- training child
def top_ops(prof, n: int) -> list[dict]:
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1000, "total_ms": e.cpu_time_total / 1000,
             "calls": e.count} for e in events]


def train_child(args, bench: str, variant: str, round_index: int) -> dict:
    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} given but CUDA is not available")
    built = BUILDERS[bench](args, variant)
    built.model.train()
    params = trainable_check(built, variant)
    optimizer = torch.optim.AdamW(params, lr=1e-4) if args.optimizer == "adamw" else None

    def step(b: dict, optimize: bool = True) -> tuple[float, float]:
        """(wall, CPU) seconds of one step."""
        for p in params:  # zero_grad(set_to_none=True): the step allocates the gradients
            p.grad = None
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = built.loss(b)
        loss.backward()
        if optimizer is not None and optimize:
            optimizer.step()
        sync(device)
        elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        if not torch.isfinite(loss):
            raise RuntimeError(f"{variant}: loss is not finite ({loss.item()})")
        return elapsed

    rows = batch_rows(args, bench)
    recorder = RoutingRecorder(built.root) if variant == "mtl_lora" else None
    step(built.batch(rows if bench == "llava" else min(rows, args.tasks), True), optimize=False)  # warm-up
    routing = recorder.remove() if recorder else None
    batch = built.batch(rows)
    for p in params:
        p.grad = None
    release_freed_memory()
    result: dict = {"variant": variant, "round": round_index, "routing": routing}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    rss_before = rss_bytes()
    hwm_reset = reset_hwm()
    result["memory_step_s"] = step(batch)[0]
    hwm = hwm_bytes() if hwm_reset else None
    peak_rss = hwm if hwm is not None else maxrss_bytes()
    result.update(rss_before_bytes=rss_before, peak_rss_bytes=peak_rss, rss_peak_source="VmHWM" if hwm else "ru_maxrss")
    if cuda:
        result.update(memory_kind="cuda_allocated", before_bytes=before,
                      peak_bytes=torch.cuda.max_memory_allocated(device))
    else:
        result.update(memory_kind="rss", before_bytes=rss_before, peak_bytes=peak_rss)
    result["increment_bytes"] = result["peak_bytes"] - result["before_bytes"]
    times = [step(batch) for _ in range(args.steps)]
    result["step_times_s"] = [t[0] for t in times]
    result["step_cpu_times_s"] = [t[1] for t in times]
    result["step_s"] = statistics.median(result["step_times_s"])
    result["step_cpu_s"] = statistics.median(result["step_cpu_times_s"])
    if args.profile and round_index == 0:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            step(batch)
        result["top_ops"] = top_ops(prof, args.profile)
    result["trainable_parameters"] = sum(p.numel() for p in params)
    result["parameters"] = sum(p.numel() for p in built.model.parameters())
    result["adapted_modules"] = len(adapted_names(built, variant))
    result["threads"] = torch.get_num_threads()
    result["info"] = built.info
    return result


# --------------------------------------------------------------------------- merged child
def held_bytes(model) -> int:
    """Bytes of every parameter and buffer (shared storage once) plus the original weights merged
    adapter layers keep for an exact unmerge."""
    from vlmtl.adapters import AdapterLayer

    storages: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    for m in model.modules():
        if isinstance(m, AdapterLayer) and m._unmerged_weight is not None:
            s = m._unmerged_weight.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())


def merged_child(args, backbone: str) -> dict:
    from contextlib import nullcontext

    import torch

    from vlmtl.adapters import MTLLoRALinear, merge, merge_and_unload, use_tasks

    device = torch.device(args.device)
    task = 1 % args.tasks
    base = BUILDERS[backbone](args, "base")
    vl = BUILDERS[backbone](args, "mtl_lora")
    g = torch.Generator().manual_seed(args.seed + 2)
    with torch.no_grad():  # trained-looking adapters, so merging changes the weights
        for layer in vl.root.modules():
            if isinstance(layer, MTLLoRALinear):
                layer.B.copy_(torch.randn(layer.B.shape, generator=g).to(layer.B) * 0.02)
                layer.Lambda.add_(torch.randn(layer.Lambda.shape, generator=g).to(layer.Lambda) * 0.1)
    for b in (base, vl):
        b.model.eval()
    batch = vl.batch(batch_rows(args, backbone))
    with torch.no_grad():
        reference = vl.outputs(batch, task)  # unmerged, routed to the task
        merge(vl.root, task)
        merged_out = vl.outputs(batch, task)
        unloaded_model = copy.deepcopy(vl.model)
    unloaded_root = unloaded_model.backbone if backbone == "clip" else unloaded_model
    merge_and_unload(unloaded_root, task)

    def forward_fn(model, routed: bool) -> Callable[[], object]:
        """One forward of ``model`` for the task, as a user serving it calls it."""
        if backbone == "clip":  # MultiTaskCLIP: task_ids route where there are routed layers
            def run_clip():
                image = model.encode_image(batch["images"], task_ids=task)
                return torch.cat([image, model.encode_text(batch["tokens"], task_ids=task)], dim=-1)
            return run_clip

        def run_decoder():
            with use_tasks(model, task) if routed else nullcontext():
                return model(input_ids=batch["input_ids"], use_cache=False).logits
        return run_decoder

    fns = {"base": forward_fn(base.model, False), "merge": forward_fn(vl.model, True),
           "merge_and_unload": forward_fn(unloaded_model, False)}
    with torch.no_grad():
        unloaded_out = fns["merge_and_unload"]()
    scale = float(reference.abs().max())
    result: dict = {
        "task": task, "info": vl.info,
        "max_abs_merge_minus_unmerged": max_diff(merged_out, reference),
        "max_abs_unload_minus_unmerged": max_diff(unloaded_out, reference), "max_abs_output": scale,
        "held_bytes": {"base": held_bytes(base.model), "merge": held_bytes(vl.model),
                       "merge_and_unload": held_bytes(unloaded_model)},
    }
    names = list(fns)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    per_round_cpu: dict[str, list[float]] = {n: [] for n in names}
    steps: dict[str, list[list[float]]] = {n: [] for n in names}
    with torch.no_grad():
        for fn in fns.values():  # warm-up
            fn()
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            times: dict[str, list[float]] = {n: [] for n in names}
            cpu_times: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(args.steps):
                for name in order:
                    sync(device)
                    start, cpu_start = time.perf_counter(), time.process_time()
                    fns[name]()
                    sync(device)
                    times[name].append(time.perf_counter() - start)
                    cpu_times[name].append(time.process_time() - cpu_start)
            for name in names:
                per_round[name].append(statistics.median(times[name]))
                per_round_cpu[name].append(statistics.median(cpu_times[name]))
                steps[name].append(times[name])
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            result["top_ops"] = {}
            for name, fn in fns.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn()
                result["top_ops"][name] = top_ops(prof, args.profile)
    result["per_round_s"] = per_round
    result["per_round_cpu_s"] = per_round_cpu
    result["step_times_s"] = steps
    result["threads"] = torch.get_num_threads()
    return result


# --------------------------------------------------------------------------- processes
def _child_entry(conn, fn, args, fn_args) -> None:
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        conn.send(("ok", fn(args, *fn_args)))
    except BaseException:  # noqa: BLE001 - reported to the parent with its traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def in_fresh_process(fn, args, *fn_args) -> dict:
    """``fn(args, *fn_args)`` in a process forked from this one (which has imported the libraries
    but computed nothing, so the child starts with a fresh allocator and thread pool)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(send, fn, args, fn_args))
    proc.start()
    send.close()
    try:
        if not recv.poll(args.timeout):
            proc.kill()
            raise TimeoutError(f"{fn.__name__}{fn_args} took over {args.timeout} s")
        status, payload = recv.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"{fn.__name__}{fn_args} died (exit code {proc.exitcode})") from None
    finally:
        recv.close()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__}{fn_args} failed:\n{payload}")
    return payload


# --------------------------------------------------------------------------- summaries and reports
def machine(args) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"cpu": cpu_model(), "nproc": affinity, "cpu_count": os.cpu_count(), "device": args.device,
            "threads": args.threads, **versions()}


def header(doc: dict) -> list[str]:
    m = doc["machine"]
    return [
        f"command: `{doc['command']}`",
        f"machine: {m['cpu']}, nproc {m['nproc']}, {doc['threads']} torch thread(s), device {m['device']}; "
        f"torch {m['torch']}, peft {m['peft']}, transformers {m['transformers']}, open_clip {m['open_clip']}, "
        f"python {m['python']}",
    ]


def verdict(value: float, target: float) -> str:
    return f"{'met' if value <= target else 'MISSED'} ({value:.3f} ≤ {target:.2f})"


def check_lines(check: dict | None) -> list[str]:
    if not check:
        return ["check: skipped (--no-check)"]
    i, e, t, r = check["init"], check["equal_adapters"], check["per_task"], check["routing"]
    lines = [
        f"check (forward, {check['rows']} rows, task ids {check['task_ids']}): both adapt the same "
        f"{check['adapted_modules']} modules; at init max|vlmtl−PEFT| = {i['max_abs_vlmtl_minus_peft']:.2e}, "
        f"max|PEFT−base| = {i['max_abs_peft_minus_base']:.2e} (outputs up to {i['max_abs_base']:.2e}); every task's "
        f"adapter = PEFT's (random B): max|vlmtl−PEFT| = {e['max_abs_vlmtl_minus_peft']:.2e} while the adapters move "
        f"the output by max|PEFT−base| = {e['max_abs_peft_minus_base']:.2e} (out_proj B of {e['mha_out_proj_b_zero']} "
        f"MHA left at zero, see below); routing: "
        f"{r['layers_mixed_all_tasks']}/{r['routed_layers']} routed layers saw a mixed batch of tasks "
        f"{r['tasks_seen']}; with per-task Λ the mixed rows equal single-task runs to "
        f"{t['max_abs_mixed_minus_single_task']:.2e} and tasks differ by ≥ {t['min_task_to_task_max_abs']:.2e}",
    ]
    if check.get("mha_out_proj"):
        m = check["mha_out_proj"]
        single, double = m["max_abs_vlmtl_minus_peft"], m["max_abs_vlmtl_2x_out_proj_minus_peft"]
        what = ("applies the LoRA of nn.MultiheadAttention's out_proj twice in its forward (huggingface/peft#3774)"
                if double < single else "applies the out_proj LoRA of nn.MultiheadAttention once")
        lines.append(f"PEFT {m.get('peft', '')} {what}: with those {m['layers']} B random too, max|vlmtl−PEFT| = "
                     f"{single:.2e}, and {double:.2e} with vlmtl's out_proj B doubled (the cost is the same)")
    return lines


def top_ops_table(tops: dict[str, list[dict]], labels: dict[str, str]) -> list[str]:
    names = list(tops)
    by_op: dict[str, dict[str, dict]] = {}
    for name in names:
        for row in tops[name]:
            by_op.setdefault(row["op"], {})[name] = row
    order = sorted(by_op, key=lambda op: -max(r["self_ms"] for r in by_op[op].values()))
    lines = ["| op | " + " | ".join(f"{labels[n]}: self ms (calls)" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for op in order:
        cells = [f"{by_op[op][n]['self_ms']:.1f} ({by_op[op][n]['calls']})" if n in by_op[op] else "–"
                 for n in names]
        lines.append(f"| `{op}` | " + " | ".join(cells) + " |")
    return lines


def label(variant: str, args) -> str:
    return LABELS[variant].format(tasks=args.tasks)


def describe_training(bench: str, args, info: dict) -> str:
    step = ("forward + loss + backward + AdamW step (lr 1e-4) on the trainable parameters" if args.optimizer == "adamw"
            else "forward + loss + backward (no optimizer step)")
    if bench == "clip":
        model = f"open_clip {info['model']} (random weights), both towers adapted (attn in_proj+out_proj, mlp.c_fc, " \
                f"mlp.c_proj of every block), batch {info['batch_size']} at {info['image_size']}² + " \
                f"{info['context_length']} text tokens, CLIP InfoNCE loss"
    else:
        model = (f"LlamaForCausalLM {info['layers']} layer(s), hidden {info['hidden']}, MLP {info['intermediate']}, "
                 f"{info['heads']} heads, vocab {info['vocab']} (random weights, no vision tower, attention "
                 f"{info['attn_implementation']}), q/k/v/o/gate/up/down adapted, batch {info['batch_size']} x "
                 f"{info['seq']} tokens, causal LM loss")
    return (f"setup: {model}; r={args.r}, alpha={args.alpha}, MTL-LoRA n_up=3, τ=0.1, full Λ, {args.tasks} tasks "
            f"(per-sample ids cycling 0..{args.tasks - 1}); step = {step}; base weights frozen, {args.dtype}")


def report_training(doc: dict, args) -> str:
    cuda = doc["memory_kind"] == "cuda_allocated"
    mem = "step peak allocated − allocated before (MiB)" if cuda else "step peak RSS − RSS before (MiB)"
    peak = "peak allocated (MiB)" if cuda else "peak RSS (MiB)"
    lines = [f"### {doc['bench']}: whole-model training step, vlmtl vs PEFT LoRA", "", *header(doc),
             describe_training(doc["bench"], args, doc["info"]),
             f"median (min–max) of {doc['rounds']} interleaved rounds, one forked process per variant per round, "
             f"{args.steps} timed steps per process (after a warm-up step and the memory step); "
             f"wall {doc['wall_s']:.0f} s",
             "",
             f"| variant | trainable params | step time (s) | time / PEFT | CPU time (s) | CPU time / PEFT | {mem} "
             f"| memory / PEFT | {peak} | peak / PEFT |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v in doc["variants"]:
        r, q = doc["results"][v], doc["ratios"][v]
        lines.append(f"| {label(v, args)} | {doc['trainable_parameters'][v]:,} | {spread(r['step_s'], fmt='{:.2f}')} | "
                     f"{spread(q['step_s'], fmt='{:.3f}')} | {spread(r['step_cpu_s'], fmt='{:.2f}')} | "
                     f"{spread(q['step_cpu_s'], fmt='{:.3f}')} | {spread(r['increment_bytes'], MIB)} | "
                     f"{spread(q['increment'], fmt='{:.3f}')} | {spread(r['peak_bytes'], MIB)} | "
                     f"{spread(q['peak'], fmt='{:.3f}')} |")
    lines.append("")
    for v in doc["variants"][1:]:
        q = doc["ratios"][v]
        lines.append(f"targets for {label(v, args)} (≤ 1.10× PEFT, medians): time "
                     f"{verdict(q['step_s']['median'], TARGETS['time'])} (CPU time "
                     f"{verdict(q['step_cpu_s']['median'], TARGETS['time'])}), memory "
                     f"{verdict(q['increment']['median'], TARGETS['memory'])}")
    lines += ["", *check_lines(doc["check"])]
    if doc.get("top_ops"):
        lines += ["", "top ops by self CPU time, one profiled step (round 1):", "",
                  *top_ops_table(doc["top_ops"], {v: v for v in doc["top_ops"]})]
    return "\n".join(lines)


def report_merged(doc: dict, args) -> str:
    lines = ["### merged: one-task merged inference vs the base model (forward only)", "", *header(doc),
             f"forward only (torch.no_grad, eval), {args.dtype}; MTL-LoRA r={args.r} with random B and Λ merged for "
             f"one task; median (min–max) over {doc['rounds']} rounds of the per-round median of {args.steps} "
             f"forwards per variant, interleaved step by step in one forked process per backbone; wall "
             f"{doc['wall_s']:.0f} s", ""]
    for backbone, res in doc["backbones"].items():
        info = res["info"]
        what = (f"open_clip {info['model']}, image + text tower, batch {info['batch_size']} at {info['image_size']}²"
                if backbone == "clip" else
                f"LlamaForCausalLM {info['layers']} layer(s), hidden {info['hidden']}, batch {info['batch_size']} x "
                f"{info['seq']} tokens")
        lines += [f"{backbone}: {what}; merged outputs equal the unmerged task-{res['task']} outputs to "
                  f"{res['max_abs_merge_minus_unmerged']:.2e} (merge) / {res['max_abs_unload_minus_unmerged']:.2e} "
                  f"(merge_and_unload), outputs up to {res['max_abs_output']:.2e}", "",
                  "| variant | forward (s) | time / base | CPU time (s) | CPU time / base | tensors held (MiB) "
                  "| held / base |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for v in res["variants"]:
            lines.append(f"| {label(v, args)} | {spread(res['results'][v], fmt='{:.3f}')} | "
                         f"{spread(res['ratios'][v], fmt='{:.3f}')} | {spread(res['results_cpu'][v], fmt='{:.3f}')} | "
                         f"{spread(res['ratios_cpu'][v], fmt='{:.3f}')} | {res['held_bytes'][v] / MIB:.1f} | "
                         f"{res['held_bytes'][v] / res['held_bytes']['base']:.3f} |")
        q, c, target = res["ratios"], res["ratios_cpu"], TARGETS["merged_time"]
        lines += ["", f"target (≤ 1.02× base, medians): merge {verdict(q['merge']['median'], target)} (CPU time "
                  f"{verdict(c['merge']['median'], target)}), merge_and_unload "
                  f"{verdict(q['merge_and_unload']['median'], target)} (CPU time "
                  f"{verdict(c['merge_and_unload']['median'], target)})", ""]
        if res.get("top_ops"):
            lines += [f"{backbone}: top ops by self CPU time, one profiled forward:", "",
                      *top_ops_table(res["top_ops"], {v: v for v in res["top_ops"]}), ""]
    return "\n".join(lines).rstrip()


def command_line() -> str:
    return " ".join(["python", "scripts/bench_models.py", *sys.argv[1:]])


def run_training(args, bench: str) -> dict:
    start = time.perf_counter()
    variants = ["peft", *args.variants]
    check = None if args.no_check else in_fresh_process(check_child, args, bench)
    raw: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            res = in_fresh_process(train_child, args, bench, v, r)
            raw[v].append(res)
            print(f"{bench} round {r + 1}/{args.rounds} {v}: step {res['step_s']:.3f} s, memory "
                  f"{res['increment_bytes'] / MIB:.1f} MiB", file=sys.stderr, flush=True)
    keys = ("step_s", "step_cpu_s", "memory_step_s", "increment_bytes", "peak_bytes", "before_bytes")
    results = {v: {k: summary([float(x[k]) for x in raw[v]]) for k in keys} for v in variants}
    def per_variant(v: str, key: str) -> list[float]:
        return [float(x[key]) for x in raw[v]]

    ratios = {v: {"step_s": ratio(per_variant(v, "step_s"), per_variant("peft", "step_s")),
                  "step_cpu_s": ratio(per_variant(v, "step_cpu_s"), per_variant("peft", "step_cpu_s")),
                  "increment": ratio(per_variant(v, "increment_bytes"), per_variant("peft", "increment_bytes")),
                  "peak": ratio(per_variant(v, "peak_bytes"), per_variant("peft", "peak_bytes"))}
              for v in variants}
    first = raw["peft"][0]
    doc = {
        "bench": bench, "command": command_line(), "machine": machine(args), "threads": first["threads"],
        "device": args.device, "dtype": args.dtype, "memory_kind": first["memory_kind"], "rounds": args.rounds,
        "steps": args.steps, "optimizer": args.optimizer, "r": args.r, "alpha": args.alpha, "tasks": args.tasks,
        "baseline": "peft", "variants": variants, "info": first["info"],
        "trainable_parameters": {v: raw[v][0]["trainable_parameters"] for v in variants},
        "parameters": {v: raw[v][0]["parameters"] for v in variants},
        "adapted_modules": {v: raw[v][0]["adapted_modules"] for v in variants},
        "routing": {v: [x["routing"] for x in raw[v]] for v in variants if v == "mtl_lora"},
        "results": results, "ratios": ratios,
        "ratio_time": {v: ratios[v]["step_s"]["median"] for v in variants},
        "ratio_cpu_time": {v: ratios[v]["step_cpu_s"]["median"] for v in variants},
        "ratio_memory": {v: ratios[v]["increment"]["median"] for v in variants},
        "targets": {"time": TARGETS["time"], "memory": TARGETS["memory"]},
        "met": {v: {"time": ratios[v]["step_s"]["median"] <= TARGETS["time"],
                    "cpu_time": ratios[v]["step_cpu_s"]["median"] <= TARGETS["time"],
                    "memory": ratios[v]["increment"]["median"] <= TARGETS["memory"]} for v in variants[1:]},
        "check": check, "raw": raw,
        "top_ops": {v: raw[v][0]["top_ops"] for v in variants if "top_ops" in raw[v][0]},
    }
    doc["wall_s"] = time.perf_counter() - start
    return doc


def run_merged(args) -> dict:
    start = time.perf_counter()
    doc: dict = {"bench": "merged", "command": command_line(), "machine": machine(args), "device": args.device,
                 "dtype": args.dtype, "rounds": args.rounds, "steps": args.steps, "r": args.r, "tasks": args.tasks,
                 "baseline": "base", "targets": {"time": TARGETS["merged_time"]}, "backbones": {}}
    for backbone in args.merged_backbones:
        res = in_fresh_process(merged_child, args, backbone)
        variants = list(res["per_round_s"])
        res["variants"] = variants
        res["results"] = {v: summary(res["per_round_s"][v]) for v in variants}
        res["ratios"] = {v: ratio(res["per_round_s"][v], res["per_round_s"]["base"]) for v in variants}
        res["results_cpu"] = {v: summary(res["per_round_cpu_s"][v]) for v in variants}
        res["ratios_cpu"] = {v: ratio(res["per_round_cpu_s"][v], res["per_round_cpu_s"]["base"]) for v in variants}
        res["ratio_time"] = {v: res["ratios"][v]["median"] for v in variants}
        res["ratio_cpu_time"] = {v: res["ratios_cpu"][v]["median"] for v in variants}
        res["met"] = {v: res["ratios"][v]["median"] <= TARGETS["merged_time"] for v in variants[1:]}
        res["met_cpu"] = {v: res["ratios_cpu"][v]["median"] <= TARGETS["merged_time"] for v in variants[1:]}
        doc["backbones"][backbone] = res
        doc["threads"] = res["threads"]
        print(f"merged {backbone}: " + ", ".join(f"{v} {res['results'][v]['median']:.3f} s" for v in variants),
              file=sys.stderr, flush=True)
    doc["wall_s"] = time.perf_counter() - start
    return doc


def write(doc: dict, text: str, args, what: str) -> Path:
    out = args.output_dir / f"bench_models_{what}.json"
    write_json(out, doc)
    out.with_suffix(".md").write_text(text + "\n")
    return out


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=[*BENCHES, "all"], help="the benchmark (all: clip, llava, merged in turn)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the embedded tiny CLIP, a 64-wide decoder)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per process (training; default 2) / forwards per variant per round "
                             "(merged; default 3)")
    parser.add_argument("--variants", default="mtl_lora",
                        help="vlmtl variants measured against PEFT, comma-separated: mtl_lora, lora")
    parser.add_argument("--tasks", type=int, default=4, help="number of tasks (the batch mixes all of them)")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--optimizer", choices=["adamw", "none"], default="adamw")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (0: torch's default); 1 by default: on a small shared CPU "
                             "box more threads mostly wait at OpenMP barriers")
    parser.add_argument("--clip-model", default=None, help="open_clip model name, or 'default' (embedded tiny CLIP)")
    parser.add_argument("--clip-batch", type=int, default=None)
    parser.add_argument("--llava-layers", type=int, default=None)
    parser.add_argument("--llava-hidden", type=int, default=None)
    parser.add_argument("--llava-intermediate", type=int, default=None)
    parser.add_argument("--llava-heads", type=int, default=None)
    parser.add_argument("--llava-seq", type=int, default=None)
    parser.add_argument("--llava-vocab", type=int, default=None)
    parser.add_argument("--llava-batch", type=int, default=None)
    parser.add_argument("--merged-backbones", default="clip,llava", help="comma-separated: clip, llava")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="top N ops of one profiled step")
    parser.add_argument("--no-check", action="store_true", help="skip the equal-outputs / routing check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--output-dir", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.variants = [v for v in args.variants.split(",") if v]
    if not args.variants or any(v not in VARIANTS[1:] for v in args.variants) or len(set(args.variants)) != len(
            args.variants):
        parser.error(f"--variants takes distinct names from {', '.join(VARIANTS[1:])}")
    args.merged_backbones = [b for b in args.merged_backbones.split(",") if b]
    if not args.merged_backbones or any(b not in BUILDERS for b in args.merged_backbones):
        parser.error("--merged-backbones takes clip and/or llava")
    if args.rounds < 1 or args.tasks < 2:
        parser.error("--rounds must be at least 1 and --tasks at least 2")
    if args.clip_batch < args.tasks or args.llava_batch < args.tasks:
        parser.error("the batch must hold at least one sample per task")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Import everything before forking: the children start with the libraries loaded but nothing computed.
    import open_clip  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401

    import vlmtl.models  # noqa: F401

    benches = list(BENCHES) if args.what == "all" else [args.what]
    for bench in benches:
        steps_given = args.steps
        if args.steps is None:
            args.steps = 3 if bench == "merged" else 2
        if bench == "merged":
            doc = run_merged(args)
            text = report_merged(doc, args)
        else:
            doc = run_training(args, bench)
            text = report_training(doc, args)
        out = write(doc, text, args, bench)
        print(text)
        print(f"\nwrote {out} and {out.with_suffix('.md')} ({doc['wall_s']:.0f} s)\n", flush=True)
        args.steps = steps_given


if __name__ == "__main__":
    main()
