"""The adapters' input dropout, keeping a one-byte mask for backward.

On CPU, torch's dropout multiplies by a float noise tensor, and autograd keeps that tensor
(4 bytes per element) for backward. An adapter's down-projection keeps the dropped input
anyway, so the float noise doubles what each dropped input costs. ``LoRADropout`` keeps a
bool mask instead: the same distribution (Bernoulli(1 − p), scaled by 1/(1 − p)), a quarter
of the noise's memory. On CUDA torch's fused dropout already keeps a bool mask, and under
``torch.compile`` the compiler plans the memory, so there it is ``nn.Dropout``.
"""

from __future__ import annotations

import torch
from torch import nn


class _BoolMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.empty(x.shape, dtype=torch.bool, device=x.device).bernoulli_(1.0 - p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return (x * keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None


class LoRADropout(nn.Dropout):
    """``nn.Dropout`` whose backward keeps a bool mask on CPU (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or self.p == 0.0 or self.inplace or x.device.type != "cpu"
                or torch.compiler.is_compiling()):
            return super().forward(x)
        return _BoolMaskDropout.apply(x, self.p)
