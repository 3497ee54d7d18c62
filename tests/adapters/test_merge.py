"""Merging one task into the frozen weights, unmerging, and exporting a plain model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmtl.adapters import (
    AdaptedMultiheadAttention,
    AdapterLayer,
    LoRAConfig,
    MTLLoRAConfig,
    inject,
    merge,
    merge_and_unload,
    unmerge,
    use_tasks,
)
from vlmtl.adapters.layers import MTLLoRALinear

TASKS = ["vqa", "retrieval", "caption"]


def randomized(model: nn.Module, config) -> nn.Module:
    inject(model, config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdapterLayer):
                module.B.copy_(torch.randn(module.B.shape, generator=generator) * 0.1)
                if isinstance(module, MTLLoRALinear):
                    module.Lambda.add_(0.1 * torch.randn(module.Lambda.shape, generator=generator))
    return model


def mtl_config(**kw):
    return MTLLoRAConfig(tasks=TASKS, r=4, alpha=8, n_up=3, temperature=0.5,
                         target_modules=["attn", "c_fc", "c_proj"], **kw)


@pytest.mark.parametrize("lambda_type", ["full", "diagonal"])
def test_merged_weight_is_w_plus_delta_exactly(lambda_type):
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    original = base.weight.detach().clone()
    layer = MTLLoRALinear(base, num_tasks=3, r=4, alpha=8, n_up=3, temperature=0.5, lambda_type=lambda_type)
    nn.init.normal_(layer.B)
    mix = torch.softmax(layer.w.double() / 0.5, -1)[2]
    mixed_b = sum(mix[i] * layer.B[i].double() for i in range(3))
    lam = layer.Lambda[2].double()
    lam = torch.diag(lam) if lambda_type == "diagonal" else lam
    expected = original.double() + 2.0 * mixed_b @ lam @ layer.A.double()
    layer.merge(2)
    torch.testing.assert_close(base.weight.double(), expected, atol=1e-6, rtol=1e-6)
    layer.unmerge()
    assert torch.equal(base.weight, original)


def test_merge_matches_routed_forward_and_unmerge_restores(open_clip_model, clip_inputs):
    images, tokens = clip_inputs
    model = randomized(open_clip_model, mtl_config())
    weights_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    with use_tasks(model, "caption"):
        routed = model.encode_image(images), model.encode_text(tokens)
    merge(model, "caption")
    merged = model.encode_image(images), model.encode_text(tokens)  # merged: no ids needed
    for a, b in zip(routed, merged):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with use_tasks(model, "caption"):  # the merged task's ids are accepted
        torch.testing.assert_close(model.encode_image(images), merged[0])
    unmerge(model)
    for name, param in model.named_parameters():
        if name in weights_before:
            assert (param - weights_before[name]).abs().max() <= 1e-6, name


def test_merged_model_refuses_mixed_or_other_task(open_clip_model, clip_inputs):
    images, _ = clip_inputs
    model = randomized(open_clip_model, mtl_config())
    merge(model, "vqa")
    with pytest.raises(RuntimeError, match="merged for task 0 but this batch asks for a mix of tasks"):
        with use_tasks(model, ["vqa", "caption", "vqa", "vqa"]):
            model.encode_image(images)
    with pytest.raises(RuntimeError, match="merged for task 0 but this batch asks for task 2"):
        with use_tasks(model, "caption"):
            model.encode_image(images)
    with pytest.raises(RuntimeError, match="already merged"):
        merge(model, "caption")
    unmerge(model)
    with use_tasks(model, ["vqa", "caption", "vqa", "vqa"]):
        model.encode_image(images)


def test_merge_needs_a_known_task(open_clip_model):
    model = randomized(open_clip_model, mtl_config())
    with pytest.raises(ValueError, match="name the task"):
        merge(model)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        merge(model, "nope")


def test_merge_and_unload_gives_a_plain_model(open_clip_model, clip_inputs):
    images, tokens = clip_inputs
    model = randomized(open_clip_model, mtl_config())
    with use_tasks(model, "retrieval"):
        expected = model.encode_image(images), model.encode_text(tokens)
    plain = merge_and_unload(model, "retrieval")
    assert not any(isinstance(m, (AdapterLayer, AdaptedMultiheadAttention)) for m in plain.modules())
    assert isinstance(plain.visual.transformer.resblocks[0].attn, nn.MultiheadAttention)
    assert type(plain.transformer.resblocks[1].mlp.c_fc) is nn.Linear
    got = plain.encode_image(images), plain.encode_text(tokens)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not any(n.endswith((".A", ".B", ".w", ".Lambda")) for n, _ in plain.named_parameters())


def test_lora_merge_needs_no_task(open_clip_model, clip_inputs):
    images, _ = clip_inputs
    model = randomized(open_clip_model, LoRAConfig(r=2, alpha=4, target_modules=["c_fc", "attn"]))
    expected = model.encode_image(images)
    merge(model)
    torch.testing.assert_close(model.encode_image(images), expected, atol=1e-5, rtol=1e-4)
