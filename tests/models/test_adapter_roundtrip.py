"""save_adapters/load_adapters round-trip every adapter method on every backbone.

For each backbone (open_clip CLIP, Hugging Face CLIP, LLaVA, timm Swin) and method: every
saved tensor is random (zero-init B's would make a lost tensor invisible), a fresh model
built from the same seed and loaded must hold the same tensors and give the same outputs on
a mixed-task batch, a model adapted for the tasks in another order is refused, and a bare
base model gets the adapters injected from the saved config.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vlmtl.adapters import LoRAConfig, MTLLoRAConfig, get_config, inject, load_adapters, save_adapters, use_tasks
from vlmtl.adapters.config import AdapterConfig
from vlmtl.adapters.io import WEIGHTS_NAME, adapter_state_dict
from vlmtl.adapters.routing import routed_layers

from ..conftest import make_hf_clip, make_open_clip

SEED = 0
HPARAMS = {"lora": dict(r=2, alpha=4.0), "mtl_lora": dict(r=2, alpha=4.0, n_up=2, temperature=0.5)}


def vl_config(method: str, tasks: list[str], target_modules: str) -> AdapterConfig:
    """The core config the CLIP and LLaVA factories build for ``method`` (built here so the
    test does not depend on the factories' signatures)."""
    return {"lora": LoRAConfig, "mtl_lora": MTLLoRAConfig}[method](
        tasks=list(tasks), target_modules=target_modules, **HPARAMS[method]
    )


@dataclass
class Adapted:
    """A built model: ``module`` holds the adapters (what is saved); ``run`` gives its outputs;
    ``owner`` is the whole model when it has more than ``module`` (Swin's decoders)."""

    module: nn.Module
    run: Callable[[], list[torch.Tensor]]
    owner: nn.Module | None = None


def _routed(module: nn.Module, tasks):
    """Route per-sample task ids when the model has routed layers (plain LoRA has none)."""
    return use_tasks(module, tasks) if next(routed_layers(module), None) is not None else nullcontext()


# --- CLIP (open_clip and Hugging Face): adapters in both towers, as create_multitask_clip puts them

CLIP_TASKS = ["vqa", "retrieval", "caption"]
CLIP_MIXED = ["caption", "vqa", "retrieval", "vqa"]


def _clip_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=generator), torch.randint(1, 100, (4, 16), generator=generator)


def _clip_run(kind: str, model: nn.Module) -> Callable[[], list[torch.Tensor]]:
    images, tokens = _clip_inputs()

    def run() -> list[torch.Tensor]:
        with torch.no_grad(), _routed(model, CLIP_MIXED):
            if kind == "open_clip":
                return [model.encode_image(images), model.encode_text(tokens)]
            out = model(input_ids=tokens, pixel_values=images)
            return [out.image_embeds, out.text_embeds]

    return run


def _clip_base(kind: str) -> nn.Module:
    return make_open_clip(SEED) if kind == "open_clip" else make_hf_clip(SEED)


def build_clip(kind: str, method: str, tasks: list[str]) -> Adapted:
    from vlmtl.models.clip import tower_target_regex

    model = _clip_base(kind)
    inject(model, vl_config(method, tasks, tower_target_regex(kind)))  # both towers, attention + MLP
    return Adapted(model.eval(), _clip_run(kind, model))


def bare_clip(kind: str) -> tuple[nn.Module, Callable[[nn.Module], Adapted]]:
    return _clip_base(kind), lambda model: Adapted(model.eval(), _clip_run(kind, model))


# --- LLaVA: a tiny model built offline as tests/models/test_llava.py does, adapted in its decoder and
# in the vision layers that feed the projector (which stays trainable, so it is saved too)

LLAVA_TASKS = ["vqa", "caption"]
LLAVA_TEXTS = ["what color is the cube", "a red cube on a table", "how many balls are there"]
LLAVA_MIXED = ["vqa", "caption", "vqa"]
LLAVA_TINY = dict(image_size=32, patch_size=8, hidden=32, layers=2, heads=2)


def _llava_tokenizer():
    from vlmtl.models.llava_text import LlavaWordTokenizer

    return LlavaWordTokenizer.build(LLAVA_TEXTS + ["red blue green two three a sphere"])


def _llava_base():
    from vlmtl.models.llava_build import tiny_llava_for

    tokenizer = _llava_tokenizer()
    torch.manual_seed(SEED)
    return tiny_llava_for(tokenizer, **LLAVA_TINY), tokenizer


def _llava_adapted(wrapper) -> Adapted:
    wrapper.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    batch = wrapper.encode(LLAVA_TEXTS, LLAVA_MIXED, targets=["red", "a cube", "two"])

    def run() -> list[torch.Tensor]:
        with torch.no_grad():
            return [wrapper(images, batch["input_ids"], batch["attention_mask"], task_ids=LLAVA_MIXED).logits]

    return Adapted(wrapper.model, run)


def build_llava(method: str, tasks: list[str]) -> Adapted:
    from vlmtl.models.llava import VISION_TARGETS, MultiTaskLlava, llava_target_regex

    base, tokenizer = _llava_base()
    inject(base, vl_config(method, tasks, llava_target_regex(base.config, vision_targets=VISION_TARGETS)))
    return _llava_adapted(MultiTaskLlava(base, tokenizer))


def bare_llava() -> tuple[nn.Module, Callable[[nn.Module], Adapted]]:
    from vlmtl.models.llava import MultiTaskLlava

    base, tokenizer = _llava_base()
    return base, lambda model: _llava_adapted(MultiTaskLlava(model, tokenizer))


# --- Swin: a tiny timm Swin from create_multitask_swin, as tests/models/test_swin_mtlora.py builds it.
# The decoders live outside the backbone and are not adapters: they are neither perturbed nor saved.

SWIN_TASKS = ["semseg", "normals"]
SWIN_OUTPUTS = {"semseg": 21, "normals": 3}
SWIN_TINY = dict(embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 6), window_size=4, img_size=64, r=4)


def _swin_run(model: nn.Module) -> Callable[[], list[torch.Tensor]]:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))

    def run() -> list[torch.Tensor]:
        with torch.no_grad():
            out = model(images)  # every task's prediction: MTL-LoRA routes one task per pass
        return [out[t] for t in model.tasks]

    return run


def _swin(method: str, tasks: list[str]):
    from vlmtl.models.swin_mtlora import create_multitask_swin

    torch.manual_seed(SEED)
    extra = {"r_task": 2} if method == "mtlora" else {"adapter_kwargs": {"n_up": 2}} if method == "mtl_lora" else {}
    return create_multitask_swin(method=method, tasks=tuple(tasks), num_outputs=SWIN_OUTPUTS, **SWIN_TINY,
                                 **extra).eval()


def build_swin(method: str, tasks: list[str]) -> Adapted:
    model = _swin(method, tasks)
    return Adapted(model.backbone, _swin_run(model), owner=model)


def bare_swin(method: str, decoders_from: nn.Module) -> tuple[nn.Module, Callable[[nn.Module], Adapted]]:
    """A Swin backbone without adapters, and how to wrap it once loaded (with the saved
    model's decoders, which are not part of the adapter files)."""
    from vlmtl.models.swin_mtlora import MultiTaskSwin

    backbone = _swin("full", SWIN_TASKS).backbone  # no adapters; inject() freezes it when loading

    def wrap(loaded: nn.Module) -> Adapted:
        model = MultiTaskSwin(loaded, SWIN_TASKS, SWIN_OUTPUTS, method)
        model.decoders.load_state_dict(decoders_from.state_dict())
        return Adapted(loaded, _swin_run(model.eval()))

    return backbone, wrap


# --- the cases -----------------------------------------------------------------------------------

BACKBONE_TASKS = {"open_clip": CLIP_TASKS, "hf_clip": CLIP_TASKS, "llava": LLAVA_TASKS, "swin": SWIN_TASKS}
CASES = [(b, m) for b in ("open_clip", "hf_clip", "llava") for m in ("lora", "mtl_lora")] + [
    ("swin", m) for m in ("lora", "mtl_lora", "mtlora")
]


def build(backbone: str, method: str, tasks: list[str] | None = None) -> Adapted:
    tasks = list(BACKBONE_TASKS[backbone] if tasks is None else tasks)
    if backbone == "llava":
        return build_llava(method, tasks)
    if backbone == "swin":
        return build_swin(method, tasks)
    return build_clip("open_clip" if backbone == "open_clip" else "hf", method, tasks)


def perturb(module: nn.Module) -> None:
    """Every tensor that is saved gets random values (deterministically)."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for _, param in sorted(adapter_state_dict(module).items()):
            param.add_(0.2 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def saved_model(backbone: str, method: str, folder) -> Adapted:
    model = build(backbone, method)
    perturb(model.module)
    save_adapters(model.module, folder)
    return model


def assert_same_outputs(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def assert_holds_saved_tensors(module: nn.Module, folder, reference: nn.Module) -> None:
    saved = load_file(str(folder / WEIGHTS_NAME))
    expected = adapter_state_dict(reference)
    assert sorted(saved) == sorted(expected)
    params = dict(module.named_parameters())
    for name, tensor in saved.items():
        assert torch.equal(tensor, expected[name]), name
        assert torch.equal(params[name], tensor), name


@pytest.mark.parametrize("backbone, method", CASES)
def test_round_trip_restores_every_tensor_and_the_outputs(tmp_path, backbone, method):
    original = saved_model(backbone, method, tmp_path)
    expected = original.run()
    fresh = build(backbone, method)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.run(), expected, strict=True))  # the test is not vacuous
    load_adapters(fresh.module, tmp_path)
    assert_holds_saved_tensors(fresh.module, tmp_path, original.module)
    assert_same_outputs(fresh.run(), expected)


@pytest.mark.parametrize("backbone", list(BACKBONE_TASKS))
def test_loading_into_tasks_in_another_order_is_refused(tmp_path, backbone):
    saved_model(backbone, "mtl_lora", tmp_path)
    tasks = list(reversed(BACKBONE_TASKS[backbone]))
    other = build(backbone, "mtl_lora", tasks)
    before = {n: p.clone() for n, p in other.module.state_dict().items()}
    with pytest.raises(ValueError, match=r"saved adapters are for tasks \[.*\], the model's are \[.*\]"):
        load_adapters(other.module, tmp_path)
    assert all(torch.equal(p, before[n]) for n, p in other.module.state_dict().items())


def bare(backbone: str, method: str, original: Adapted) -> tuple[nn.Module, Callable[[nn.Module], Adapted]]:
    if backbone == "llava":
        return bare_llava()
    if backbone == "swin":
        return bare_swin(method, original.owner.decoders)
    return bare_clip("open_clip" if backbone == "open_clip" else "hf")


@pytest.mark.parametrize("backbone, method", CASES)
def test_bare_base_model_gets_the_saved_adapters(tmp_path, backbone, method):
    original = saved_model(backbone, method, tmp_path)
    expected = original.run()
    base, wrap = bare(backbone, method, original)
    loaded = wrap(load_adapters(base, tmp_path))
    assert get_config(loaded.module).to_dict() == get_config(original.module).to_dict()
    assert_holds_saved_tensors(loaded.module, tmp_path, original.module)
    assert_same_outputs(loaded.run(), expected)


@pytest.mark.parametrize("backbone, method", [("open_clip", "mtl_lora"), ("swin", "mtlora")])
def test_loading_into_a_merged_model_is_refused(tmp_path, backbone, method):
    from vlmtl.adapters import merge, unmerge

    original = saved_model(backbone, method, tmp_path)
    expected = original.run()
    fresh = build(backbone, method)
    merge(fresh.module, "vqa" if method == "mtl_lora" else None)
    with pytest.raises(ValueError, match=r"adapter layers are merged .*unmerge\(model\) first"):
        load_adapters(fresh.module, tmp_path)
    unmerge(fresh.module)
    load_adapters(fresh.module, tmp_path)
    assert_same_outputs(fresh.run(), expected)
