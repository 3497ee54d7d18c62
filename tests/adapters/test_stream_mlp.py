"""mlp_task_streams: the fused MTLoRA MLP over task streams equals composing the layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmtl.adapters import stream_mlp
from vlmtl.adapters.layers import MTLoRALinear
from vlmtl.adapters.stream_mlp import composed_mlp_task_streams, mlp_task_streams


def _mlp(num_tasks: int = 3, width: int = 12, hidden: int = 40, dtype=torch.float64):
    torch.manual_seed(0)
    fc1 = MTLoRALinear(nn.Linear(width, hidden).requires_grad_(False), num_tasks, r=4, r_task=3, scale=2.0)
    fc2 = MTLoRALinear(nn.Linear(hidden, width).requires_grad_(False), num_tasks, r=4, r_task=3, scale=2.0)
    for layer in (fc1, fc2):
        for p in layer.parameters():
            if p.requires_grad:
                nn.init.normal_(p, std=0.3)  # B starts at zero; nonzero so every path matters
    return fc1.to(dtype), fc2.to(dtype)


def _run(forward, fc1, fc2, x, task_inputs):
    for p in (*fc1.parameters(), *fc2.parameters()):
        p.grad = None
    x = x.clone().requires_grad_()
    inputs = [u.clone().requires_grad_() for u in task_inputs]
    shared, streams = forward(x, inputs)
    loss = (shared * 1.5).sum() + sum((s * (t + 2)).sum() for t, s in enumerate(streams))
    loss.sum().backward()
    grads = [p.grad.clone() for p in (*fc1.parameters(), *fc2.parameters()) if p.requires_grad]
    return [shared, *streams, x.grad, *(u.grad for u in inputs), *grads]


def _composed(fc1, act, fc2):
    return lambda x, task_inputs: composed_mlp_task_streams(fc1, act, fc2, x, task_inputs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_streams_equal_the_composed_layers_values_and_gradients(approximate, monkeypatch):
    monkeypatch.setattr(stream_mlp, "_CHUNK_ELEMENTS", 7 * 40)  # 7-row chunks: several, one ragged
    fc1, fc2 = _mlp()
    act = nn.GELU(approximate=approximate)
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    task_inputs = [torch.randn_like(x) for _ in range(3)]
    assert stream_mlp._fusable(fc1, act, fc2, x, task_inputs)
    fused = _run(lambda u, us: mlp_task_streams(fc1, act, fc2, u, us), fc1, fc2, x, task_inputs)
    composed = _run(_composed(fc1, act, fc2), fc1, fc2, x, task_inputs)
    assert len(fused) == len(composed) == 1 + 3 + 1 + 3 + 8
    for ours, reference in zip(fused, composed):
        torch.testing.assert_close(ours, reference)


def test_fused_streams_without_recording_keep_no_task_sized_hidden_tensor():
    """Autograd keeps no (rows × hidden) tensor per task: only the shared stream's."""
    fc1, fc2 = _mlp(num_tasks=4, dtype=torch.float32)
    x = torch.randn(2, 16, 12)
    task_inputs = [torch.randn_like(x, requires_grad=True) for _ in range(4)]
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        shared, streams = mlp_task_streams(fc1, nn.GELU(), fc2, x, task_inputs)
    hidden_sized = {t.data_ptr() for t in saved if t.numel() == 2 * 16 * 40}
    assert 1 <= len(hidden_sized) <= 3, len(hidden_sized)  # fc1's frozen output, the shared pre-activation, its GELU


@pytest.mark.parametrize("case", ["relu", "merged", "no_task_inputs", "autocast"])
def test_unfusable_cases_take_the_composed_path_with_the_same_result(case):
    fc1, fc2 = _mlp(dtype=torch.float32)
    act = nn.ReLU() if case == "relu" else nn.GELU()
    x = torch.randn(2, 5, 12)
    task_inputs = None if case == "no_task_inputs" else [torch.randn_like(x) for _ in range(3)]
    if case == "merged":
        fc1.merge(), fc2.merge()
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not stream_mlp._fusable(fc1, act, fc2, x, task_inputs)
        return
    assert not stream_mlp._fusable(fc1, act, fc2, x, task_inputs)
    shared, streams = mlp_task_streams(fc1, act, fc2, x, task_inputs)
    ref_shared, ref_streams = _composed(fc1, act, fc2)(x, task_inputs)
    torch.testing.assert_close(shared, ref_shared)
    for ours, reference in zip(streams, ref_streams):
        torch.testing.assert_close(ours, reference)


def test_a_task_stream_of_the_wrong_shape_is_named():
    fc1, fc2 = _mlp(dtype=torch.float32)
    x = torch.randn(2, 5, 12)
    with pytest.raises(ValueError, match="task 1 stream has shape"):
        mlp_task_streams(fc1, nn.GELU(), fc2, x, [x, torch.randn(2, 4, 12), x])
