"""Task streams through an MTLoRA MLP (``fc1 → GELU → fc2``) without their wide hidden tensors.

In an MTLoRA block each task stream runs the MLP as ``m_t = W₂ g_s + b₂ + s·B₂ₜ A₂ₜ gelu(h_t)``
with ``h_t = W₁ n_s + b₁ + s·B₁ₜ A₁ₜ n_t``: the frozen weights see the shared stream, only the
task's low-rank path sees its own input ``n_t``. Composed from layers, every task materialises
``h_t`` and ``gelu(h_t)`` (four times the model width; 38 MB each at Swin-T's first stage, batch
2) in forward, and in backward their gradients and the recomputed activation, although each is
only ever read through the rank-``r_task`` projections around it.

``mlp_task_streams`` computes the same thing in row chunks: ``_TaskStreamHidden`` maps the shared
pre-activation ``W₁ n_s + b₁`` (kept once for all tasks) and the tasks' ``A₁ₜ n_t`` (``r_task``
columns) to ``A₂ₜ gelu(h_t)`` (``r_task`` columns), building each ``h_t`` a cache-sized chunk at a
time, and recomputes the chunks in backward. Same values and gradients (up to float summation
order); no wide per-task tensor is allocated, and only one is kept (the shared pre-activation).
On Swin-T MTLoRA at 448² (batch 2, one thread) the training step took 0.85× the CPU time it
took with the composed layers when it was added (``scripts/bench_swin_ablation.py`` at commit
7fa1915: 4.74 s against 5.61 s; the README has the current run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MTLoRALinear, _add_lora, _add_low_rank

_CHUNK_ELEMENTS = 1 << 17  # a chunk's (rows × hidden) floats: 512 KiB in fp32, a few buffers fit in L2


def _gelu_backward(grad: torch.Tensor, h: torch.Tensor, approximate: str, out: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu_backward.grad_input(grad, h, approximate=approximate, grad_input=out)


class _TaskStreamHidden(torch.autograd.Function):
    """``z[t] = gelu(base + y[t] @ up[t]ᵀ) @ down[t]ᵀ`` for every task t, in row chunks.

    base (N, H): the shared pre-activation; y (T, N, r): each task's down-projected input;
    up (T, H, r): the scaled first up-projections; down (T, r2, H): the second down-projections."""

    @staticmethod
    def forward(ctx, base, y, up, down, approximate: str, rows: int):
        tasks, n, hidden = y.shape[0], base.shape[0], base.shape[1]
        z = base.new_empty(tasks, n, down.shape[1])
        h = base.new_empty(min(rows, n), hidden)
        g = torch.empty_like(h)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            hc, gc = h[: stop - start], g[: stop - start]
            for t in range(tasks):
                torch.addmm(base[start:stop], y[t, start:stop], up[t].t(), out=hc)
                torch._C._nn.gelu(hc, approximate=approximate, out=gc)
                torch.mm(gc, down[t].t(), out=z[t, start:stop])
        ctx.save_for_backward(base, y, up, down)
        ctx.approximate, ctx.rows = approximate, rows
        return z

    @staticmethod
    def backward(ctx, grad_z):
        base, y, up, down = ctx.saved_tensors
        tasks, n, hidden = y.shape[0], base.shape[0], base.shape[1]
        rows = ctx.rows
        grad_z = grad_z.contiguous()
        need_base, need_y, need_up, need_down = ctx.needs_input_grad[:4]
        grad_base = torch.empty_like(base) if need_base else None
        grad_y = torch.empty_like(y) if need_y else None
        grad_up = torch.zeros_like(up) if need_up else None
        grad_down = torch.zeros_like(down) if need_down else None
        h = base.new_empty(min(rows, n), hidden)
        g, dg, dh = torch.empty_like(h), torch.empty_like(h), torch.empty_like(h)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            c = stop - start
            hc, gc, dgc, dhc = h[:c], g[:c], dg[:c], dh[:c]
            for t in range(tasks):
                yt, gzt = y[t, start:stop], grad_z[t, start:stop]
                torch.addmm(base[start:stop], yt, up[t].t(), out=hc)  # recompute h_t
                if need_down:
                    torch._C._nn.gelu(hc, approximate=ctx.approximate, out=gc)
                    grad_down[t].addmm_(gzt.t(), gc)
                torch.mm(gzt, down[t], out=dgc)
                _gelu_backward(dgc, hc, ctx.approximate, dhc)
                if need_base:
                    if t == 0:
                        grad_base[start:stop].copy_(dhc)
                    else:
                        grad_base[start:stop].add_(dhc)
                if need_y:
                    torch.mm(dhc, up[t], out=grad_y[t, start:stop])
                if need_up:
                    grad_up[t].addmm_(dhc.t(), yt)
        return grad_base, grad_y, grad_up, grad_down, None, None


def _fusable(fc1: nn.Module, act: nn.Module, fc2: nn.Module, x: torch.Tensor, task_inputs) -> bool:
    if not (isinstance(fc1, MTLoRALinear) and isinstance(fc2, MTLoRALinear) and isinstance(act, nn.GELU)):
        return False
    if fc1.merged or fc2.merged or not fc1.num_tasks or fc1.num_tasks != fc2.num_tasks:
        return False
    if task_inputs is None or len(task_inputs) != fc1.num_tasks:
        return False
    tensors = (x, fc1.A, fc1.task_A, fc1.task_B, fc2.task_A, fc2.task_B, fc1.base_layer.weight)
    # A CPU path: on GPUs nothing is paged in per allocation and chunk loops launch many kernels.
    return (x.device.type == "cpu" and all(t.dtype == x.dtype for t in tensors)
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def composed_mlp_task_streams(
    fc1: MTLoRALinear, act: nn.Module, fc2: MTLoRALinear, x: torch.Tensor, task_inputs: list[torch.Tensor] | None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The same MLP composed from the layers' ``forward_streams``: what the fused path must equal."""
    h_s, h_tasks = fc1.forward_streams(x, task_inputs)
    return fc2.forward_streams(act(h_s), [act(h) for h in h_tasks])


def mlp_task_streams(
    fc1: MTLoRALinear, act: nn.Module, fc2: MTLoRALinear, x: torch.Tensor, task_inputs: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``fc2(act(fc1(·)))`` on the shared stream ``x`` and every task's stream, as
    ``composed_mlp_task_streams`` computes them; fused (see the module docstring) where it can be
    (CPU, GELU, unmerged layers)."""
    if not _fusable(fc1, act, fc2, x, task_inputs):
        return composed_mlp_task_streams(fc1, act, fc2, x, task_inputs)
    fc1.check_streams(x, task_inputs)
    base = fc1.base_layer(x)
    shared = act(_add_lora(base, x, fc1.A, fc1.B, fc1.scale, fc1.dropout))
    y = torch.stack([F.linear(u, a) for u, a in zip(task_inputs, fc1.task_A)]).flatten(1, -2)  # (T, N, r)
    hidden = base.shape[-1]
    rows = max(16, _CHUNK_ELEMENTS // hidden)
    z = _TaskStreamHidden.apply(base.reshape(-1, hidden), y, fc1.task_B * fc1.scale, fc2.task_A,
                                act.approximate, rows)
    base2 = fc2.base_layer(shared)
    out = _add_lora(base2, shared, fc2.A, fc2.B, fc2.scale, fc2.dropout)
    streams = [_add_low_rank(base2, z[t], (b * fc2.scale).t()) for t, b in enumerate(fc2.task_B)]
    return out, streams
