"""Loading CLIP backbones through their libraries' real paths and adapting both towers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vlmtl.adapters import adapted_module_names
from vlmtl.adapters.layers import LoRALinear, MTLLoRALinear
from vlmtl.models import WordTokenizer, create_multitask_clip, tower_target_regex
from vlmtl.models.tokenizer import WORD_TOKENIZER_FILE

from ..conftest import make_hf_clip, make_open_clip

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture
def open_clip_dir(tmp_path):
    """A folder in open_clip's local-dir layout: open_clip_config.json + open_clip_model.safetensors."""
    model = make_open_clip(seed=7)
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CFG,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    WordTokenizer(["a", "red", "circle"], context_length=16).save(folder / WORD_TOKENIZER_FILE)
    return folder, model


def test_local_dir_loads_the_saved_weights_and_tokenizer(open_clip_dir, clip_inputs):
    folder, reference = open_clip_dir
    images, tokens = clip_inputs
    clip = create_multitask_clip(f"local-dir:{folder}", method="mtl_lora", tasks=["vqa", "retrieval"])
    with torch.no_grad():
        got = clip.encode_image(images, task_ids="vqa")
        expected = reference.encode_image(images)
    torch.testing.assert_close(got, expected)  # zero-init adapters: exactly the saved model
    assert isinstance(clip.tokenizer, WordTokenizer)
    assert clip.tokenize(["a red circle"])[0, :5].tolist() == [clip.tokenizer.sot_id, 2, 3, 4, clip.tokenizer.eot_id]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin"])
def test_pretrained_local_checkpoint_file(tmp_path, clip_inputs, suffix):
    """open_clip's `pretrained=` with a local file path, for a registered model config:
    safetensors, or a ``torch.save`` state dict (``.pt``/``.bin``), as open_clip reads both."""
    import open_clip

    reference = make_open_clip(seed=11)
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "vlmtl-test-tiny.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(config_dir)
    checkpoint = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(checkpoint))
    else:
        torch.save({"state_dict": state} if suffix == ".pt" else state, checkpoint)  # both layouts open_clip reads
    clip = create_multitask_clip("vlmtl-test-tiny", pretrained=str(checkpoint), method="lora",
                                 tasks=["retrieval"])
    images, tokens = clip_inputs
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_text(tokens), reference.encode_text(tokens))
    assert any(isinstance(m, LoRALinear) for m in clip.modules())
    with pytest.raises(FileNotFoundError, match="pretrained checkpoint not found"):
        create_multitask_clip("vlmtl-test-tiny", pretrained=str(tmp_path / "missing.safetensors"))


def test_hf_from_pretrained_directory(tmp_path, clip_inputs):
    reference = make_hf_clip(seed=3)
    reference.save_pretrained(tmp_path / "hf")
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path / "hf")
    WordTokenizer(["a", "dog"], context_length=16).save(tmp_path / "hf" / WORD_TOKENIZER_FILE)
    clip = create_multitask_clip(str(tmp_path / "hf"), backbone="hf", method="mtl_lora", tasks=["vqa", "caption"], r=2)
    images, tokens = clip_inputs
    with torch.no_grad():
        pooled, patch_tokens = clip.encode_image(images, task_ids=["vqa", "caption", "vqa", "vqa"], return_tokens=True)
        expected = reference.get_image_features(pixel_values=images).pooler_output
    torch.testing.assert_close(pooled, expected)
    assert patch_tokens.shape == (4, 17, 32) and clip.image_token_dim == 32 and clip.embed_dim == 32
    names = adapted_module_names(clip.backbone)
    assert any("vision_model" in n for n in names) and any("text_model" in n for n in names)
    from PIL import Image

    assert clip.preprocess(Image.new("RGB", (40, 50))).shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        create_multitask_clip(str(tmp_path / "nothing"), backbone="hf")


def test_targets_cover_attention_and_mlp_of_both_towers(open_clip_dir):
    folder, _ = open_clip_dir
    clip = create_multitask_clip(f"local-dir:{folder}", tasks=["vqa", "retrieval"])
    names = adapted_module_names(clip.backbone)
    for prefix in ("visual.transformer.resblocks.1", "transformer.resblocks.1"):
        for suffix in ("attn.in_proj", "attn.out_proj", "mlp.c_fc", "mlp.c_proj"):
            assert f"{prefix}.{suffix}" in names
    assert all(isinstance(clip.backbone.get_submodule(n), MTLLoRALinear) for n in names)
    image_only = tower_target_regex("open_clip", ["mlp.c_fc"], [])
    assert image_only == r"visual\.transformer\.resblocks\.\d+\.(?:mlp\.c_fc)"


def test_method_none_freezes_and_still_checks_tasks(open_clip_dir, clip_inputs):
    folder, _ = open_clip_dir
    clip = create_multitask_clip(f"local-dir:{folder}", method="heads_only", tasks=["vqa"])
    assert not any(p.requires_grad for p in clip.parameters())
    images, _ = clip_inputs
    clip.encode_image(images, task_ids="vqa")
    with pytest.raises(ValueError, match="unknown task 'caption'"):
        clip.encode_image(images, task_ids="caption")
    with pytest.raises(ValueError, match="unknown method 'adapter'"):
        create_multitask_clip(f"local-dir:{folder}", method="adapter")


def test_word_tokenizer_round_trip(tmp_path):
    tok = WordTokenizer.build(["A red circle.", "two blue squares"], context_length=6)
    ids = tok(["a red circle", "two blue squares and more words here"])
    assert ids.shape == (2, 6) and ids[0].argmax() == 4 and ids[1, -1] == tok.eot_id  # open_clip pools at argmax
    assert tok.decode(ids[0]) == "a red circle"
    tok.save(tmp_path / "t.json")
    assert WordTokenizer.load(tmp_path / "t.json").vocab == tok.vocab
    (tmp_path / "bad.json").write_text('{"vocab": ["x"]}')
    with pytest.raises(ValueError, match="not a vlmtl word-tokenizer"):
        WordTokenizer.load(tmp_path / "bad.json")
