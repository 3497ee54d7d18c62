"""A frozen linear and its LoRA as one autograd function.

``W x + b + s · B A dropout(x)`` composed from torch ops reads ``x`` twice, through the frozen
product and through the down-projection, so autograd makes two input gradients, each the size
of ``x``, and adds them out of place: two fresh ``x``-sized tensors and a pass over three of
them per adapted layer and step. ``lora_linear`` computes the same forward (the low-rank term
first, with the bias, the frozen product accumulated into it in place) and in backward adds the
low-rank path's input gradient into the frozen path's in place, a cache-sized chunk at a time
when a dropout mask applies. Same values and gradients up to the order of float additions
(tested against the composition).

It runs where the composition would be plain torch ops on CPU or GPU tensors of one dtype,
outside autocast and ``torch.compile`` (the compiler fuses on its own), with the adapter
dropout off or taking ``dropout_down_projection``'s chunked path; ``fuses`` says when.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .dropout import (
    LoRADropout,
    chunk_rows,
    grad_of_masked_projection,
    keep_mask,
    project_masked,
    projects_without_dropped_input,
)


def _dropout_active(dropout: nn.Module | None) -> bool:
    if dropout is None or isinstance(dropout, nn.Identity):
        return False
    return bool(dropout.training and dropout.p > 0)


def fuses(weight: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, dropout: nn.Module | None) -> bool:
    """Whether ``lora_linear`` applies: one dtype, outside autocast and compile, a 2-D or wider
    input, and a dropout that is off or a ``LoRADropout`` on its chunked path."""
    if (x.dim() < 2 or not (x.dtype == weight.dtype == a.dtype == b.dtype) or torch.compiler.is_compiling()
            or torch.is_autocast_enabled(x.device.type)):
        return False
    if not _dropout_active(dropout):
        return True
    return isinstance(dropout, LoRADropout) and projects_without_dropped_input(dropout, x, a)


class _LoRALinear(torch.autograd.Function):
    """``out = x Wᵀ + bias + h (s·B)ᵀ`` with ``h = ds · (x ⊙ keep) Aᵀ`` (``keep`` None: no dropout,
    ``ds`` = 1), for 2-D ``x`` (N, d)."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scale: float, keep, drop_scale: float, rows: int):
        if keep is None:
            h = torch.mm(x, a.t())
        else:
            h = project_masked(x, keep, a, rows).mul_(drop_scale)
        up_t = (b * scale).t().contiguous()  # row-major: the fast orientation for B's gradient on CPU
        out = torch.mm(h, up_t) if bias is None else torch.addmm(bias, h, up_t)
        out.addmm_(x, weight.t())
        ctx.save_for_backward(x, weight, a, b, h, keep)
        ctx.scale, ctx.drop_scale, ctx.rows = scale, drop_scale, rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, a, b, h, keep = ctx.saved_tensors
        need_x, need_w, need_bias, need_a, need_b = ctx.needs_input_grad[:5]
        grad = grad.contiguous()
        grad_h = torch.mm(grad, b).mul_(ctx.scale * ctx.drop_scale)  # (N, r), the dropout scale included
        grad_b = torch.mm(grad.t(), h).mul_(ctx.scale) if need_b else None
        grad_a = None
        if need_a:
            grad_a = torch.mm(grad_h.t(), x) if keep is None else grad_of_masked_projection(grad_h, x, keep, ctx.rows)
        grad_x = None
        if need_x:
            grad_x = torch.mm(grad, weight)
            if keep is None:
                grad_x.addmm_(grad_h, a)
            else:  # += (grad_h A) ⊙ keep, through a cache-sized buffer
                buf = x.new_empty(min(ctx.rows, x.shape[0]), x.shape[1])
                for start in range(0, x.shape[0], ctx.rows):
                    stop = min(start + ctx.rows, x.shape[0])
                    part = torch.mm(grad_h[start:stop], a, out=buf[: stop - start]).mul_(keep[start:stop])
                    grad_x[start:stop].add_(part)
        grad_w = torch.mm(grad.t(), x) if need_w else None
        grad_bias = grad.sum(0) if need_bias else None
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None, None, None


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float,
    dropout: nn.Module | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias) + scale · F.linear(F.linear(dropout(x), a), b)`` where ``fuses``
    holds (the caller checks), as one autograd function (see the module docstring)."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    keep, drop_scale = None, 1.0
    if _dropout_active(dropout):
        keep = keep_mask(x2.shape, dropout.p, x.device)
        drop_scale = 1.0 / (1.0 - dropout.p)
    out = _LoRALinear.apply(x2, weight, bias, a, b, float(scale), keep, drop_scale, chunk_rows(d))
    return out.view(*x.shape[:-1], out.shape[-1])
