"""CLIP backbones (open_clip and Hugging Face ``CLIPModel``) with multi-task adapters in both towers.

``create_multitask_clip(...)`` is the one call: it loads the backbone exactly as its library
does (open_clip: a model name plus ``pretrained`` tag or local checkpoint path, or
``local-dir:``; transformers: ``from_pretrained(local_dir)``), injects the chosen adapters
into the image and text towers, and returns a :class:`MultiTaskCLIP` whose
``encode_image(images, task=...)`` / ``encode_text(tokens, task=...)`` route task ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlmtl.adapters import inject, use_tasks
from vlmtl.adapters.routing import TaskIds, resolve_task_ids, routed_layers
from vlmtl.paths import assets_dir
from vlmtl.registry import CLIP_BACKBONES, VL_METHODS, VL_TASKS, resolve_method

from .adapter_config import build_adapter_config
from .tokenizer import WORD_TOKENIZER_FILE, WordTokenizer

ASSETS_DIR = assets_dir()
DEFAULT_CLIP_DIR = ASSETS_DIR / "vlmtl-tiny-clip"
DEFAULT_CLIP = f"local-dir:{DEFAULT_CLIP_DIR}"

TOWER_PREFIX = {
    "open_clip": {"image": r"visual\.transformer\.resblocks\.\d+", "text": r"transformer\.resblocks\.\d+"},
    "hf": {"image": r"vision_model\.encoder\.layers\.\d+", "text": r"text_model\.encoder\.layers\.\d+"},
}
DEFAULT_TARGETS = {
    "open_clip": ["attn", "mlp.c_fc", "mlp.c_proj"],
    "hf": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"],
}


def tower_target_regex(
    kind: str, vision_targets: Sequence[str] | str | None = None, text_targets: Sequence[str] | str | None = None
) -> str:
    """One regex over full module names: per tower, a list of block-relative suffixes
    (``["attn", "mlp.c_fc"]``) or a full-name regex; ``[]`` leaves a tower unadapted."""
    parts = []
    for tower, targets in (("image", vision_targets), ("text", text_targets)):
        if targets is None:
            targets = DEFAULT_TARGETS[kind]
        if isinstance(targets, str):
            parts.append(f"(?:{targets})")
        elif targets:
            names = "|".join(re.escape(t) for t in targets)
            parts.append(rf"{TOWER_PREFIX[kind][tower]}\.(?:{names})")
    if not parts:
        raise ValueError("no tower has target modules: give vision_targets or text_targets")
    return "|".join(parts)


class HFTokenizer:
    """A transformers tokenizer called like open_clip's: texts -> LongTensor[B, context_length]."""

    def __init__(self, tokenizer, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.sot_id, self.eot_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.vocab_size = len(tokenizer)

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                               return_tensors="pt")
        return batch["input_ids"]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


class HFImageTransform:
    """A transformers image processor called like a torchvision transform: PIL -> (3, H, W)."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def set_hf_checkpointing(model: nn.Module, enable: bool) -> None:
    """Hugging Face activation checkpointing, non-reentrant (a reentrant recompute would give
    adapters inside frozen layers no gradient), by the name the installed transformers uses."""
    new = hasattr(model, "activation_checkpointing_enable")  # transformers 5.x; gradient_* before
    if enable and new:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif new:
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def load_open_clip(model_name: str = DEFAULT_CLIP, pretrained: str | None = None):
    """(model, preprocess, tokenizer) through open_clip's own factory. ``pretrained`` is a
    tag or a local checkpoint path, as open_clip takes it; ``local-dir:`` folders work too."""
    import open_clip

    if model_name.startswith("local-dir:") and not Path(model_name[len("local-dir:"):]).is_dir():
        raise FileNotFoundError(f"open_clip model folder not found: {model_name[len('local-dir:'):]}")
    looks_like_path = pretrained and ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors")))
    if looks_like_path and not Path(pretrained).exists():
        raise FileNotFoundError(f"pretrained checkpoint not found: {pretrained}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    except RuntimeError as err:
        if pretrained and not Path(pretrained).exists():
            raise RuntimeError(
                f"could not load pretrained {pretrained!r} for {model_name} (downloads are unavailable offline): "
                "pass a local checkpoint file as pretrained="
            ) from err
        raise
    tokenizer = _local_word_tokenizer(model_name) or open_clip.get_tokenizer(model_name)
    return model, preprocess, tokenizer


def load_hf_clip(path: str | Path):
    """(model, preprocess, tokenizer) from a local ``save_pretrained`` folder."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face CLIP model in {path} (config.json missing)")
    model = CLIPModel.from_pretrained(path, local_files_only=True)
    context = model.config.text_config.max_position_embeddings
    tokenizer = _local_word_tokenizer(f"local-dir:{path}") or HFTokenizer(
        AutoTokenizer.from_pretrained(path, local_files_only=True), context
    )
    preprocess = HFImageTransform(CLIPImageProcessor.from_pretrained(path, local_files_only=True))
    return model, preprocess, tokenizer


def _local_word_tokenizer(model_name: str) -> WordTokenizer | None:
    if model_name.startswith("local-dir:"):
        file = Path(model_name[len("local-dir:"):]) / WORD_TOKENIZER_FILE
        if file.is_file():
            return WordTokenizer.load(file)
    return None


class MultiTaskCLIP(nn.Module):
    """A CLIP model (open_clip or Hugging Face) whose encoders take a ``task``.

    ``task_ids`` is a task name/index for the whole batch or one per sample (a batch may
    mix tasks); it reaches every adapter in the tower through ``use_tasks``."""

    def __init__(self, backbone: nn.Module, kind: str, tasks: Sequence[str],
                 tokenizer: Callable | None = None, preprocess: Callable | None = None) -> None:
        super().__init__()
        if kind not in TOWER_PREFIX:
            raise ValueError(f"unknown backbone kind {kind!r}; expected 'open_clip' or 'hf'")
        self.backbone = backbone
        self.kind = kind
        self.tasks = list(tasks)
        self.tokenizer = tokenizer
        self.preprocess = preprocess

    @property
    def routed(self) -> bool:
        return next(routed_layers(self.backbone), None) is not None

    @property
    def embed_dim(self) -> int:
        if self.kind == "open_clip":
            return int(self.backbone.text_projection.shape[-1]) if isinstance(
                self.backbone.text_projection, torch.Tensor) else int(self.backbone.text_projection.out_features)
        return int(self.backbone.config.projection_dim)

    @property
    def image_token_dim(self) -> int:
        if self.kind == "open_clip":
            return int(self.backbone.visual.transformer.width)
        return int(self.backbone.config.vision_config.hidden_size)

    def _route(self, task_ids: TaskIds | None):
        if task_ids is None:
            return nullcontext()
        if not self.routed:  # no task-specific parts: still reject unknown tasks
            resolve_task_ids(task_ids, self.tasks, len(self.tasks))
            return nullcontext()
        return use_tasks(self.backbone, task_ids)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer block of both towers in backward (activation memory for
        compute). Non-reentrant, so adapters in a frozen tower still get gradients; task ids
        reach the recomputed blocks (``use_tasks`` records them per forward)."""
        if self.kind == "open_clip":
            self.backbone.set_grad_checkpointing(enable)
        else:
            set_hf_checkpointing(self.backbone, enable)

    def tokenize(self, texts: str | list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise RuntimeError("this MultiTaskCLIP has no tokenizer")
        return self.tokenizer(texts)

    def encode_image(self, images: torch.Tensor, task_ids: TaskIds | None = None, normalize: bool = False,
                     return_tokens: bool = False):
        """Image embeddings (B, embed_dim); with ``return_tokens`` also the last layer's
        patch tokens (B, N, image_token_dim) for decoders that attend over the image."""
        with self._route(task_ids):
            if self.kind == "open_clip":
                visual = self.backbone.visual
                previous = visual.output_tokens
                visual.output_tokens = True
                try:
                    pooled, tokens = visual(images)
                finally:
                    visual.output_tokens = previous
            else:
                out = self.backbone.vision_model(pixel_values=images)
                pooled, tokens = self.backbone.visual_projection(out.pooler_output), out.last_hidden_state
        pooled = F.normalize(pooled, dim=-1) if normalize else pooled
        return (pooled, tokens) if return_tokens else pooled

    def encode_text(self, tokens: torch.Tensor, task_ids: TaskIds | None = None,
                    normalize: bool = False) -> torch.Tensor:
        with self._route(task_ids):
            if self.kind == "open_clip":
                features = self.backbone.encode_text(tokens)
            else:
                out = self.backbone.text_model(input_ids=tokens)
                features = self.backbone.text_projection(out.pooler_output)
        return F.normalize(features, dim=-1) if normalize else features


def create_multitask_clip(
    model: str | None = None,
    *,
    tasks: Sequence[str] = VL_TASKS,
    method: str = "mtl_lora",
    backbone: str = "open_clip",
    pretrained: str | None = None,
    vision_targets: Sequence[str] | str | None = None,
    text_targets: Sequence[str] | str | None = None,
    **hparams,
) -> MultiTaskCLIP:
    """Load a CLIP and adapt both towers for ``tasks``.

    model: None for the embedded base; for backbone 'open_clip' a model name (with
    ``pretrained``, a tag or local checkpoint, as open_clip takes them) or ``local-dir:PATH``;
    for 'hf' a local ``save_pretrained`` folder. method: one of ``VL_METHODS``
    ('heads_only' freezes the backbone). hparams: r, alpha, dropout, n_up, temperature,
    lambda_type. ``vision_targets``/``text_targets``: block-relative module names or a regex
    per tower (None: attention + MLP; ``[]``: that tower stays frozen)."""
    method = resolve_method(method, VL_METHODS)
    if backbone == "open_clip":
        loaded, preprocess, tokenizer = load_open_clip(model or DEFAULT_CLIP, pretrained)
    elif backbone == "hf":
        if model is None:
            raise ValueError("backbone 'hf' needs model=<a local Hugging Face CLIP folder>")
        loaded, preprocess, tokenizer = load_hf_clip(model.removeprefix("local-dir:"))
    else:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(CLIP_BACKBONES)}")
    targets = tower_target_regex(backbone, vision_targets, text_targets)
    config = build_adapter_config(method, tasks, targets, **hparams)
    if config is None:
        loaded.requires_grad_(False)
    else:
        inject(loaded, config)
    return MultiTaskCLIP(loaded, backbone, tasks, tokenizer=tokenizer, preprocess=preprocess)
