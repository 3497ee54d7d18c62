"""Saving and loading adapters: the file format, bit-identical round trips, clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from vlmtl.adapters import (
    LoRAConfig,
    MTLLoRAConfig,
    inject,
    load_adapters,
    save_adapters,
    use_tasks,
)
from vlmtl.adapters.io import CONFIG_NAME, WEIGHTS_NAME

from ..conftest import make_hf_clip, make_open_clip

TASKS = ["vqa", "retrieval", "caption"]
CONFIG = MTLLoRAConfig(tasks=TASKS, r=4, alpha=8, n_up=2, temperature=0.3, target_modules=["attn", "c_fc", "c_proj"])


def trained(model, config=CONFIG):
    inject(model, config)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    model.visual.ln_post.weight.requires_grad_(True)  # a non-adapter trainable tensor is saved too
    with torch.no_grad():
        model.visual.ln_post.weight.mul_(1.5)
    return model


def test_round_trip_into_fresh_base_is_bit_identical(tmp_path, clip_inputs):
    images, tokens = clip_inputs
    model = trained(make_open_clip(seed=0))
    ids = ["vqa", "caption", "retrieval", "caption"]
    with use_tasks(model, ids):
        expected = model.encode_image(images), model.encode_text(tokens)
    save_adapters(model, tmp_path / "run")
    fresh = make_open_clip(seed=0)
    load_adapters(fresh, tmp_path / "run")
    with use_tasks(fresh, ids):
        got = fresh.encode_image(images), fresh.encode_text(tokens)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_files_hold_every_trainable_tensor_and_the_tasks(tmp_path):
    model = trained(make_open_clip())
    save_adapters(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    document = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert document["method"] == "mtl_lora" and document["tasks"] == TASKS and document["n_up"] == 2
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with safe_open(str(tmp_path / WEIGHTS_NAME), "pt") as f:
        assert set(f.keys()) == trainable
        assert json.loads(f.metadata()["tasks"]) == TASKS
        assert "visual.ln_post.weight" in f.keys()
        assert "visual.transformer.resblocks.0.attn.in_proj.Lambda" in f.keys()


def test_loading_into_other_tasks_is_refused(tmp_path):
    save_adapters(trained(make_open_clip()), tmp_path)
    other = make_open_clip()
    inject(other, MTLLoRAConfig(tasks=["vqa", "caption", "retrieval"], r=4, alpha=8, n_up=2, temperature=0.3,
                                target_modules=["attn", "c_fc", "c_proj"]))
    with pytest.raises(ValueError, match="saved adapters are for tasks"):
        load_adapters(other, tmp_path)


def test_loading_other_config_or_method_is_refused(tmp_path):
    save_adapters(trained(make_open_clip()), tmp_path)
    lora = make_open_clip()
    inject(lora, LoRAConfig(target_modules=["c_fc"]))
    with pytest.raises(ValueError, match="saved adapters are 'mtl_lora', the model has 'lora'"):
        load_adapters(lora, tmp_path)
    other_rank = make_open_clip()
    inject(other_rank, MTLLoRAConfig(tasks=TASKS, r=8, alpha=8, n_up=2, temperature=0.3,
                                     target_modules=["attn", "c_fc", "c_proj"]))
    with pytest.raises(ValueError, match="differs from the model's"):
        load_adapters(other_rank, tmp_path)


def test_loading_into_other_shapes_is_refused(tmp_path):
    save_adapters(trained(make_open_clip()), tmp_path)
    import open_clip

    wider = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=48, layers=2, head_width=16, mlp_ratio=2.0),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
    )
    with pytest.raises(ValueError, match="shape mismatch for visual"):
        load_adapters(wider, tmp_path)


def test_loading_into_another_architecture_is_refused(tmp_path):
    save_adapters(trained(make_open_clip()), tmp_path)
    with pytest.raises(ValueError, match="matched no linear or attention module|adapted layers differ"):
        load_adapters(make_hf_clip(), tmp_path)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_adapters(make_open_clip(), tmp_path)
    save_adapters(trained(make_open_clip()), tmp_path)
    (tmp_path / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapters(make_open_clip(), tmp_path)


def test_save_needs_adapters_and_writes_atomically(tmp_path):
    with pytest.raises(ValueError, match="has no adapters"):
        save_adapters(make_open_clip(), tmp_path)
    model = trained(make_open_clip())
    save_adapters(model, tmp_path)
    save_adapters(model, tmp_path)  # overwrite in place
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_leaves_the_previous_file(tmp_path):
    from vlmtl.adapters.io import atomic_write

    target = tmp_path / "file.bin"
    target.write_bytes(b"previous")

    def crash(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]


def test_folders_written_with_the_earlier_peft_style_names_still_load(tmp_path, clip_inputs):
    from vlmtl.adapters.io import LEGACY_NAMES

    model = trained(make_open_clip())
    save_adapters(model, tmp_path)
    for new, old in zip((CONFIG_NAME, WEIGHTS_NAME), LEGACY_NAMES):
        (tmp_path / new).rename(tmp_path / old)  # as vlmtl 0.1 wrote them
    loaded = load_adapters(make_open_clip(), tmp_path)
    images, tokens = clip_inputs
    with torch.no_grad(), use_tasks(model, "vqa"), use_tasks(loaded, "vqa"):
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))
