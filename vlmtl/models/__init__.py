"""Backbones with multi-task adapters: CLIP towers (open_clip, Hugging Face)."""

from .clip import (
    DEFAULT_CLIP,
    DEFAULT_CLIP_DIR,
    MultiTaskCLIP,
    adapter_config,
    create_multitask_clip,
    load_hf_clip,
    load_open_clip,
    tower_target_regex,
)
from .llava import MultiTaskLlava, build_tiny_llava, create_multitask_llava, load_llava
from .swin_mtlora import MultiTaskSwin, create_multitask_swin
from .tokenizer import WordTokenizer

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_CLIP_DIR",
    "MultiTaskCLIP",
    "adapter_config",
    "create_multitask_clip",
    "load_hf_clip",
    "load_open_clip",
    "tower_target_regex",
    "WordTokenizer",
    "MultiTaskSwin",
    "MultiTaskLlava",
    "build_tiny_llava",
    "create_multitask_llava",
    "load_llava",
    "create_multitask_swin",
]
