"""LLaVA backbones without a hub: build a small one from configs, or read and write a local
``save_pretrained`` folder (model, vlmtl's word tokenizer or ``AutoTokenizer``, and the
image processor)."""

from __future__ import annotations

import logging
from pathlib import Path

from vlmtl.paths import assets_dir

from .llava_text import HFLlavaTokenizer, LlavaTokenizer, LlavaWordTokenizer
from .tokenizer import WORD_TOKENIZER_FILE

logger = logging.getLogger(__name__)

DEFAULT_LLAVA_DIR = assets_dir() / "vlmtl-tiny-llava"  # made by scripts/pretrain_llava.py


def build_tiny_llava(
    vocab_size: int,
    image_size: int = 64,
    patch_size: int = 8,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    vision_hidden: int | None = None,
    vision_layers: int | None = None,
    image_token_id: int | None = None,
    pad_token_id: int = 0,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "default",
    max_positions: int = 512,
):
    """A randomly initialised LLaVA (CLIP vision tower + LLaMA decoder) built offline.

    ``vocab_size`` counts every id, the image token included (default: the last id).
    ``vision_feature_layer=-2`` and the 'default' strategy (CLS dropped) are LLaVA-1.5's."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    image_token_id = vocab_size - 1 if image_token_id is None else int(image_token_id)
    if not 0 <= image_token_id < vocab_size:
        raise ValueError(f"image_token_id {image_token_id} is outside the vocabulary [0, {vocab_size})")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    vision_hidden = hidden if vision_hidden is None else vision_hidden
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=4 * vision_hidden,
        num_hidden_layers=layers if vision_layers is None else vision_layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    text_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        image_seq_length=(image_size // patch_size) ** 2 + (vision_feature_select_strategy == "full"),
    )
    model = LlavaForConditionalGeneration(config)
    generation = model.generation_config
    generation.pad_token_id, generation.bos_token_id, generation.eos_token_id = pad_token_id, bos_token_id, eos_token_id
    return model


def num_image_tokens(config) -> int:
    """How many ``<image>`` tokens one image needs: one per feature LLaVA scatters in.

    The CLIP tower outputs ``(image_size/patch_size)²`` patch tokens plus CLS; the
    'default' ``vision_feature_select_strategy`` drops CLS, 'full' keeps it."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    strategy = config.vision_feature_select_strategy
    if strategy not in ("default", "full"):
        raise ValueError(f"unknown vision_feature_select_strategy {strategy!r}")
    return patches + (1 if strategy == "full" else 0)


def save_llava(model, tokenizer: LlavaTokenizer, path: str | Path, image_processor=None) -> Path:
    """``save_pretrained`` the model and write its tokenizer (and image processor, if
    given) beside it, readable by ``load_llava`` and ``llava_image_processor``."""
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save(path)
    if image_processor is not None:
        image_processor.save_pretrained(path)
    return path


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # what transformers writes


def llava_image_processor(config, local_dir: str | Path | None = None):
    """The folder's own image processor, read by ``AutoImageProcessor`` from whichever
    processor file ``transformers`` saved (an image processor's ``preprocessor_config.json``
    or a whole ``LlavaProcessor``'s ``processor_config.json``); an unreadable one is an error,
    never replaced. Only a folder without any (or a model built in memory) gets one sized for
    the vision tower with CLIP's defaults, and the log says so."""
    from transformers import AutoImageProcessor, CLIPImageProcessor

    if local_dir is not None and any((Path(local_dir) / name).is_file() for name in PROCESSOR_FILES):
        return AutoImageProcessor.from_pretrained(local_dir, local_files_only=True)
    size = int(config.vision_config.image_size)
    if local_dir is not None:
        logger.warning("%s holds no image processor (%s): using CLIP's defaults at %d px", local_dir,
                       " or ".join(PROCESSOR_FILES), size)
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def load_llava(local_dir: str | Path):
    """(model, tokenizer) from a local folder: ``from_pretrained(local_files_only=True)``;
    the tokenizer is vlmtl's word tokenizer if the folder has one, else ``AutoTokenizer``."""
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    local_dir = Path(local_dir)
    if not (local_dir / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face LLaVA model in {local_dir} (config.json missing)")
    model = LlavaForConditionalGeneration.from_pretrained(local_dir, local_files_only=True)
    image_token_id = int(model.config.image_token_id)
    if (local_dir / WORD_TOKENIZER_FILE).is_file():
        tokenizer: LlavaTokenizer = LlavaWordTokenizer.load(local_dir / WORD_TOKENIZER_FILE)
    else:
        tokenizer = HFLlavaTokenizer(AutoTokenizer.from_pretrained(local_dir, local_files_only=True), image_token_id)
    if tokenizer.image_token_id != image_token_id:
        raise ValueError(
            f"{local_dir}: the tokenizer's image token is {tokenizer.image_token_id}, "
            f"the model's config says {image_token_id}"
        )
    if tokenizer.vocab_size > model.config.text_config.vocab_size:
        raise ValueError(
            f"{local_dir}: tokenizer has {tokenizer.vocab_size} ids, the model only "
            f"{model.config.text_config.vocab_size}"
        )
    return model, tokenizer



def tiny_llava_for(tokenizer: LlavaWordTokenizer, **kwargs):
    """``build_tiny_llava`` sized and wired for a word tokenizer (ids, bos/eos/pad)."""
    return build_tiny_llava(
        tokenizer.vocab_size,
        image_token_id=tokenizer.image_token_id,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        **kwargs,
    )
