"""Injection into real models: open_clip CLIP (nn.MultiheadAttention) and transformers CLIPModel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmtl.adapters import (
    AdaptedMultiheadAttention,
    LoRAConfig,
    MTLLoRAConfig,
    MTLoRAConfig,
    adapted_module_names,
    count_parameters,
    inject,
    use_tasks,
)
from vlmtl.adapters.layers import LoRALinear, MTLLoRALinear, MTLoRALinear

TASKS = ["vqa", "retrieval"]


def open_clip_outputs(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens)


def hf_outputs(model, images, tokens):
    return (model.get_image_features(pixel_values=images).pooler_output,
            model.get_text_features(input_ids=tokens).pooler_output)


def test_open_clip_gradients_reach_attention_and_mlp_adapters(open_clip_model, clip_inputs):
    model = open_clip_model
    images, tokens = clip_inputs
    base_image, base_text = open_clip_outputs(model, images, tokens)
    inject(model, MTLLoRAConfig(tasks=TASKS, r=4, alpha=8, target_modules=["attn", "c_fc", "c_proj"]))
    names = adapted_module_names(model)
    for tower in ("visual.transformer", "transformer"):
        for suffix in ("attn.in_proj", "attn.out_proj", "mlp.c_fc", "mlp.c_proj"):
            assert f"{tower}.resblocks.0.{suffix}" in names, suffix
    assert isinstance(model.visual.transformer.resblocks[0].attn, AdaptedMultiheadAttention)
    with use_tasks(model, ["vqa", "retrieval", "vqa", "retrieval"]):
        image_emb, text_emb = open_clip_outputs(model, images, tokens)
    # zero-initialised B: the adapted model is the base model
    torch.testing.assert_close(image_emb, base_image, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(text_emb, base_text, atol=1e-6, rtol=1e-5)
    (image_emb.sum() + text_emb.pow(2).sum()).backward()
    for name, module in model.named_modules():
        if isinstance(module, MTLLoRALinear):
            assert module.B.grad is not None and module.B.grad.abs().sum() > 0, name
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name


def test_hf_clip_gradients_reach_attention_and_mlp_adapters(hf_clip_model, clip_inputs):
    model = hf_clip_model
    images, tokens = clip_inputs
    base_image, base_text = hf_outputs(model, images, tokens)
    inject(model, MTLLoRAConfig(tasks=TASKS, r=4, alpha=8,
                                target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]))
    assert len(adapted_module_names(model)) == 2 * 2 * 6
    with use_tasks(model, "retrieval"):
        image_emb, text_emb = hf_outputs(model, images, tokens)
    torch.testing.assert_close(image_emb, base_image, atol=1e-6, rtol=1e-5)
    (image_emb.sum() + text_emb.sum()).backward()
    grads = {name: m.B.grad for name, m in model.named_modules() if isinstance(m, MTLLoRALinear)}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert any(name.endswith("self_attn.q_proj") for name in grads)
    assert any(name.endswith("mlp.fc2") for name in grads)


def test_everything_else_is_frozen_and_counts_are_reported(open_clip_model):
    total_before = sum(p.numel() for p in open_clip_model.parameters())
    inject(open_clip_model, MTLLoRAConfig(tasks=["a", "b", "c"], r=2, alpha=4, n_up=2, target_modules=["c_fc"]))
    trainable, total = count_parameters(open_clip_model)
    # r·d_in + n·r·d_out + T·r² + T·n per layer; c_fc is 32->64 (visual) and 32->128 (text), 2 layers each
    def per_layer(d_in, d_out):
        return 2 * d_in + 2 * 2 * d_out + 3 * 2 * 2 + 3 * 2

    assert trainable == 2 * per_layer(32, 64) + 2 * per_layer(32, 128)
    assert total == total_before + trainable
    trainable_names = [n for n, p in open_clip_model.named_parameters() if p.requires_grad]
    assert all(".c_fc." in n and not n.endswith(("weight", "bias")) for n in trainable_names)


def test_regex_targets_pick_one_tower(open_clip_model):
    inject(open_clip_model, LoRAConfig(r=2, alpha=2, target_modules=r"visual\..*mlp\.c_(fc|proj)"))
    names = adapted_module_names(open_clip_model)
    assert names and all(n.startswith("visual.") for n in names) and len(names) == 4
    assert all(isinstance(open_clip_model.get_submodule(n), LoRALinear) for n in names)


def test_no_match_names_the_patterns(open_clip_model):
    with pytest.raises(ValueError, match=r"\['nothing_here'\] matched no linear or attention module"):
        inject(open_clip_model, LoRAConfig(target_modules=["nothing_here"]))


def test_injecting_twice_is_refused(open_clip_model):
    inject(open_clip_model, LoRAConfig(target_modules=["c_fc"]))
    with pytest.raises(ValueError, match="already holds adapters"):
        inject(open_clip_model, LoRAConfig(target_modules=["c_proj"]))


def test_out_proj_alone_is_adapted_for_real(open_clip_model, clip_inputs):
    """open_clip's MHA never calls out_proj as a module; the adapter must still act."""
    images, tokens = clip_inputs
    before = open_clip_model.encode_image(images)
    inject(open_clip_model, LoRAConfig(r=2, alpha=2, target_modules=[r"out_proj"]))
    attn = open_clip_model.visual.transformer.resblocks[0].attn
    assert isinstance(attn, AdaptedMultiheadAttention) and isinstance(attn.out_proj, LoRALinear)
    assert not isinstance(attn.in_proj, LoRALinear)
    with torch.no_grad():
        attn.out_proj.B.normal_()
    assert not torch.allclose(open_clip_model.encode_image(images), before, atol=1e-4)


def test_mtlora_config_puts_task_specific_lora_where_asked(open_clip_model):
    config = MTLoRAConfig(tasks=["seg", "depth"], r=4, r_task=2, target_modules=["c_fc", "c_proj"],
                          task_specific_modules=r"visual\.transformer\.resblocks\.1\.mlp\.c_fc")
    inject(open_clip_model, config)
    specific = open_clip_model.visual.transformer.resblocks[1].mlp.c_fc
    shared_only = open_clip_model.visual.transformer.resblocks[0].mlp.c_fc
    assert isinstance(specific, MTLoRALinear) and specific.num_tasks == 2 and specific.task_A.shape == (2, 2, 32)
    assert isinstance(shared_only, MTLoRALinear) and shared_only.num_tasks == 0 and shared_only.task_A is None


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float", "padding", "both"])
def test_adapted_mha_with_zero_adapters_equals_mha(batch_first, need_weights, mask_kind):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    holder = nn.Sequential()
    holder.attn = mha
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    attn_mask = key_padding_mask = None
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    if mask_kind in ("bool", "both"):
        attn_mask = causal
    if mask_kind == "float":
        attn_mask = torch.zeros(5, 5).masked_fill(causal, float("-inf"))
    if mask_kind in ("padding", "both"):
        key_padding_mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    expected = mha(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask)
    inject(holder, MTLLoRAConfig(tasks=TASKS, r=2, alpha=2, target_modules=["attn"]))
    with use_tasks(holder, [0, 1, 0]):
        got = holder.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-5)
    else:
        assert got[1] is None


def test_adapted_mha_cross_attention_and_unbatched():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    holder = nn.Sequential()
    holder.attn = mha
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    cross = mha(q, kv, kv)[0]
    single = mha(q[0], kv[0], kv[0])[0]
    inject(holder, LoRAConfig(r=2, alpha=2, target_modules=["attn"]))
    torch.testing.assert_close(holder.attn(q, kv, kv)[0], cross, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(holder.attn(q[0], kv[0], kv[0])[0], single, atol=1e-5, rtol=1e-5)


def test_adapted_mha_mixed_batch_equals_each_sample_alone():
    torch.manual_seed(0)
    holder = nn.Sequential()
    holder.attn = nn.MultiheadAttention(16, 4, batch_first=False)
    inject(holder, MTLLoRAConfig(tasks=TASKS, r=2, alpha=2, target_modules=["attn"]))
    for module in holder.modules():
        if isinstance(module, MTLLoRALinear):
            nn.init.normal_(module.B)
    x = torch.randn(5, 3, 16)  # (L, B, E): the batch is on dim 1 here
    with use_tasks(holder, [1, 0, 1]):
        out = holder.attn(x, x, x)[0]
    for i, task in enumerate([1, 0, 1]):
        with use_tasks(holder, task):
            alone = holder.attn(x[:, i : i + 1], x[:, i : i + 1], x[:, i : i + 1])[0]
        torch.testing.assert_close(alone, out[:, i : i + 1], atol=1e-5, rtol=1e-5)
