"""Activation checkpointing keeps task routing right: a mixed-task batch gives the same loss
and the same adapter gradients with and without it, on open_clip and Hugging Face CLIP towers
and on the LLaVA decoder (Swin: tests/models/test_swin_mtlora.py), and the blocks really are
recomputed (an adapted layer runs twice per step)."""

from __future__ import annotations

import pytest
import torch

from vlmtl.adapters import AdapterLayer, MTLLoRAConfig, inject
from vlmtl.models import MultiTaskCLIP, tower_target_regex
from vlmtl.models.llava import MultiTaskLlava, llava_target_regex
from vlmtl.models.llava_build import tiny_llava_for
from vlmtl.models.llava_text import LlavaWordTokenizer

from ..conftest import make_hf_clip, make_open_clip

TASKS = ["vqa", "retrieval", "caption"]
MIXED = ["vqa", "caption", "retrieval", "vqa"]


def randomize_adapters(model: torch.nn.Module) -> None:
    """Give every task its own non-zero update (B starts at zero)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def step(loss_of, model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def forward_count(model: torch.nn.Module):
    """How many times the first adapted layer ran since this was called."""
    layer = next(m for m in model.modules() if isinstance(m, AdapterLayer))
    calls = []
    layer.register_forward_hook(lambda *_: calls.append(1))
    return calls


def assert_same_with_checkpointing(model, set_checkpointing, loss_of) -> None:
    model.train()
    reference_loss, reference_grads = step(loss_of, model)
    set_checkpointing(True)
    calls = forward_count(model)
    loss, grads = step(loss_of, model)
    assert len(calls) == 2, f"the adapted layer ran {len(calls)} time(s): checkpointing did not recompute it"
    torch.testing.assert_close(loss, reference_loss)
    assert grads.keys() == reference_grads.keys() and any(".B" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], reference_grads[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("kind", ["open_clip", "hf"])
def test_clip_towers_route_mixed_batches_under_checkpointing(kind, clip_inputs):
    backbone = make_open_clip() if kind == "open_clip" else make_hf_clip()
    inject(backbone, MTLLoRAConfig(tasks=TASKS, r=4, alpha=8, n_up=2, temperature=0.5,
                                   target_modules=tower_target_regex(kind)))
    randomize_adapters(backbone)
    clip = MultiTaskCLIP(backbone, kind, TASKS)
    images, tokens = clip_inputs

    def loss_of() -> torch.Tensor:
        image = clip.encode_image(images, task_ids=MIXED)
        text = clip.encode_text(tokens, task_ids=MIXED)
        return (image * text).sum() + image.pow(2).mean()

    assert_same_with_checkpointing(clip, clip.set_grad_checkpointing, loss_of)


def test_llava_decoder_routes_mixed_batches_under_checkpointing():
    tokenizer = LlavaWordTokenizer.build(["what color is the cube", "a red cube", "two blue balls"])
    torch.manual_seed(0)
    base = tiny_llava_for(tokenizer, image_size=32, patch_size=8, hidden=32, layers=2, heads=2)
    config = MTLLoRAConfig(tasks=["vqa", "caption"], r=4, alpha=8, n_up=2, temperature=0.5,
                           target_modules=llava_target_regex(base.config))
    llava = MultiTaskLlava(base, tokenizer, config)
    randomize_adapters(llava.model.model.language_model)
    task_of = ["vqa", "caption", "vqa"]
    inputs = llava.encode(["what color is the cube", "", "two blue balls"], task_of,
                          targets=["red", "a red cube", "two"])
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def loss_of() -> torch.Tensor:
        return llava(pixels, inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"],
                     task_ids=task_of).loss

    assert_same_with_checkpointing(llava, llava.set_grad_checkpointing, loss_of)
