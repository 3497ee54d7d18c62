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
    MTLoRAConfig,
    inject,
    merge,
    merge_and_unload,
    unmerge,
    use_tasks,
)
from vlmtl.adapters.layers import MTLLoRALinear, MTLoRALinear

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
    for a, b in zip(routed, merged, strict=True):
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
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not any(n.endswith((".A", ".B", ".w", ".Lambda")) for n, _ in plain.named_parameters())


def test_lora_merge_needs_no_task(open_clip_model, clip_inputs):
    images, _ = clip_inputs
    model = randomized(open_clip_model, LoRAConfig(r=2, alpha=4, target_modules=["c_fc", "attn"]))
    expected = model.encode_image(images)
    merge(model)
    torch.testing.assert_close(model.encode_image(images), expected, atol=1e-5, rtol=1e-4)


# --- MTLoRA: the task-agnostic LoRA merges, the task-specific ones keep working ---------------

MT_TASKS = ["seg", "depth", "normals"]


class StreamNet(nn.Module):
    """Three linears; ``mid`` and ``out`` carry per-task streams as an MTLoRA Swin block does."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.mid = nn.Linear(16, 16)
        self.out = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(torch.relu(self.inp(x)))))

    def forward_streams(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        shared, tasks = self.mid.forward_streams(torch.relu(self.inp(x)))
        return self.out.forward_streams(torch.relu(shared), [torch.relu(t) for t in tasks])


def mtlora_net(task_specific: list[str] | None = None) -> StreamNet:
    """A StreamNet with MTLoRA (dropout on, so eval mode matters) and every adapter tensor random."""
    torch.manual_seed(0)
    config = MTLoRAConfig(tasks=MT_TASKS, r=4, r_task=2, scale=4.0, dropout=0.1, target_modules=["inp", "mid", "out"],
                          task_specific_modules=["mid", "out"] if task_specific is None else task_specific)
    model = inject(StreamNet(), config)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(0.3 * torch.randn_like(param))
    return model.eval()


def frozen_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def run_all(model: StreamNet, x: torch.Tensor) -> list[torch.Tensor]:
    shared, tasks = model.forward_streams(x)
    return [model(x), shared, *tasks]


def test_merged_mtlora_layer_streams_follow_the_formula():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    weight, bias = base.weight.detach().clone(), base.bias.detach().clone()
    layer = MTLoRALinear(base, num_tasks=3, r=4, r_task=2, scale=4.0, dropout=0.2).eval()
    with torch.no_grad():
        for param in (layer.B, layer.task_B):
            param.normal_()
    x, streams = torch.randn(5, 16), [torch.randn(5, 16) for _ in range(3)]
    before_shared, before_tasks = layer.forward_streams(x, streams)
    layer.merge()
    assert not torch.equal(base.weight, weight)
    shared, tasks = layer.forward_streams(x, streams)
    torch.testing.assert_close(shared, x @ (weight + 4.0 * layer.B @ layer.A).T + bias, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(x), shared)
    for t, (got, u) in enumerate(zip(tasks, streams, strict=True)):
        expected = x @ weight.T + bias + 4.0 * u @ layer.task_A[t].T @ layer.task_B[t].T
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got, before_tasks[t], atol=1e-5, rtol=1e-5)
    layer.unmerge()
    assert torch.equal(base.weight, weight)
    after_shared, after_tasks = layer.forward_streams(x, streams)
    assert torch.equal(after_shared, before_shared)
    assert all(torch.equal(a, b) for a, b in zip(after_tasks, before_tasks, strict=True))
    with pytest.raises(ValueError, match="no per-task merge"):
        layer.merge(0)


def test_mtlora_model_merged_equals_unmerged_and_unmerge_is_exact():
    model = mtlora_net()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    weights = frozen_weights(model)
    expected = run_all(model, x)
    merge(model)
    assert all(not torch.equal(p, weights[n]) for n, p in model.named_parameters() if n.endswith("base_layer.weight"))
    for got, want in zip(run_all(model, x), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="already merged"):
        merge(model)
    unmerge(model)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)
    assert all(torch.equal(got, want) for got, want in zip(run_all(model, x), expected, strict=True))


def test_mtlora_merge_refuses_a_task():
    model = mtlora_net()
    weights = frozen_weights(model)
    for task in ("seg", 0):
        with pytest.raises(ValueError, match="MTLoRA has no per-task merge .*own stream input.*merge\\(model\\) "
                                             "without a task"):
            merge(model, task)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)
    assert not any(m.merged for m in model.modules() if isinstance(m, AdapterLayer))


def test_mtlora_merge_and_unload_refuses_to_drop_task_specific_loras():
    model = mtlora_net()
    weights = frozen_weights(model)
    with pytest.raises(ValueError, match=r"task-specific LoRAs of 2 MTLoRA layers \(e.g. 'mid'\).*merge\(model\) "
                                         "merges the task-agnostic LoRA and keeps them"):
        merge_and_unload(model)
    assert isinstance(model.mid, MTLoRALinear) and isinstance(model.inp, MTLoRALinear)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)


def test_mtlora_without_task_specific_parts_unloads_to_a_plain_model():
    model = mtlora_net(task_specific=[])
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    expected = model(x)
    plain = merge_and_unload(model)
    assert all(type(m) is nn.Linear for m in (plain.inp, plain.mid, plain.out))
    torch.testing.assert_close(plain(x), expected, atol=1e-5, rtol=1e-5)


def test_lora_merge_checks_the_task_name_but_serves_every_task():
    torch.manual_seed(0)
    model = inject(StreamNet(), LoRAConfig(tasks=MT_TASKS, r=2, alpha=4, target_modules=["inp", "mid", "out"]))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdapterLayer):
                module.B.normal_()
    x = torch.randn(4, 8)
    expected = model(x)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        merge(model, "nope")
    with pytest.raises(ValueError, match="task id 3 out of range"):
        merge(model, 3)
    assert not any(m.merged for m in model.modules() if isinstance(m, AdapterLayer))
    merge(model, "depth")
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    unmerge(model)
    assert torch.equal(model(x), expected)


def test_swin_mtlora_backbone_merges_and_unmerges():
    from vlmtl.models.swin_mtlora import create_multitask_swin

    torch.manual_seed(0)
    model = create_multitask_swin(method="mtlora", tasks=("semseg", "normals"), embed_dim=24, depths=(1, 1, 2, 1),
                                  num_heads=(1, 2, 3, 6), window_size=4, img_size=64, r=4, r_task=2)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    model.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(images)
        merge(model.backbone)
        assert all(m.merged for m in model.backbone.modules() if isinstance(m, MTLoRALinear))
        merged = model(images)
        unmerge(model.backbone)
        restored = model(images)
    for task, want in expected.items():
        torch.testing.assert_close(merged[task], want, atol=1e-4, rtol=1e-4)
        assert torch.equal(restored[task], want), task
    with pytest.raises(ValueError, match="MTLoRA has no per-task merge"):
        merge(model.backbone, "semseg")
    with pytest.raises(ValueError, match="task-specific LoRAs of 12 MTLoRA layers"):
        merge_and_unload(model.backbone)
