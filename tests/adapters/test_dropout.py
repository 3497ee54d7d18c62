"""LoRADropout: nn.Dropout's distribution and gradient, with a one-byte mask kept for backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmtl.adapters import LoRALinear
from vlmtl.adapters.dropout import LoRADropout, drop_mask


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


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_drop_mask_drops_p_rounded_to_a_multiple_of_2_pow_minus_15_in_both_lanes(p):
    """Even and odd positions come from the two halves of one int32 draw, each with its own
    threshold: both must drop the same fraction (a wrong lane threshold fails this)."""
    torch.manual_seed(3)
    n = 4_000_000
    drop = drop_mask((n,), p)
    assert drop.dtype == torch.bool and drop.shape == (n,)
    expected = round(p * 2**15) / 2**15
    tolerance = 5 * (expected * (1 - expected) / (n / 2)) ** 0.5
    for lane in (drop[0::2], drop[1::2]):
        assert abs(lane.float().mean().item() - expected) < tolerance


def test_drop_mask_follows_the_torch_seed_and_any_shape():
    torch.manual_seed(4)
    first = drop_mask((3, 5, 7), 0.3)
    torch.manual_seed(4)
    assert torch.equal(first, drop_mask((3, 5, 7), 0.3))
    assert first.shape == (3, 5, 7) and first.is_contiguous()
    assert not torch.equal(first, drop_mask((3, 5, 7), 0.3))
    assert not drop_mask((10, 10), 0.0).any()


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_drop_mask_refuses_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match="dropout probability"):
        drop_mask((4,), p)
