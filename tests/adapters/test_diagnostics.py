"""The adapter measurements agree with the dense matrices they stand for."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlmtl.adapters import LoRAConfig, MTLLoRAConfig, inject, parameter_groups
from vlmtl.adapters.diagnostics import FactorSnapshot, mixing_entropy, up_projection_similarity


def _model(config) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))
    inject(model, config)
    return model


def _randomise(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)


def _dense_deltas(model: nn.Module, tasks: int) -> list[torch.Tensor]:
    layers = [m for m in model.modules() if hasattr(m, "delta_weight") and hasattr(m, "A")]
    return [torch.cat([layer.delta_weight(t).flatten() for layer in layers]) for t in range(tasks)]


def test_delta_and_update_norms_equal_the_dense_matrices():
    model = _model(MTLLoRAConfig(target_modules=["0", "2"], tasks=["a", "b", "c"], r=3, n_up=2, temperature=0.7))
    _randomise(model)
    before, dense_before = FactorSnapshot(model), _dense_deltas(model, 3)
    _randomise(model)
    after, dense_after = FactorSnapshot(model), _dense_deltas(model, 3)
    expected = torch.stack([d.norm() for d in dense_after])
    assert torch.allclose(after.delta_norms(), expected, rtol=1e-4)
    moved = after.update_norms(before)
    assert torch.allclose(moved["delta"], torch.stack([(a - b).norm() for a, b in zip(dense_after, dense_before)]),
                          rtol=1e-4)
    assert set(moved) == {"delta", "A", "mixed_b", "lambda", "w"}
    assert moved["w"].shape == (3,) and bool((moved["w"] > 0).all())


def test_lora_gives_one_shared_value_and_no_task_parts():
    model = _model(LoRAConfig(target_modules=["0", "2"], r=2))
    snapshot = FactorSnapshot(model)
    assert snapshot.delta_norms().tolist() == [0.0]  # B starts at zero
    _randomise(model)
    moved = FactorSnapshot(model).update_norms(snapshot)
    assert set(moved) == {"delta", "A", "mixed_b"} and float(moved["delta"]) > 0
    assert mixing_entropy(model) is None and up_projection_similarity(model) is None


def test_mixing_entropy_is_one_for_uniform_weights_and_falls_as_they_sharpen():
    model = _model(MTLLoRAConfig(target_modules=["0"], tasks=["a", "b"], r=2, n_up=3, temperature=0.5))
    layer = model[0]
    with torch.no_grad():
        layer.w.zero_()
    assert torch.allclose(mixing_entropy(model), torch.ones(2))
    with torch.no_grad():
        layer.w[0] = torch.tensor([5.0, 0.0, 0.0])
    entropy = mixing_entropy(model)
    assert entropy[0] < 0.1 and math.isclose(float(entropy[1]), 1.0, rel_tol=1e-6)


def test_up_projection_similarity_detects_identical_up_projections():
    model = _model(MTLLoRAConfig(target_modules=["0"], tasks=["a", "b"], r=2, n_up=3))
    assert up_projection_similarity(model) is None  # B_i are zero at init
    with torch.no_grad():
        model[0].B.copy_(torch.randn(1, 10, 2).expand(3, 10, 2))
    assert up_projection_similarity(model) == pytest.approx(1.0)
    with torch.no_grad():
        model[0].B.copy_(torch.randn(3, 10, 2))
    assert up_projection_similarity(model) < 0.9


def test_parameter_groups_give_lambda_and_mixing_logits_their_own_rates():
    model = _model(MTLLoRAConfig(target_modules=["0", "2"], tasks=["a", "b"], r=2))
    groups = parameter_groups(model, 1e-3, lambda_lr=5e-3, mixing_lr=0.05)
    by_rate = {g["lr"]: g["params"] for g in groups}
    assert set(by_rate) == {1e-3, 5e-3, 0.05}
    assert by_rate[0.05] == [model[0].w, model[2].w] and by_rate[5e-3] == [model[0].Lambda, model[2].Lambda]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(map(id, (p for g in groups for p in g["params"]))) == sorted(map(id, trainable))
    assert [g["lr"] for g in parameter_groups(model, 1e-3)] == [1e-3]  # no separate rates: one group


def test_a_tiny_step_is_measured_not_lost_in_rounding():
    model = _model(MTLLoRAConfig(target_modules=["0", "2"], tasks=["a", "b"], r=3))
    _randomise(model)
    before, dense_before = FactorSnapshot(model), _dense_deltas(model, 2)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.A.add_(1e-6 * torch.randn_like(layer.A))
    moved = FactorSnapshot(model).update_norms(before)["delta"]
    dense = torch.stack([(a.double() - b.double()).norm() for a, b in zip(_dense_deltas(model, 2), dense_before)])
    assert torch.allclose(moved.double(), dense, rtol=0.05)
