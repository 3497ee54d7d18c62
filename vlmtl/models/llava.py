"""LLaVA (Hugging Face ``LlavaForConditionalGeneration``) with multi-task adapters in its decoder.

Pieces, in the order a batch meets them:
- ``llava_build``: the backbone, built from configs or read from a local ``save_pretrained``
  folder (no hub access).
- tokenizers, prompt templates and ``build_inputs`` (``llava_text``): ``[bos] <image>×N
  prompt target [eos]``, with ``num_image_tokens`` image tokens (there is no processor).
- ``llava_target_regex``: which linears get adapters.
- ``MultiTaskLlava``: routes one task id per sample to every adapter for the loss and for
  ``generate`` (greedy or beam search, mixed-task batches).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from vlmtl.adapters import inject, use_tasks
from vlmtl.adapters.config import AdapterConfig
from vlmtl.adapters.inject import CONFIG_ATTR
from vlmtl.adapters.routing import TaskIds, TaskRouting, resolve_task_ids, routed_layers
from vlmtl.registry import GENERATIVE_TASKS, VL_METHODS, resolve_method

from .adapter_config import build_adapter_config
from .clip import HFImageTransform, set_hf_checkpointing
from .llava_build import DEFAULT_LLAVA_DIR, llava_image_processor, load_llava, num_image_tokens
from .llava_text import PROMPTS, LlavaTokenizer, build_inputs, format_prompt, positions_from_mask

TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VISION_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


# --------------------------------------------------------------------------- adapter targets


def _alternatives(names: Sequence[str] | str) -> str:
    """Module-name suffixes as regex alternatives; a string is already a regex (as for CLIP)."""
    return names if isinstance(names, str) else "|".join(re.escape(n) for n in names)


def vision_layers_used(config) -> list[int]:
    """Vision encoder layers whose output reaches the projector. LLaVA reads
    ``hidden_states[vision_feature_layer]`` (-2: the penultimate layer), so adapters on
    later layers would never be used and never trained."""
    total = config.vision_config.num_hidden_layers
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    deepest = max(layer % (total + 1) for layer in layers)  # hidden_states has total+1 entries
    return list(range(deepest))


def llava_target_regex(
    config,
    vision_targets: Sequence[str] | str | None = None,
    text_targets: Sequence[str] | str | None = None,
) -> str:
    """One full-name regex for ``inject``: the decoder's projections (``text_targets``,
    default q,k,v,o,gate,up,down) and optionally the vision tower's (``vision_targets``,
    e.g. ``VISION_TARGETS``; only layers that feed the projector). Each is a list of
    module names or a regex over the names inside a layer. ``[]`` or None leaves the vision
    tower frozen; the projector and lm_head are never matched."""
    text_targets = TEXT_TARGETS if text_targets is None else text_targets
    parts = []
    if text_targets:
        names = _alternatives(text_targets)
        parts.append(rf"model\.language_model\.(?:[\w.]+\.)?layers\.\d+\.(?:[\w.]+\.)?(?:{names})")
    if vision_targets:
        used = vision_layers_used(config)
        if not used:
            raise ValueError("no vision layer feeds the projector (vision_feature_layer 0): nothing to adapt")
        numbers, names = "|".join(str(i) for i in used), _alternatives(vision_targets)
        parts.append(rf"model\.vision_tower\.(?:[\w.]+\.)?layers\.(?:{numbers})\.(?:[\w.]+\.)?(?:{names})")
    if not parts:
        raise ValueError("no target modules: give text_targets or vision_targets")
    return "|".join(f"(?:{p})" for p in parts)


# --------------------------------------------------------------------------- model


def expand_task_ids(routing: TaskRouting, expand: int) -> int | torch.Tensor:
    """Task ids for a batch that ``generate`` grew to B*expand rows. transformers expands
    with ``repeat_interleave`` (rows i*expand ... i*expand+expand-1 are sample i's beams),
    so the ids must be expanded the same way; ``repeat`` would give beams other samples' tasks."""
    if routing.ids is None:
        return routing.uniform
    return routing.ids.repeat_interleave(expand) if expand > 1 else routing.ids


class MultiTaskLlava(nn.Module):
    """A LLaVA model with (MTL-)LoRA injected, whose ``forward`` and ``generate`` take
    ``task_ids`` (one task for the batch, or one per sample: a batch may mix tasks).

    ``config`` None leaves the backbone frozen (only the projector, if ``train_projector``).
    ``train_projector`` (default True, as in LLaVA-1.5's LoRA recipe) keeps the shared
    multimodal projector trainable; its weights are then saved with the adapters."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: LlavaTokenizer,
        config: AdapterConfig | None = None,
        tasks: Sequence[str] | None = None,
        train_projector: bool = True,
        prompts: Mapping[str, str] = PROMPTS,
        preprocess: Callable | None = None,
    ) -> None:
        super().__init__()
        existing = getattr(model, CONFIG_ATTR, None)  # adapters already in (e.g. load_adapters)
        if existing is not None and config is not None and existing.to_dict() != config.to_dict():
            raise ValueError("the model already holds adapters with another config")
        config = existing or config
        if config is None and not tasks:
            raise ValueError("give an adapter config or the task names")
        if config is not None and tasks is not None and list(tasks) != list(config.tasks):
            raise ValueError(f"tasks {list(tasks)} differ from the adapter config's {config.tasks}")
        self.tasks = list(config.tasks if config is not None else tasks)
        if config is None:
            model.requires_grad_(False)
        elif existing is None:
            inject(model, config)
        model.model.multi_modal_projector.requires_grad_(bool(train_projector))
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = dict(prompts)
        self.preprocess = preprocess  # PIL image -> pixel values (3, H, W), if known
        if tokenizer.vocab_size > model.config.text_config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} ids, the model's vocabulary only "
                f"{model.config.text_config.vocab_size}"
            )
        if tokenizer.image_token_id != model.config.image_token_id:
            raise ValueError(
                f"tokenizer image token {tokenizer.image_token_id} != "
                f"model image_token_id {model.config.image_token_id}"
            )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each decoder (and vision) layer in backward, non-reentrant so adapters on
        frozen layers still get gradients; task ids reach the recomputed layers."""
        set_hf_checkpointing(self.model, enable)

    @property
    def num_image_tokens(self) -> int:
        return num_image_tokens(self.model.config)

    @property
    def routed(self) -> bool:
        return next(routed_layers(self.model), None) is not None

    def resolve(self, task_ids: TaskIds, batch: int) -> TaskRouting:
        """Validate ids up front (unknown task, or a count that is not the batch), with or
        without routed layers, so plain LoRA rejects the same inputs."""
        routing = resolve_task_ids(task_ids, self.tasks, len(self.tasks))
        if routing.batch_size is not None and routing.batch_size != batch:
            raise ValueError(f"got {routing.batch_size} task ids for a batch of {batch} samples")
        return routing

    def check_image_tokens(self, input_ids: torch.Tensor) -> None:
        """Every row must hold exactly ``num_image_tokens`` image ids (one per image
        feature), else LLaVA would scatter features into the wrong places or fail deep inside."""
        counts = (input_ids == self.model.config.image_token_id).sum(dim=1)
        expected = self.num_image_tokens
        if bool((counts != expected).any()):
            raise ValueError(
                f"each row needs {expected} image tokens (one per image patch feature), got {counts.tolist()}; "
                "build inputs with build_inputs(..., num_image_tokens=model.num_image_tokens)"
            )

    def _route(self, task_ids: int | torch.Tensor | None):
        return use_tasks(self.model, task_ids) if self.routed and task_ids is not None else nullcontext()

    def _ids(self, routing: TaskRouting) -> int | torch.Tensor:
        return routing.uniform if routing.ids is None else routing.ids

    def encode(
        self,
        texts: Sequence[str],
        tasks: Sequence[str] | str,
        targets: Sequence[str] | None = None,
        padding_side: str | None = None,
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """``build_inputs`` with each sample's prompt template (``texts`` are questions for vqa)."""
        tasks = [tasks] * len(texts) if isinstance(tasks, str) else list(tasks)
        if len(tasks) != len(texts):
            raise ValueError(f"{len(tasks)} tasks for {len(texts)} texts")
        prompts = [format_prompt(t, x, self.prompts) for t, x in zip(tasks, texts)]
        return build_inputs(prompts, targets, self.tokenizer, self.num_image_tokens, padding_side, max_length)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_ids: TaskIds | None = None,
        **kwargs,
    ):
        """The HF output (``.loss`` when ``labels`` are given, ``.logits``), every adapter
        using its sample's task."""
        if task_ids is None:
            raise ValueError("MultiTaskLlava.forward needs task_ids= (a task, or one per sample)")
        batch = int(input_ids.shape[0])
        if pixel_values.shape[0] != batch:
            raise ValueError(f"{pixel_values.shape[0]} images for {batch} token rows")
        routing = self.resolve(task_ids, batch)
        self.check_image_tokens(input_ids)
        if attention_mask is not None and "position_ids" not in kwargs:
            kwargs["position_ids"] = positions_from_mask(attention_mask)
        with self._route(self._ids(routing)):
            return self.model(
                pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs
            )

    def embed_inputs(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the projected image features scattered into the image
        positions, as ``LlavaModel.forward`` does (and with its count check)."""
        inner = self.model.model
        embeds = self.model.get_input_embeddings()(input_ids)
        features = self.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
        features = torch.cat(list(features), dim=0).to(embeds.device, embeds.dtype)
        mask = inner.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=features)
        return embeds.masked_scatter(mask, features)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor,
        task_ids: TaskIds,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        texts: Sequence[str] | None = None,
        num_beams: int = 1,
        max_new_tokens: int = 16,
        **generate_kwargs,
    ) -> torch.Tensor:
        """New token ids (B·num_return_sequences × T, pad after eos) for left-padded
        prompts (``input_ids``; or ``texts`` formatted with each sample's task template).

        Routing: the image features are computed here first, on the B real rows with
        the per-sample ids; HF ``generate`` then runs on ``inputs_embeds`` and expands the
        batch to B·k rows (k = max(num_beams, num_return_sequences)) with
        ``repeat_interleave``, so the decoder is routed with the ids expanded the same way
        (``expand_task_ids``) and every layer still checks rows == ids. Call ``.eval()``
        first if the adapters have dropout."""
        batch = int(pixel_values.shape[0])
        routing = self.resolve(task_ids, batch)
        if input_ids is None:
            if texts is None:
                raise ValueError("give input_ids (left-padded prompts) or texts")
            if routing.ids is None:
                tasks = [self.tasks[routing.uniform]] * batch
            else:
                tasks = [self.tasks[i] for i in routing.ids.tolist()]
            encoded = self.encode(list(texts), tasks, padding_side="left")
            input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        device = pixel_values.device
        input_ids = input_ids.to(device)
        if input_ids.shape[0] != batch:
            raise ValueError(f"{input_ids.shape[0]} prompts for {batch} images")
        self.check_image_tokens(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(device)
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("prompts must be left-padded for generation (a row ends in padding)")

        config = copy.deepcopy(self.model.generation_config)
        config.update(
            num_beams=num_beams, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_id,
            eos_token_id=self.tokenizer.eos_id, bos_token_id=self.tokenizer.bos_id, **generate_kwargs,
        )
        expand = max(int(config.num_beams), int(config.num_return_sequences or 1))
        with self._route(self._ids(routing)):
            embeds = self.embed_inputs(pixel_values, input_ids)
        with self._route(expand_task_ids(routing, expand)):
            out = self.model.generate(inputs_embeds=embeds, attention_mask=attention_mask, generation_config=config)
        return out.sequences if hasattr(out, "sequences") else out

    def generate_text(self, pixel_values: torch.Tensor, task_ids: TaskIds, **kwargs) -> list[str]:
        """``generate`` decoded to strings (text up to eos)."""
        return [self.tokenizer.decode(row) for row in self.generate(pixel_values, task_ids, **kwargs).tolist()]


def create_multitask_llava(
    model: str | Path | nn.Module | None = None,
    *,
    tasks: Sequence[str] = GENERATIVE_TASKS,
    method: str = "mtl_lora",
    tokenizer: LlavaTokenizer | None = None,
    vision_targets: Sequence[str] | str | None = None,
    text_targets: Sequence[str] | str | None = None,
    train_projector: bool = True,
    prompts: Mapping[str, str] = PROMPTS,
    image_processor=None,
    **hparams,
) -> MultiTaskLlava:
    """Load a LLaVA and adapt its decoder for ``tasks``.

    model: None for the embedded base, a local ``save_pretrained`` folder, or a built
    ``LlavaForConditionalGeneration`` (then give its ``tokenizer``). method: one of
    ``VL_METHODS`` ('heads_only' trains only the projector). hparams: r, alpha, dropout,
    n_up, temperature, lambda_type (as for CLIP). ``.preprocess`` turns a PIL image into
    pixel values (the folder's image processor, or ``image_processor``)."""
    method = resolve_method(method, VL_METHODS)
    model_dir = None
    if model is None or isinstance(model, (str, Path)):
        model_dir = DEFAULT_LLAVA_DIR if model is None else Path(model)
        model, loaded = load_llava(model_dir)
        tokenizer = tokenizer or loaded
    if tokenizer is None:
        raise ValueError("a LLaVA given as a module needs its tokenizer: create_multitask_llava(model, tokenizer=...)")
    image_processor = image_processor or llava_image_processor(model.config, model_dir)
    targets = llava_target_regex(model.config, vision_targets, text_targets)
    config = build_adapter_config(method, tasks, targets, **hparams)
    return MultiTaskLlava(model, tokenizer, config, tasks=list(tasks), train_projector=train_projector,
                          prompts=prompts, preprocess=HFImageTransform(image_processor))


__all__ = [
    "TEXT_TARGETS",
    "VISION_TARGETS",
    "MultiTaskLlava",
    "create_multitask_llava",
    "expand_task_ids",
    "llava_target_regex",
    "vision_layers_used",
]
