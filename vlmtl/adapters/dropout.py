"""The adapters' input dropout, keeping a one-byte mask for backward.

On CPU, torch's dropout multiplies by a float noise tensor, and autograd keeps that tensor
(4 bytes per element) for backward. An adapter's down-projection keeps the dropped input
anyway, so the float noise doubles what each dropped input costs. ``LoRADropout`` keeps a
bool mask instead: the same distribution (Bernoulli(1 − p), scaled by 1/(1 − p)), a quarter
of the noise's memory. On CUDA torch's fused dropout already keeps a bool mask, and under
``torch.compile`` the compiler plans the memory, so there it is ``nn.Dropout``.

The mask is drawn from 15-bit random numbers (``drop_mask``): torch's CPU Bernoulli draws one
random number per element through a slow per-element path (about 15 ns each here, more than
the adapter's down-projection costs), where two 15-bit draws come from one 32-bit integer.
The drop probability is therefore ``p`` rounded to a multiple of 2⁻¹⁵ (0.05 becomes
0.049988), well inside the run-to-run noise of any training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .recompute import record

_LANE_BITS = 15  # torch fills int32 with uniform numbers in [0, 2^31): two 16-bit halves of >= 15 random bits
_LANES_MASK = 0x7FFF7FFF  # the low 15 bits of each half


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool mask, each element True (dropped) with probability p rounded to a multiple of
    2⁻¹⁵, from torch's default generator: one int32 draw gives two elements.

    Each int32 draw is uniform on [0, 2³¹); keeping 15 bits of each 16-bit half
    (``& 0x7FFF7FFF``, either byte order) gives two numbers uniform on [0, 2¹⁵), each dropped
    when below k = round(p · 2¹⁵)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    numel = math.prod(shape)
    words = torch.empty((numel + 1) // 2, dtype=torch.int32, device=device).random_()
    lanes = words.bitwise_and_(_LANES_MASK).view(torch.int16)
    drop = lanes < round(p * 2**_LANE_BITS)
    return drop[:numel].view(shape)


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
