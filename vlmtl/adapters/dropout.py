"""The adapters' input dropout, keeping a one-byte mask for backward.

On CPU, torch's dropout multiplies by a float noise tensor, and autograd keeps that tensor
(4 bytes per element) for backward. An adapter's down-projection keeps the dropped input
anyway, so the float noise doubles what each dropped input costs. ``LoRADropout`` keeps a
bool mask instead: the same distribution (Bernoulli(1 − p), scaled by 1/(1 − p)), a quarter
of the noise's memory. On CUDA torch's fused dropout already keeps a bool mask, and under
``torch.compile`` the compiler plans the memory, so there it is ``nn.Dropout``.

An adapter only reads its dropped input through its down-projection A (r columns), so
``dropout_down_projection`` computes ``A · dropout(x)`` without materialising ``dropout(x)``: on
CPU in training it multiplies ``x`` by a uint8 keep mask (``keep_mask``) a cache-sized chunk of
rows at a time into a reused buffer and projects each chunk, and backward does the same
(``_DroppedDownProjection``). That saves, per adapted layer and step, an input-sized tensor in
forward, its recomputation or storage for A's gradient, and a pass over the input gradient (the
1/(1 − p) scale is applied to the r columns). A uint8 multiply, not ``masked_fill_`` with the
bool mask, because torch's CPU ``masked_fill_`` is slower (in place on 25088 × 384 floats in
chunks of 170 rows, one thread: 17.8 ms against 6.7 ms here).

The mask is drawn from 15-bit random numbers (``drop_mask``): torch's CPU Bernoulli draws one
random number per element through a slow per-element path (about 15 ns each here, more than
the adapter's down-projection costs), where two 15-bit draws come from one 32-bit integer.
The drop probability is therefore ``p`` rounded to a multiple of 2⁻¹⁵ (0.05 becomes
0.049988), well inside the run-to-run noise of any training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .recompute import record

_LANE_BITS = 15  # torch fills int32 with uniform numbers in [0, 2^31): two 16-bit halves of >= 15 random bits
_LANES_MASK = 0x7FFF7FFF  # the low 15 bits of each half
_CHUNK_ELEMENTS = 1 << 16  # a masked chunk's (rows × features) floats: 256 KiB in fp32, cache-resident


def _lanes(numel: int, device: torch.device | str) -> torch.Tensor:
    """``numel`` (or one more) int16 numbers uniform on [0, 2¹⁵), from (numel + 1) // 2 int32 draws."""
    words = torch.empty((numel + 1) // 2, dtype=torch.int32, device=device).random_()
    return words.bitwise_and_(_LANES_MASK).view(torch.int16)


def _threshold(p: float) -> int:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return round(p * 2**_LANE_BITS)


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool mask, each element True (dropped) with probability p rounded to a multiple of
    2⁻¹⁵, from torch's default generator: one int32 draw gives two elements.

    Each int32 draw is uniform on [0, 2³¹); keeping 15 bits of each 16-bit half
    (``& 0x7FFF7FFF``, either byte order) gives two numbers uniform on [0, 2¹⁵), each dropped
    when below k = round(p · 2¹⁵)."""
    k = _threshold(p)
    numel = math.prod(shape)
    return (_lanes(numel, device) < k)[:numel].view(shape)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``~drop_mask(shape, p, device)`` from the same draws (same seed, same mask), as uint8
    ones and zeros: multiplying by it is faster on CPU than ``masked_fill_`` with a bool mask
    (see the module docstring)."""
    k = _threshold(p)
    numel = math.prod(shape)
    return (_lanes(numel, device) >= k)[:numel].view(shape).view(torch.uint8)


def _masked_scale(x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
    return x.mul(scale).masked_fill_(drop, 0.0)  # one pass each; no bool-to-float product


class _BoolMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        ctx.save_for_backward(drop)
        return _masked_scale(x, drop, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return _masked_scale(grad, drop, ctx.scale), None, None


class LoRADropout(nn.Dropout):
    """``nn.Dropout`` whose backward keeps a bool mask on CPU (see the module docstring).
    Under ``recompute_adapter_inputs`` its output is recorded as recomputable from its input
    and the mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or self.p == 0.0 or self.inplace or x.device.type != "cpu"
                or torch.compiler.is_compiling()):
            return super().forward(x)
        drop = drop_mask(x.shape, self.p, x.device)
        scale = 1.0 / (1.0 - self.p)
        out = _BoolMaskDropout.apply(x, drop, scale)
        record(out, _masked_scale, x, drop, scale)
        return out


def project_masked(x: torch.Tensor, keep: torch.Tensor, a: torch.Tensor, rows: int) -> torch.Tensor:
    """``(x ⊙ keep) aᵀ`` for 2-D ``x`` (N, d) and a uint8 ``keep``, a chunk of ``rows`` rows at a
    time through one reused buffer: the masked input never exists whole."""
    n = x.shape[0]
    h = x.new_empty(n, a.shape[0])
    buf = x.new_empty(min(rows, n), x.shape[1])
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        masked = torch.mul(x[start:stop], keep[start:stop], out=buf[: stop - start])
        torch.mm(masked, a.t(), out=h[start:stop])
    return h


def grad_of_masked_projection(grad: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, rows: int) -> torch.Tensor:
    """``gradᵀ (x ⊙ keep)``: the gradient of ``project_masked``'s ``a``, chunked the same way."""
    n = x.shape[0]
    grad_a = x.new_zeros(grad.shape[1], x.shape[1])
    buf = x.new_empty(min(rows, n), x.shape[1])
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        masked = torch.mul(x[start:stop], keep[start:stop], out=buf[: stop - start])
        grad_a.addmm_(grad[start:stop].t(), masked)
    return grad_a


class _DroppedDownProjection(torch.autograd.Function):
    """``h = scale · (x ⊙ keep) Aᵀ`` for 2-D ``x`` (N, d) and a uint8 ``keep`` mask, chunked over
    rows: the dropped input exists only a chunk at a time, in forward and when backward needs it
    for A's gradient."""

    @staticmethod
    def forward(ctx, x, keep, a, scale: float, rows: int):
        ctx.save_for_backward(x, keep, a)
        ctx.scale, ctx.rows = scale, rows
        return project_masked(x, keep, a, rows).mul_(scale)

    @staticmethod
    def backward(ctx, grad_h):
        x, keep, a = ctx.saved_tensors
        grad = grad_h * ctx.scale  # (N, r): the dropout scale on the narrow side
        grad_a = grad_of_masked_projection(grad, x, keep, ctx.rows) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
            for start in range(0, x.shape[0], ctx.rows):
                stop = min(start + ctx.rows, x.shape[0])
                torch.mm(grad[start:stop], a, out=grad_x[start:stop]).mul_(keep[start:stop])
        return grad_x, None, grad_a, None, None


def chunk_rows(d: int) -> int:
    """Rows per masked chunk for a feature width ``d``: a cache-sized chunk."""
    return max(16, _CHUNK_ELEMENTS // max(d, 1))


def projects_without_dropped_input(dropout: nn.Module, x: torch.Tensor, a: torch.Tensor) -> bool:
    """Whether ``dropout_down_projection`` takes its chunked path (no dropped input made)."""
    return (isinstance(dropout, LoRADropout) and dropout.training and 0.0 < dropout.p and not dropout.inplace
            and x.device.type == "cpu" and x.dtype == a.dtype and x.dim() >= 1 and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu"))  # autocast: the composition, in the autocast dtype


def dropout_down_projection(dropout: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``F.linear(dropout(x), a)``: an adapter's down-projection of its dropped-out input.

    With a ``LoRADropout`` training on CPU (same dtype, outside ``torch.compile`` and autocast) the dropped
    input is never materialised (see the module docstring); same mask distribution, values and
    gradients. Otherwise it is exactly ``F.linear(dropout(x), a)``."""
    if not projects_without_dropped_input(dropout, x, a):
        return F.linear(dropout(x).to(a.dtype), a)
    keep = keep_mask(x.shape, dropout.p, x.device)
    d = x.shape[-1]
    h = _DroppedDownProjection.apply(x.reshape(-1, d), keep.view(-1, d), a, 1.0 / (1.0 - dropout.p), chunk_rows(d))
    return h.view(*x.shape[:-1], a.shape[0])
