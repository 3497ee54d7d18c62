"""MTL-LoRA trains in half precision without overflow at a sharp temperature (τ = 0.05).

A small τ multiplies the mixing logits w/τ by 20, and fp16 tops out at 65504, so this checks
that softmax(w/τ), the per-task up-projections and their gradients stay finite over a short
training run with mixed-task batches, in fp16 and bf16, in the two usual set-ups:

- ``pure``: every weight (frozen base and adapters) stored in the half dtype, plain SGD with
  momentum on those half-precision parameters, no loss scaling;
- ``autocast``: fp32 master weights, the forward under ``torch.autocast("cpu", dtype)``
  (linear maps then run in the half dtype), AdamW with its default eps on the fp32 weights,
  no loss scaling (the loss is O(1) and its gradients sit well inside the fp16 range).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmtl.adapters import MTLLoRAConfig, MTLLoRALinear, MultiTaskModel, inject

TASKS = ["vqa", "retrieval", "caption"]
DIM, HIDDEN, TOKENS, BATCH, STEPS = 32, 64, 4, 24, 30


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(DIM, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def make_base(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(Block(), Block(), Block())


def make_model(seed: int) -> MultiTaskModel:
    model = make_base(seed)
    config = MTLLoRAConfig(tasks=TASKS, r=4, alpha=8.0, n_up=3, temperature=0.05, target_modules=["fc1", "fc2"])
    return MultiTaskModel(inject(model, config))


def make_teacher(seed: int) -> MultiTaskModel:
    """The student's architecture and initial weights (same seed), but random up-projections B:
    a per-task target the student can reach, so its loss can fall far within a few steps."""
    teacher = make_model(seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in teacher.modules():
            if isinstance(layer, MTLLoRALinear):
                layer.B.copy_(0.2 * torch.randn(layer.B.shape, generator=g))
    return teacher


def batch(step: int, teacher: MultiTaskModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, per-sample task ids (mixed, except a single-task batch every 5th step) and fp32 targets."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, TOKENS, DIM, generator=g)
    ids = torch.arange(BATCH) % len(TASKS) if step % 5 else torch.full((BATCH,), step % len(TASKS))
    ids = ids[torch.randperm(BATCH, generator=g)]
    with torch.no_grad():
        y = teacher(x, task_ids=ids)
    return x, ids, y


def assert_finite(model: nn.Module, loss: torch.Tensor, step: int) -> None:
    assert torch.isfinite(loss), f"step {step}: loss {loss.item()}"
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), f"step {step}: parameter {name} is not finite"
        if p.requires_grad:
            assert p.grad is not None, f"step {step}: {name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"step {step}: gradient of {name} is not finite"
    for layer in model.modules():
        if isinstance(layer, MTLLoRALinear):
            weights = layer.mixing_weights()
            assert torch.isfinite(weights).all() and torch.allclose(weights.sum(-1), torch.ones(len(TASKS)))


@pytest.mark.parametrize("mode", ["pure", "autocast"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_mtl_lora_half_precision_training_stays_finite_and_learns(dtype, mode):
    model = make_model(seed=0)
    teacher = make_teacher(seed=0)
    half_outputs: list[torch.dtype] = []
    for layer in model.modules():
        if isinstance(layer, MTLLoRALinear):
            layer.register_forward_hook(lambda module, args, out: half_outputs.append(out.dtype))
    if mode == "pure":
        model = model.to(dtype)
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert all(p.dtype == dtype for p in model.parameters())
        optimizer: torch.optim.Optimizer = torch.optim.SGD(trainable, lr=0.5, momentum=0.9)
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=3e-3, weight_decay=0.0)
    sharp = model.model[0].fc1.mixing_weights().max(-1).values
    assert (sharp > 0.9).any(), "τ = 0.05 should make some task's mixture nearly one-hot"

    losses = []
    for step in range(STEPS):
        x, ids, y = batch(step, teacher)
        half_outputs.clear()
        with torch.autocast("cpu", dtype=dtype, enabled=mode == "autocast"):
            out = model(x.to(dtype) if mode == "pure" else x, task_ids=ids)
        assert half_outputs and set(half_outputs) == {dtype}, "the adapted layers must run in the half dtype"
        loss = (out.float() - y).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert_finite(model, loss, step)
        optimizer.step()
        losses.append(loss.item())
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), f"after training: parameter {name} is not finite"
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"{dtype} {mode}: loss went from {first:.4f} to {last:.4f}: {losses}"
