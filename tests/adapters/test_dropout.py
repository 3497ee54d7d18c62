"""LoRADropout: nn.Dropout's distribution and gradient, with a one-byte mask kept for backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmtl.adapters import LoRALinear
from vlmtl.adapters.dropout import LoRADropout, drop_mask, keep_mask


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


def test_keep_mask_is_the_complement_of_drop_mask_from_the_same_draws():
    torch.manual_seed(8)
    drop = drop_mask((6, 1001), 0.2)
    torch.manual_seed(8)
    keep = keep_mask((6, 1001), 0.2)
    assert keep.dtype == torch.uint8 and keep.shape == (6, 1001)
    assert torch.equal(keep, (~drop).to(torch.uint8))
    with pytest.raises(ValueError, match="dropout probability"):
        keep_mask((4,), 1.0)


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_drop_mask_refuses_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match="dropout probability"):
        drop_mask((4,), p)


def _down_projection_and_grads(project, x: torch.Tensor, a: torch.Tensor, seed: int):
    x, a = x.detach().clone().requires_grad_(x.requires_grad), a.detach().clone().requires_grad_(a.requires_grad)
    torch.manual_seed(seed)
    h = project(x, a)
    weight = torch.linspace(-1, 1, h.numel(), dtype=h.dtype).view(h.shape)
    (h * weight).sum().backward()
    return h, x.grad, a.grad


@pytest.mark.parametrize("x_grad,a_grad", [(True, True), (False, True), (True, False)])
def test_dropout_down_projection_equals_projecting_the_dropped_input(x_grad, a_grad, monkeypatch):
    """Same seed, same mask: values and both gradients match ``F.linear(dropout(x), a)``, with
    chunks small enough (monkeypatched) that a ragged last chunk is exercised."""
    from vlmtl.adapters import dropout as dropout_module

    monkeypatch.setattr(dropout_module, "_CHUNK_ELEMENTS", 7 * 24)  # 7 rows of 24 features per chunk
    drop = LoRADropout(0.3).train()
    x = torch.randn(5, 9, 24, dtype=torch.float64).requires_grad_(x_grad)
    a = torch.randn(6, 24, dtype=torch.float64).requires_grad_(a_grad)
    fused = _down_projection_and_grads(lambda u, w: dropout_module.dropout_down_projection(drop, u, w), x, a, 5)
    plain = _down_projection_and_grads(lambda u, w: torch.nn.functional.linear(drop(u), w), x, a, 5)
    assert fused[0].shape == (5, 9, 6)
    assert (fused[1] is None) != x_grad and (fused[2] is None) != a_grad
    for ours, reference in zip(fused, plain):
        if reference is None:
            assert ours is None
        else:
            torch.testing.assert_close(ours, reference)
    if x_grad:  # the mask reached the input gradient: dropped positions got none
        assert 0.2 < (fused[1] == 0).double().mean().item() < 0.4


@pytest.mark.parametrize("dropout", [LoRADropout(0.3).eval(), nn.Dropout(0.3).train(), nn.Identity()])
def test_dropout_down_projection_outside_lora_dropout_training_is_the_plain_composition(dropout):
    from vlmtl.adapters.dropout import dropout_down_projection

    x, a = torch.randn(4, 3, 16), torch.randn(2, 16)
    torch.manual_seed(6)
    ours = dropout_down_projection(dropout, x, a)
    torch.manual_seed(6)
    torch.testing.assert_close(ours, torch.nn.functional.linear(dropout(x), a))


def test_dropout_down_projection_does_not_make_an_input_sized_tensor():
    """What autograd keeps: the input (kept anyway by whoever made it), the bool mask and A; no
    float tensor the size of the input is made for the dropped input."""
    from vlmtl.adapters.dropout import dropout_down_projection

    torch.manual_seed(7)
    x = torch.randn(64, 10, 64, requires_grad=True)
    a = torch.randn(4, 64, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dropout_down_projection(LoRADropout(0.2).train(), x, a).sum().backward()
    float_inputs = [t for t in saved if t.numel() == x.numel() and t.dtype == x.dtype]
    assert all(t.data_ptr() == x.data_ptr() for t in float_inputs), [t.shape for t in float_inputs]
    assert any(t.dtype == torch.uint8 and t.numel() == x.numel() for t in saved)  # the one-byte keep mask


def test_dropout_down_projection_under_autocast_is_the_composition_in_the_autocast_dtype():
    from vlmtl.adapters.dropout import dropout_down_projection

    drop = LoRADropout(0.1).train()
    x, a = torch.randn(4, 10, 32), torch.randn(8, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(9)
        ours = dropout_down_projection(drop, x, a)
        torch.manual_seed(9)
        reference = torch.nn.functional.linear(drop(x), a)
    assert ours.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(ours, reference)
