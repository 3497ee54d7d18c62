"""Backbones with multi-task adapters: CLIP towers (open_clip, Hugging Face), a LLaVA decoder
(Hugging Face), and a Swin with MTLoRA (timm)."""

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
from .llava import (
    DEFAULT_LLAVA_DIR,
    MultiTaskLlava,
    build_tiny_llava,
    create_multitask_llava,
    llava_image_processor,
    load_llava,
    save_llava,
)
from .llava_text import HFLlavaTokenizer, LlavaWordTokenizer, build_inputs
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
    "DEFAULT_LLAVA_DIR",
    "MultiTaskLlava",
    "HFLlavaTokenizer",
    "LlavaWordTokenizer",
    "build_inputs",
    "llava_image_processor",
    "save_llava",
    "build_tiny_llava",
    "create_multitask_llava",
    "load_llava",
    "create_multitask_swin",
]
