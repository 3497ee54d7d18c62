"""The layer equations against a direct, per-sample formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlmtl.adapters import LoRALinear, MTLLoRALinear, MTLoRALinear, use_tasks


def randomize(layer: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if not name.startswith("base_layer"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def direct_mtl_lora(layer: MTLLoRALinear, x: torch.Tensor, task: int) -> torch.Tensor:
    """W x + b + (α/r)·(Σ_i softmax(w_t/τ)_i B_i)·Λ_t·A·x, written out term by term."""
    weights = [math.exp(v / layer.temperature) for v in layer.w[task].tolist()]
    weights = [v / sum(weights) for v in weights]
    mixed_b = sum(weights[i] * layer.B[i].double() for i in range(layer.n_up))
    lam = layer.Lambda[task].double()
    lam = torch.diag(lam) if layer.lambda_type == "diagonal" else lam
    base = layer.base_layer
    out = x.double() @ base.weight.double().T
    if base.bias is not None:
        out = out + base.bias.double()
    return out + (layer.alpha / layer.r) * x.double() @ (mixed_b @ lam @ layer.A.double()).T


@pytest.mark.parametrize("lambda_type", ["full", "diagonal"])
@pytest.mark.parametrize("n_up", [1, 3])
@pytest.mark.parametrize("shape", [(5, 16), (5, 7, 16)])
def test_mtl_lora_matches_formula_on_mixed_batch(lambda_type, n_up, shape):
    torch.manual_seed(0)
    layer = MTLLoRALinear(nn.Linear(16, 12), num_tasks=3, r=4, alpha=8, n_up=n_up, temperature=0.5,
                          lambda_type=lambda_type)
    randomize(layer)
    x = torch.randn(*shape)
    ids = [0, 2, 1, 1, 0]
    with use_tasks(layer, ids):
        y = layer(x)
    for i, task in enumerate(ids):
        expected = direct_mtl_lora(layer, x[i], task)
        torch.testing.assert_close(y[i].double(), expected, atol=1e-5, rtol=1e-5)


def test_mtl_lora_single_task_batch_matches_formula():
    torch.manual_seed(1)
    layer = MTLLoRALinear(nn.Linear(8, 6, bias=False), num_tasks=2, r=2, alpha=4, n_up=2, temperature=0.1)
    randomize(layer)
    x = torch.randn(3, 4, 8)
    with use_tasks(layer, 1):
        y = layer(x)
    torch.testing.assert_close(y.double(), direct_mtl_lora(layer, x, 1), atol=1e-5, rtol=1e-5)


def test_mtl_lora_init_and_parameter_shapes():
    torch.manual_seed(0)
    base = nn.Linear(20, 10)
    layer = MTLLoRALinear(base, num_tasks=4, r=8, alpha=16, n_up=3, temperature=0.1)
    assert layer.A.shape == (8, 20) and layer.B.shape == (3, 10, 8)
    assert layer.Lambda.shape == (4, 8, 8) and layer.w.shape == (4, 3)
    assert torch.equal(layer.Lambda, torch.eye(8).expand(4, 8, 8))
    assert torch.count_nonzero(layer.B) == 0
    assert layer.w.abs().max() <= 1 / math.sqrt(3)
    bound = 1 / math.sqrt(20)  # kaiming_uniform(a=√5) on fan_in=20, as nn.Linear
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > bound / 2
    assert layer.scaling == 2.0 and layer.temperature == 0.1
    # r·d_in + n·r·d_out + T·r² + T·n
    expected = 8 * 20 + 3 * 8 * 10 + 4 * 64 + 4 * 3
    assert sum(p.numel() for n, p in layer.named_parameters() if not n.startswith("base")) == expected
    diagonal = MTLLoRALinear(nn.Linear(20, 10), num_tasks=4, r=8, alpha=16, n_up=3, temperature=0.1,
                             lambda_type="diagonal")
    assert diagonal.Lambda.shape == (4, 8) and torch.equal(diagonal.Lambda, torch.ones(4, 8))


def test_zero_init_equals_base_and_base_is_untouched():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    weight_before, bias_before = base.weight.detach().clone(), base.bias.detach().clone()
    layer = MTLLoRALinear(base, num_tasks=2, r=4, alpha=8, n_up=2, temperature=0.1)
    assert layer.base_layer.weight is base.weight and layer.base_layer.bias is base.bias
    x = torch.randn(4, 16)
    with use_tasks(layer, [0, 1, 1, 0]):
        torch.testing.assert_close(layer(x), base(x), rtol=0, atol=0)
    assert torch.equal(base.weight, weight_before) and torch.equal(base.bias, bias_before)


def test_bias_free_layer_stays_bias_free():
    layer = MTLLoRALinear(nn.Linear(8, 8, bias=False), num_tasks=2, r=2, alpha=2, n_up=1, temperature=1.0)
    assert layer.base_layer.bias is None
    assert "base_layer.bias" not in dict(layer.named_parameters())
    lora = LoRALinear(nn.Linear(8, 8, bias=False), r=2, alpha=2)
    assert lora.base_layer.bias is None


def test_lora_linear_matches_formula():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    layer = LoRALinear(base, r=4, alpha=8)
    assert torch.count_nonzero(layer.B) == 0 and layer.A.shape == (4, 16) and layer.B.shape == (12, 4)
    randomize(layer)
    x = torch.randn(3, 5, 16)
    expected = base(x) + 2.0 * x @ (layer.B @ layer.A).T
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_dropout_applies_to_adapter_input_only():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 12), r=4, alpha=8, dropout=0.5)
    randomize(layer)
    x = torch.randn(64, 16)
    layer.train()
    y1, y2 = layer(x), layer(x)
    assert not torch.allclose(y1, y2)  # dropout is active on the adapter path
    with torch.no_grad():
        layer.B.zero_()
    torch.testing.assert_close(layer(x), layer.base_layer(x))  # ... and only there
    randomize(layer)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base_layer(x) + 2.0 * x @ (layer.B @ layer.A).T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_finite_with_small_temperature(dtype):
    torch.manual_seed(0)
    layer = MTLLoRALinear(nn.Linear(32, 32), num_tasks=3, r=4, alpha=8, n_up=3, temperature=0.05).to(dtype)
    with torch.no_grad():
        layer.w.mul_(30)  # logits/τ far beyond fp16's exp range
        layer.B.normal_()
    x = torch.randn(6, 5, 32, dtype=dtype)
    with use_tasks(layer, [0, 1, 2, 0, 1, 2]):
        y = layer(x)
        y.float().sum().backward()
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert torch.isfinite(layer.w.grad).all() and torch.isfinite(layer.B.grad).all()
    assert torch.isfinite(layer.mixing_weights()).all()


def test_mtlora_streams_match_formula():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    layer = MTLoRALinear(base, num_tasks=3, r=4, r_task=2, scale=4.0)
    assert layer.task_A.shape == (3, 2, 16) and layer.task_B.shape == (3, 12, 2)
    assert torch.count_nonzero(layer.B) == 0 and torch.count_nonzero(layer.task_B) == 0
    randomize(layer)
    x = torch.randn(2, 5, 16)
    streams_in = [torch.randn(2, 5, 16) for _ in range(3)]
    shared, tasks = layer.forward_streams(x, streams_in)
    torch.testing.assert_close(shared, base(x) + 4.0 * x @ (layer.B @ layer.A).T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(x), shared)
    for t, u in enumerate(streams_in):
        expected = base(x) + 4.0 * u @ (layer.task_B[t] @ layer.task_A[t]).T
        torch.testing.assert_close(tasks[t], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 task streams for 3 tasks"):
        layer.forward_streams(x, streams_in[:2])


def test_rejects_non_linear_base():
    with pytest.raises(TypeError, match="linear layer"):
        LoRALinear(nn.Conv2d(3, 3, 3), r=2, alpha=2)


def test_mtlora_dropout_is_the_official_one_mask_on_the_shared_input_only():
    """Official MTLoRA: x is dropped out once; the task-agnostic LoRA and the task-specific
    LoRAs that read x share that mask; a task's own stream input is never dropped."""
    torch.manual_seed(0)
    layer = MTLoRALinear(nn.Linear(16, 8), num_tasks=2, r=4, r_task=4, scale=2.0, dropout=0.5).train()
    with torch.no_grad():
        layer.B.normal_()
        layer.task_A.copy_(layer.A.expand_as(layer.task_A))  # every task LoRA equal to the shared one
        layer.task_B.copy_(layer.B.expand_as(layer.task_B))
    x = torch.randn(4, 16)
    shared, streams = layer.forward_streams(x)
    base = layer.base_layer(x)
    for stream in streams:  # the same mask: each task's update equals the shared update
        assert torch.allclose(stream - base, shared - base, atol=1e-6)
    undropped = base + layer.scale * x @ layer.A.t() @ layer.B.t()
    assert not torch.allclose(shared, undropped), "dropout was applied"
    own = [torch.randn(4, 16), torch.randn(4, 16)]
    first = layer.forward_streams(x, own)[1]
    second = layer.forward_streams(x, own)[1]  # new masks for x, none for the task inputs
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def _graph_nodes(tensor: torch.Tensor) -> set[str]:
    seen, names, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


@pytest.mark.parametrize("tasks", [None, 1, [0, 1, 1, 0]])
def test_adapted_output_backward_copies_no_output_gradient(tasks):
    """An in-place add into the base output (a view) makes backward copy the whole output
    gradient (CopySlices); the layers add out of place, in one fused addmm."""
    base = nn.Linear(16, 12).requires_grad_(False)
    layer = LoRALinear(base, r=4, alpha=8) if tasks is None else MTLLoRALinear(base, 2, 4, 8, n_up=2, temperature=1)
    x = torch.randn(4, 3, 16, requires_grad=True)
    if tasks is None:
        y = layer(x)
    else:
        with use_tasks(layer, tasks):
            y = layer(x)
    nodes = _graph_nodes(y)
    fused = {"AddmmBackward0", "BaddbmmBackward0", "_LoRALinearBackward"}  # _LoRALinear: vlmtl.adapters.fused_linear
    assert "CopySlices" not in nodes and fused & nodes, nodes
    y.sum().backward()
    assert layer.A.grad is not None and x.grad is not None


def test_mtlora_streams_add_their_updates_in_one_fused_addmm():
    """MTLoRA's shared and task streams add s·B A x into the base output in the fused addmm
    (scale folded into B), not as separate output-sized multiply and add passes."""
    layer = MTLoRALinear(nn.Linear(16, 12).requires_grad_(False), num_tasks=2, r=4, r_task=2, scale=4.0,
                         dropout=0.1).train()
    x = torch.randn(4, 3, 16, requires_grad=True)
    shared, streams = layer.forward_streams(x, [torch.randn(4, 3, 16), torch.randn(4, 3, 16)])
    for y in (shared, *streams, layer(x)):
        nodes = _graph_nodes(y)
        assert {"AddmmBackward0", "_LoRALinearBackward"} & nodes and not {"AddBackward0", "CopySlices"} & nodes, nodes


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["lora", "mtlora"])
def test_adapted_linear_runs_fused_and_equals_base_plus_update(kind, bias):
    """``forward`` runs the frozen linear and its LoRA as one autograd function
    (``vlmtl.adapters.fused_linear``): same output and gradients as ``base(x)`` plus the update,
    with adapter dropout (one seed); a base with a forward hook is called as a module (the hook runs)."""
    from vlmtl.adapters.layers import _add_lora

    torch.manual_seed(0)
    base = nn.Linear(16, 12, bias=bias).requires_grad_(False)
    if kind == "lora":
        layer = LoRALinear(base, r=4, alpha=8, dropout=0.2)
    else:
        layer = MTLoRALinear(base, num_tasks=2, r=4, r_task=2, scale=2.0, dropout=0.2)
    nn.init.normal_(layer.B)
    layer.train()
    scale = layer.scaling if kind == "lora" else layer.scale
    x = torch.randn(5, 3, 16)
    runs = []
    for fused in (True, False):
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        torch.manual_seed(1)
        y = layer(xi) if fused else _add_lora(base(xi), xi, layer.A, layer.B, scale, layer.dropout)
        assert ("_LoRALinearBackward" in _graph_nodes(y)) == fused
        y.square().sum().backward()
        runs.append((y.detach(), xi.grad, layer.A.grad, layer.B.grad))
    for got, want in zip(*runs):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    calls = []
    base.register_forward_hook(lambda *args: calls.append(1))
    torch.manual_seed(1)
    torch.testing.assert_close(layer(x), runs[1][0], rtol=1e-5, atol=1e-5)
    assert calls == [1]
