"""Backbones with multi-task adapters, one factory shape each:
``create_multitask_clip(model, tasks=, method=, ...)`` (open_clip or Hugging Face CLIP),
``create_multitask_llava(model, tasks=, method=, ...)`` (Hugging Face LLaVA) and
``create_multitask_swin(model, tasks=, method=, ...)`` (timm Swin with MTLoRA)."""

from .adapter_config import build_adapter_config
from .clip import (
    DEFAULT_CLIP,
    DEFAULT_CLIP_DIR,
    MultiTaskCLIP,
    create_multitask_clip,
    load_hf_clip,
    load_open_clip,
    tower_target_regex,
)
from .llava import MultiTaskLlava, create_multitask_llava
from .llava_build import DEFAULT_LLAVA_DIR, build_tiny_llava, llava_image_processor, load_llava, save_llava
from .llava_text import HFLlavaTokenizer, LlavaWordTokenizer, build_inputs
from .swin_mtlora import MultiTaskSwin, create_multitask_swin
from .tokenizer import WordTokenizer

__all__ = [
    "build_adapter_config",
    "DEFAULT_CLIP",
    "DEFAULT_CLIP_DIR",
    "MultiTaskCLIP",
    "create_multitask_clip",
    "load_hf_clip",
    "load_open_clip",
    "tower_target_regex",
    "WordTokenizer",
    "MultiTaskSwin",
    "create_multitask_swin",
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
]
