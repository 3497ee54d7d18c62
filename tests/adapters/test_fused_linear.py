"""vlmtl.adapters.fused_linear: a frozen linear and its LoRA as one autograd function, equal to
the composition of torch ops (values and every gradient), with the input gradients summed in
place, and the cases it leaves to the composition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlmtl.adapters.dropout import LoRADropout
from vlmtl.adapters.fused_linear import fuses, lora_linear


def _composed(x, weight, bias, a, b, scale, dropout):
    return F.linear(x, weight, bias) + scale * F.linear(F.linear(dropout(x), a), b)


@pytest.mark.parametrize("p", [0.0, 0.2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("base_trains", [False, True])
@pytest.mark.parametrize("shape", [(7, 24), (3, 50, 24)])  # 50 rows x 24: several dropout chunks
def test_equals_the_composition(p, bias, base_trains, shape, monkeypatch):
    monkeypatch.setattr("vlmtl.adapters.dropout._CHUNK_ELEMENTS", 24 * 16)  # 16-row chunks: ragged last chunk
    torch.manual_seed(0)
    weight = torch.randn(10, 24, requires_grad=base_trains)
    b_vec = torch.randn(10, requires_grad=base_trains) if bias else None
    a = torch.randn(4, 24, requires_grad=True)
    b = torch.randn(10, 4, requires_grad=True)
    dropout = LoRADropout(p).train() if p else nn.Identity()
    x = torch.randn(*shape)
    params = [t for t in (weight, b_vec, a, b) if t is not None and t.requires_grad]
    runs = []
    for fn in (lora_linear, _composed):
        xi = x.clone().requires_grad_(True)
        for t in params:
            t.grad = None
        torch.manual_seed(1)  # the same dropout mask: keep_mask and LoRADropout draw alike
        assert fuses(weight, xi, a, b, dropout)
        out = fn(xi, weight, b_vec, a, b, 0.5, dropout)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        runs.append((out.detach(), xi.grad, *[t.grad for t in params]))
    for got, want in zip(*runs):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _edges_into(out: torch.Tensor, leaf: torch.Tensor) -> int:
    """How many graph edges end at ``leaf``'s gradient accumulator: each is a gradient the
    autograd engine sums into it."""
    count, seen, stack = 0, set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None and type(nxt).__name__ == "AccumulateGrad" and nxt.variable is leaf:
                count += 1
            stack.append(nxt)
    return count


def test_input_gradient_is_one_tensor_not_an_autograd_sum():
    """The composition reads x twice, so autograd makes two x-sized gradients and sums them; the
    fused function hands back one, the low-rank part added into the frozen part in place."""
    w, a, b = torch.randn(5, 8), torch.randn(2, 8, requires_grad=True), torch.randn(5, 2, requires_grad=True)
    dropout = LoRADropout(0.3).train()
    x = torch.randn(6, 8, requires_grad=True)
    assert _edges_into(lora_linear(x, w, None, a, b, 1.0, dropout), x) == 1
    assert _edges_into(_composed(x, w, None, a, b, 1.0, dropout), x) == 2


def test_leaves_other_cases_to_the_composition():
    w, a, b = torch.randn(5, 8), torch.randn(2, 8), torch.randn(5, 2)
    x = torch.randn(3, 8)
    assert fuses(w, x, a, b, None) and fuses(w, x, a, b, LoRADropout(0.1).eval())
    assert not fuses(w, torch.randn(8), a, b, None)  # 1-D input
    assert not fuses(w, x.double(), a, b, None)  # mixed dtypes
    assert not fuses(w, x, a, b, nn.Dropout(0.1).train())  # a dropout that is not LoRADropout, training
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fuses(w, x, a, b, None)


def test_backward_is_once_differentiable():
    x = torch.randn(4, 8, requires_grad=True)
    out = lora_linear(x, torch.randn(5, 8), None, torch.randn(2, 8), torch.randn(5, 2), 1.0)
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), x)
