"""LoRADropout: nn.Dropout's distribution and gradient, with a one-byte mask kept for backward."""

from __future__ import annotations

import torch
from torch import nn

from vlmtl.adapters import LoRALinear
from vlmtl.adapters.dropout import LoRADropout


def test_drops_a_fraction_p_and_scales_the_rest():
    torch.manual_seed(0)
    drop = LoRADropout(0.25).train()
    x = torch.rand(200, 500) + 1.0
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.005, dropped
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert torch.equal(drop.eval()(x), x)
    assert isinstance(drop, nn.Dropout)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    drop = LoRADropout(0.5).train()
    x = torch.randn(64, 32, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(64, 32, dtype=torch.float64)
    y = drop(x)
    (y * weight).sum().backward()
    keep = (y != 0).double()
    torch.testing.assert_close(x.grad, keep * weight / 0.5)


def _saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    return total


def test_a_dropped_adapter_input_keeps_a_bool_mask_not_a_float_noise():
    """Against nn.Dropout (float noise kept), the saved tensors shrink by 3 bytes per input element."""
    torch.manual_seed(2)
    layer = LoRALinear(nn.Linear(64, 48).requires_grad_(False), r=4, alpha=8, dropout=0.1).train()
    x = torch.randn(16, 10, 64, requires_grad=True)
    ours = _saved_bytes(layer, x)
    layer.dropout = nn.Dropout(0.1)
    torch_dropout = _saved_bytes(layer, x)
    assert torch_dropout - ours == 3 * x.numel(), (torch_dropout, ours)
