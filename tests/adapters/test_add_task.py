"""add_task: a new task for a trained MTL-LoRA model, the old tasks bit-identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmtl.adapters import LoRAConfig, MTLLoRAConfig, add_task, inject, load_adapters, save_adapters, use_tasks

from ..conftest import make_open_clip


def trained_model(lambda_type: str = "full") -> nn.Module:
    torch.manual_seed(0)
    model = make_open_clip()
    inject(model, MTLLoRAConfig(tasks=["vqa", "retrieval"], r=4, n_up=3, lambda_type=lambda_type))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # as if trained: every task differs
    return model


def encode(model: nn.Module, images: torch.Tensor, task) -> torch.Tensor:
    with torch.no_grad(), use_tasks(model, task):
        return model.encode_image(images)


@pytest.mark.parametrize("lambda_type", ["full", "diagonal"])
def test_new_task_trains_alone_and_old_tasks_stay_bit_identical(lambda_type):
    model = trained_model(lambda_type)
    images = torch.randn(4, 3, 32, 32)
    before = {t: encode(model, images, t) for t in ("vqa", "retrieval")}
    extended = add_task(model, "caption")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if any(p is q for q in extended)}, "only Λ and w train"
    optimizer = torch.optim.AdamW(extended, lr=1e-2, weight_decay=0.0)
    target = torch.randn(4, model.visual.output_dim)
    for _ in range(5):
        optimizer.zero_grad()
        with use_tasks(model, ["caption", "vqa", "caption", "retrieval"]):  # a mixed batch, old tasks too
            loss = (model.encode_image(images) - target).square().mean()
        loss.backward()
        optimizer.step()
    for task, output in before.items():
        assert torch.equal(encode(model, images, task), output), f"{task} changed"
    new = encode(model, images, "caption")
    assert not torch.allclose(new, before["vqa"]) and not torch.allclose(new, before["retrieval"])


def test_the_extended_model_saves_and_loads_with_its_new_task(tmp_path):
    model = trained_model()
    add_task(model, "caption")
    save_adapters(model, tmp_path / "adapters")
    fresh = make_open_clip()
    load_adapters(fresh, tmp_path / "adapters")
    images = torch.randn(2, 3, 32, 32)
    for task in ("vqa", "retrieval", "caption"):
        assert torch.equal(encode(fresh, images, task), encode(model, images, task))


def test_train_shared_unfreezes_a_and_b():
    model = trained_model()
    add_task(model, "caption", train_shared=True)
    names = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"A", "B", "Lambda", "w"}


def test_refusals_name_the_problem():
    model = trained_model()
    with pytest.raises(ValueError, match="already one of this model's tasks"):
        add_task(model, "vqa")
    lora = make_open_clip()
    inject(lora, LoRAConfig(tasks=["vqa"], r=4))
    with pytest.raises(ValueError, match="extends MTL-LoRA models"):
        add_task(lora, "caption")
