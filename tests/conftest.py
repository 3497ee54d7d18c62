"""Shared fixtures: tiny real models (open_clip CLIP, transformers CLIPModel) built offline."""

from __future__ import annotations

import pytest
import torch


def make_open_clip(seed: int = 0):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16, mlp_ratio=2.0),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
    )
    return model.eval()


def make_hf_clip(seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        ),
        projection_dim=32,
    )
    return CLIPModel(config).eval()


@pytest.fixture
def open_clip_model():
    return make_open_clip()


@pytest.fixture
def hf_clip_model():
    return make_hf_clip()


@pytest.fixture
def clip_inputs():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 32, 32, generator=generator)
    tokens = torch.randint(1, 100, (4, 16), generator=generator)
    return images, tokens
