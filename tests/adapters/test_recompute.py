"""recompute_adapter_inputs: adapter inputs made by an activation or the adapter dropout are
recomputed in backward instead of kept: same outputs and gradients, the inputs freed."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from timm.layers import Mlp
from torch import nn

from vlmtl.adapters import LoRALinear
from vlmtl.adapters.recompute import _RECORDINGS, recompute_adapter_inputs
from vlmtl.models.swin_mtlora import create_multitask_swin

TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), window_size=2, img_size=32)


def adapted_mlp(dropout: float) -> Mlp:
    torch.manual_seed(0)
    mlp = Mlp(24, 96).requires_grad_(False)
    mlp.fc1 = LoRALinear(mlp.fc1, r=4, alpha=8, dropout=dropout)
    mlp.fc2 = LoRALinear(mlp.fc2, r=4, alpha=8, dropout=dropout)
    for layer in (mlp.fc1, mlp.fc2):
        nn.init.normal_(layer.B)  # B starts at zero: make the A gradients non-zero
    return mlp.train()


def forward_backward(model: nn.Module, x: torch.Tensor, recompute: bool, seed: int = 1):
    torch.manual_seed(seed)  # the same dropout masks in both runs
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    if recompute:
        with recompute_adapter_inputs(model):
            y = model(x)
    else:
        y = model(x)
    (y.square().sum() if isinstance(y, torch.Tensor) else sum(v.square().sum() for v in y.values())).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return y, x.grad, grads


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_same_outputs_and_gradients_as_keeping_the_inputs(dropout):
    mlp = adapted_mlp(dropout)
    x = torch.randn(3, 7, 24)  # 3-D: F.linear saves a flattened view of its input
    y0, gx0, g0 = forward_backward(mlp, x, recompute=False)
    y1, gx1, g1 = forward_backward(mlp, x, recompute=True)
    torch.testing.assert_close(y1, y0, rtol=0, atol=0)
    torch.testing.assert_close(gx1, gx0)
    assert g0.keys() == g1.keys() and {"fc1.A", "fc2.A", "fc2.B"} <= g0.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=name)


def _kept_after_forward(mlp: Mlp, recompute: bool) -> dict[str, bool]:
    refs: dict[str, weakref.ref] = {}

    def remember(name):
        def hook(module, inputs, output):
            refs[name] = weakref.ref(output)
        return hook

    handles = [mlp.act.register_forward_hook(remember("activation")),
               mlp.fc2.dropout.register_forward_hook(remember("dropped"))]
    x = torch.randn(3, 7, 24, requires_grad=True)
    if recompute:
        with recompute_adapter_inputs(mlp):
            y = mlp(x)
    else:
        y = mlp(x)
    gc.collect()
    kept = {name: ref() is not None for name, ref in refs.items()}
    y.sum().backward()
    for handle in handles:
        handle.remove()
    return kept


def test_with_dropout_nothing_dropped_is_made_and_the_activation_is_freed():
    """The adapter's dropout never materialises its output (dropout_down_projection); the
    activation it reads is kept without the recording and freed with it."""
    mlp = adapted_mlp(0.2)
    assert _kept_after_forward(mlp, recompute=False) == {"activation": True}
    assert _kept_after_forward(mlp, recompute=True) == {"activation": False}


def test_without_dropout_the_activation_itself_is_freed():
    mlp = adapted_mlp(0.0)
    assert _kept_after_forward(mlp, recompute=False)["activation"] is True
    assert _kept_after_forward(mlp, recompute=True)["activation"] is False


def test_the_context_leaves_no_hooks_or_recording_behind():
    mlp = adapted_mlp(0.2)
    with recompute_adapter_inputs(mlp):
        assert len(mlp.act._forward_hooks) == 1 and len(_RECORDINGS) == 1
    assert not mlp.act._forward_hooks and not _RECORDINGS


def test_an_in_place_activation_is_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 4))
    model[2] = LoRALinear(model[2], r=2, alpha=2, dropout=0.0)
    nn.init.normal_(model[2].B)
    x = torch.randn(5, 8)
    _, _, g0 = forward_backward(model, x, recompute=False)
    _, _, g1 = forward_backward(model, x, recompute=True)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=name)


@pytest.mark.parametrize("method", ["mtlora", "lora"])
def test_swin_trains_with_the_same_gradients_as_without_recompute(method):
    """MultiTaskSwin recomputes by default (task streams included, dropout on)."""
    torch.manual_seed(0)
    model = create_multitask_swin(method=method, dropout=0.1, **TINY_SWIN).train()
    for module in model.modules():
        if hasattr(module, "B") and isinstance(module.B, nn.Parameter):
            nn.init.normal_(module.B, std=0.1)
        if getattr(module, "task_B", None) is not None:
            nn.init.normal_(module.task_B, std=0.1)
    assert model.recompute_adapter_inputs
    images = torch.randn(2, 3, 32, 32)
    model.recompute_adapter_inputs = False
    y0, _, g0 = forward_backward(model, images, recompute=False)
    model.recompute_adapter_inputs = True
    y1, _, g1 = forward_backward(model, images, recompute=False)  # the model's own switch
    for task in y0:
        torch.testing.assert_close(y1[task], y0[task], rtol=0, atol=0)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=name)


def test_a_layer_norm_output_read_by_an_adapter_is_freed_and_recomputed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(16), LoRALinear(nn.Linear(16, 8).requires_grad_(False), r=2, alpha=2))
    nn.init.normal_(model[1].B)
    x = torch.randn(4, 5, 16)
    _, _, kept = forward_backward(model, x, recompute=False)
    _, _, recomputed = forward_backward(model, x, recompute=True)
    assert kept.keys() == recomputed.keys()
    for name in kept:
        torch.testing.assert_close(recomputed[name], kept[name], msg=name)
    refs = []
    model[0].register_forward_hook(lambda module, inputs, output: refs.append(weakref.ref(output)))
    with recompute_adapter_inputs(model):
        y_recomputed = model(x)
    y_kept = model(x)
    gc.collect()
    assert refs[0]() is None and refs[1]() is not None
    del y_recomputed, y_kept
