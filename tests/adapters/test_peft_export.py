"""Any task of a vlmtl LoRA / MTL-LoRA model as a standard PEFT adapter: PEFT loads it onto
the plain Hugging Face model and gives vlmtl's outputs for that task."""

from __future__ import annotations

import json

import peft
import pytest
import torch

from vlmtl.adapters import LoRAConfig, MTLLoRAConfig, inject, use_tasks
from vlmtl.adapters.peft_export import export_peft, export_peft_all
from vlmtl.models import MultiTaskCLIP, tower_target_regex

from ..conftest import make_hf_clip, make_open_clip

TASKS = ["vqa", "retrieval", "caption"]


def adapted_hf_clip(config) -> MultiTaskCLIP:
    backbone = make_hf_clip(seed=5)
    inject(backbone, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every task its own non-zero update
        for p in backbone.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return MultiTaskCLIP(backbone.eval(), "hf", TASKS)


@pytest.mark.parametrize("method", ["mtl_lora", "lora"])
def test_peft_loads_each_exported_task_onto_the_plain_model(method, tmp_path, clip_inputs):
    targets = tower_target_regex("hf")
    config = (MTLLoRAConfig(tasks=TASKS, r=4, alpha=8, n_up=2, temperature=0.5, target_modules=targets)
              if method == "mtl_lora" else LoRAConfig(tasks=TASKS, r=4, alpha=8, target_modules=targets))
    clip = adapted_hf_clip(config)
    images, tokens = clip_inputs
    folders = export_peft_all(clip.backbone, tmp_path / "peft")
    assert [f.name for f in folders] == TASKS
    document = json.loads((folders[0] / "adapter_config.json").read_text())
    assert document["peft_type"] == "LORA" and document["r"] == 4

    plain = make_hf_clip(seed=5).eval()  # the same base weights, no vlmtl code
    model = peft.PeftModel.from_pretrained(plain, str(folders[0]), adapter_name=TASKS[0])
    for folder in folders[1:]:
        model.load_adapter(str(folder), adapter_name=folder.name)
    with torch.no_grad():
        for task in TASKS:
            model.set_adapter(task)
            torch.testing.assert_close(model.get_image_features(pixel_values=images).pooler_output,
                                       clip.encode_image(images, task_ids=task), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.get_text_features(input_ids=tokens).pooler_output,
                                       clip.encode_text(tokens, task_ids=task), atol=1e-5, rtol=1e-5)
    if method == "mtl_lora":  # the tasks really differ, so the check above can fail
        with torch.no_grad():
            assert not torch.allclose(clip.encode_image(images, task_ids="vqa"),
                                      clip.encode_image(images, task_ids="caption"), atol=1e-4)


def test_unknown_task_and_open_clip_attention_are_refused(tmp_path):
    clip = adapted_hf_clip(MTLLoRAConfig(tasks=TASKS, r=4, target_modules=tower_target_regex("hf")))
    with pytest.raises(ValueError, match="unknown task 'ocr'"):
        export_peft(clip.backbone, "ocr", tmp_path / "x")
    open_clip_model = make_open_clip()
    inject(open_clip_model, MTLLoRAConfig(tasks=TASKS, r=4, target_modules=tower_target_regex("open_clip")))
    with pytest.raises(ValueError, match="PEFT has no LoRA on its fused in_proj"):
        export_peft(open_clip_model, "vqa", tmp_path / "y")


def test_peft_loads_an_exported_llava_decoder_task(tmp_path):
    from vlmtl.models.llava import MultiTaskLlava, llava_target_regex
    from vlmtl.models.llava_build import tiny_llava_for
    from vlmtl.models.llava_text import LlavaWordTokenizer

    tokenizer = LlavaWordTokenizer.build(["what color is the cube", "a red cube"])

    def base():
        torch.manual_seed(3)
        return tiny_llava_for(tokenizer, image_size=32, patch_size=8, hidden=32, layers=2, heads=2).eval()

    model = base()
    config = MTLLoRAConfig(tasks=["vqa", "caption"], r=4, alpha=8, n_up=2, temperature=0.5,
                           target_modules=llava_target_regex(model.config))
    llava = MultiTaskLlava(model, tokenizer, config, train_projector=False)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    inputs = llava.encode(["what color is the cube"], "vqa")
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    exported = export_peft(model, "caption", tmp_path / "caption")
    loaded = peft.PeftModel.from_pretrained(base(), str(exported))
    with torch.no_grad():
        expected = llava(pixels, inputs["input_ids"], attention_mask=inputs["attention_mask"], task_ids="caption")
        got = loaded(pixel_values=pixels, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)


def test_vlmtl_folders_and_peft_folders_are_never_mistaken_for_each_other(tmp_path):
    from vlmtl.adapters import load_adapters, save_adapters

    clip = adapted_hf_clip(MTLLoRAConfig(tasks=TASKS, r=4, target_modules=tower_target_regex("hf")))
    save_adapters(clip.backbone, tmp_path / "vlmtl")
    with pytest.raises(ValueError, match="Can't find 'adapter_config.json'"):  # vlmtl's own file names
        peft.PeftModel.from_pretrained(make_hf_clip(seed=5), str(tmp_path / "vlmtl"))
    export_peft(clip.backbone, "vqa", tmp_path / "peft")
    with pytest.raises(ValueError, match="is a PEFT adapter, not vlmtl's format"):
        load_adapters(make_hf_clip(seed=5), tmp_path / "peft")


def test_a_peft_lora_adapter_starts_vlmtl_lora(tmp_path, clip_inputs):
    from vlmtl.adapters import LoRALinear, get_config
    from vlmtl.adapters.peft_export import import_peft

    reference = peft.get_peft_model(make_hf_clip(seed=5), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"], lora_dropout=0.0))
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    reference.save_pretrained(tmp_path / "peft")
    model = import_peft(make_hf_clip(seed=5), tmp_path / "peft", tasks=["vqa", "caption"])
    assert get_config(model).method == "lora" and get_config(model).tasks == ["vqa", "caption"]
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 3 * 2 * 2  # 3 targets x 2 layers x 2 towers
    images, tokens = clip_inputs
    with torch.no_grad():
        reference.eval()
        torch.testing.assert_close(model.eval().get_image_features(pixel_values=images).pooler_output,
                                   reference.get_image_features(pixel_values=images).pooler_output,
                                   atol=1e-5, rtol=1e-5)
    document = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps({**document, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        import_peft(make_hf_clip(seed=5), tmp_path / "peft")


def test_open_clip_takes_an_exported_mlp_adapter_through_peft_injection(tmp_path):
    """open_clip models are plain nn.Modules: PEFT's inject_adapter_in_model plus
    set_peft_model_state_dict give them an exported task (MLP targets) with vlmtl's outputs."""
    import copy

    import peft
    from safetensors.torch import load_file

    torch.manual_seed(0)
    plain = make_open_clip()
    model = copy.deepcopy(plain)
    inject(model, MTLLoRAConfig(tasks=TASKS, r=4, target_modules=r".*mlp\.(c_fc|c_proj)$"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    export_peft(model, "vqa", tmp_path / "vqa")
    taken = peft.inject_adapter_in_model(peft.LoraConfig.from_pretrained(str(tmp_path / "vqa")), plain)
    loaded = peft.set_peft_model_state_dict(taken, load_file(str(tmp_path / "vqa" / "adapter_model.safetensors")))
    assert not loaded.unexpected_keys
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), use_tasks(model.eval(), "vqa"):
        expected = model.encode_image(images)
    with torch.no_grad():
        got = taken.eval().encode_image(images)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, make_open_clip().eval().encode_image(images), atol=1e-3)
