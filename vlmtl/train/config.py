"""The vision-language training configuration: defaults < YAML file (``--config``) < flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmtl.data import STRATEGIES, TASKS

METHODS = ("mtl_lora", "lora", "none")
BACKBONES = ("open_clip", "hf", "llava")
GENERATIVE_TASKS = ("vqa", "caption")  # what the LLaVA decoder answers by generation


class YamlConfig:
    """Options as a dataclass: defaults < a YAML file < overrides (flags); saved as YAML."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_sources(cls, yaml_path: str | Path | None = None, **overrides: Any):
        """Defaults, then the YAML file, then every override that is not None."""
        values: dict[str, Any] = {}
        if yaml_path is not None:
            path = Path(yaml_path)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path} must hold a mapping of option: value")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}" + (f" in {yaml_path}" if yaml_path else ""))
        return cls(**values)


@dataclass
class VLTrainConfig(YamlConfig):
    # what to train
    tasks: list[str] = field(default_factory=lambda: ["vqa", "retrieval"])
    method: str = "mtl_lora"
    # backbone: open_clip (model name + pretrained tag/path, or local-dir:), hf (a local CLIP
    # folder) or llava (a local LlavaForConditionalGeneration folder)
    backbone: str = "open_clip"
    model: str = "default"  # "default": the backbone's embedded base under assets/; "llava": backbone llava
    pretrained: str | None = None
    # CLIP: None adapts attention + MLP of every block of both towers. LLaVA: text_targets
    # are the decoder's (None: q,k,v,o,gate,up,down), image_targets the vision tower's (None: frozen)
    image_targets: list[str] | str | None = None
    text_targets: list[str] | str | None = None
    train_projector: bool = True  # llava: the multimodal projector trains with the adapters
    # adapters
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    n_up: int = 3
    temperature: float = 0.5
    lambda_type: str = "full"
    # data: "synthetic" (generated from the seed), "jsonl" (train_file/val_file + image_dir),
    # or "vqav2_karpathy" (the public VQAv2 files and a Karpathy json)
    data: str = "synthetic"
    data_root: str | None = None  # synthetic: where it is written (default: a cache dir)
    synthetic_train_images: int = 1200
    synthetic_val_images: int = 200
    synthetic_seed: int = 0  # the data's seed, fixed apart from the training seed
    train_file: str | None = None
    val_file: str | None = None
    image_dir: str | None = None
    vqav2: dict[str, str] = field(default_factory=dict)  # train/val _questions, _annotations, image_dir
    karpathy: dict[str, str] = field(default_factory=dict)  # json, image_dir
    on_bad_image: str = "raise"
    # optimisation
    max_steps: int = 500
    batch_size: int = 48
    lr: float = 2e-3
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    sampling: str = "temperature"
    sampling_temperature: float = 2.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"vqa": 1.0, "retrieval": 1.0, "caption": 1.0})
    mixed_precision: str = "no"
    workers: int = 2
    seed: int = 0
    # heads and evaluation
    answer_top_k: int = 3129
    caption_layers: int = 2
    caption_heads: int = 4
    num_beams: int = 1
    max_new_tokens: int = 48  # llava: generation length cap (captions here are at most 40 words)
    eval_max_samples: int | None = None
    log_every: int = 10
    output: str = "runs/vl"
    # reliability
    save_every: int = 100  # steps between checkpoints (0: none)
    keep_last: int = 2  # newest checkpoints kept (plus the best, by mean training loss)
    resume: str = "auto"  # "auto": continue from <output>/checkpoints if any; "never"; or a checkpoint path
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row (each is skipped)

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t for t in self.tasks.split(",") if t]
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown} in tasks; known tasks: {list(TASKS)}")
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one of " + ", ".join(TASKS))
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"a task is named twice in tasks={self.tasks}")
        if self.model == "llava":  # shorthand: the embedded LLaVA base
            self.backbone, self.model = "llava", "default"
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {list(BACKBONES)}")
        if self.backbone == "llava":
            other = [t for t in self.tasks if t not in GENERATIVE_TASKS]
            if other:
                raise ValueError(
                    f"the LLaVA decoder answers {list(GENERATIVE_TASKS)} by generation; {other} need a CLIP "
                    "backbone (open_clip or hf)"
                )
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {list(METHODS)}")
        if self.sampling not in STRATEGIES:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose one of {list(STRATEGIES)}")
        if self.data not in ("synthetic", "jsonl", "vqav2_karpathy"):
            raise ValueError(f"unknown data {self.data!r}; choose 'synthetic', 'jsonl' or 'vqav2_karpathy'")
        if self.max_steps <= 0 or self.batch_size <= 0:
            raise ValueError("max_steps and batch_size must be positive")
