"""Training configurations: defaults < a YAML file < flags, saved as YAML with each run.

``TrainConfig`` holds what every path shares (the engine's optimisation, checkpoint and
run-folder options, and the adapter fields with their one meaning); ``VLTrainConfig``
and ``DenseTrainConfig`` add what their paths need. ``vlmtl.cli.flags`` makes one flag per
field for every script, so the same option has the same flag everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from vlmtl.data import STRATEGIES
from vlmtl.paths import configs_dir
from vlmtl.registry import GENERATIVE_TASKS, VL_BACKBONES, VL_METHODS, VL_TASKS, check_tasks, resolve_method

VL_DATA = ("synthetic", "jsonl", "vqav2_karpathy", "hf")
MIXED_PRECISION = ("no", "fp16", "bf16")
VQAV2_KEYS = ("train_questions", "train_annotations", "train_images", "val_questions", "val_annotations",
              "val_images")
KARPATHY_KEYS = ("json", "image_dir")


class YamlConfig:
    """Options as a dataclass: defaults < a YAML file < overrides (flags); saved as YAML."""

    DEFAULT_YAML: ClassVar[str | None] = None  # the file of configs/ used when none is given

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def default_yaml(cls, overrides: dict[str, Any]) -> Path | None:
        """The YAML file a run reads when it names none (None: the dataclass defaults)."""
        return configs_dir() / cls.DEFAULT_YAML if cls.DEFAULT_YAML else None

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

    @classmethod
    def from_defaults(cls, **overrides: Any):
        """``from_sources`` with the default YAML this config layer picks for ``overrides``."""
        return cls.from_sources(cls.default_yaml(overrides), **overrides)


@dataclass
class TrainConfig(YamlConfig):
    """What every training path shares: tasks and method, the adapter's size, the data
    cache, and the engine's options (optimisation, checkpoints, run folder)."""

    # what to train
    tasks: list[str] = field(default_factory=list)
    method: str = "full"
    # adapters (LoRA / MTL-LoRA scale their update by alpha / r; MTLoRA by its raw `scale`)
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    # data: "synthetic" is generated once from its seed into data_root (default: the cache dir)
    data: str = "synthetic"
    data_root: str | None = None
    synthetic_train_images: int = 1200
    synthetic_val_images: int = 200
    synthetic_seed: int = 0  # the data's seed, fixed apart from the training seed
    # optimisation: AdamW, linear warm-up then cosine, gradient clipping
    max_steps: int | None = 500  # None: `epochs` passes over the training set
    epochs: int | None = None
    batch_size: int = 32  # per process: the global batch is batch_size × processes
    lr: float | None = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    loss_weights: dict[str, float] = field(default_factory=dict)  # task -> weight (missing: 1.0)
    mixed_precision: str = "no"
    grad_checkpointing: bool = False  # recompute backbone blocks in backward: less activation memory
    workers: int = 2
    threads: int | None = None  # torch CPU threads (None: leave torch's setting)
    seed: int = 0
    # run folder and reliability
    output: str = "runs/run"
    log_every: int = 10
    save_every: int = 100  # steps between checkpoints (0: none)
    keep_last: int = 2  # newest checkpoints kept (plus the best, by mean training loss)
    resume: str = "auto"  # "auto": continue from <output>/checkpoints if any; "never"; or a checkpoint path
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row (each is skipped)

    def __post_init__(self) -> None:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set max_steps or epochs")
        for name in ("max_steps", "epochs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        self.loss_weights = dict(self.loss_weights or {})

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the run: ``max_steps`` when set, else ``epochs`` full epochs."""
        return self.max_steps if self.max_steps is not None else self.epochs * max(1, batches_per_epoch)

    def loss_weight(self, task: str) -> float:
        return float(self.loss_weights.get(task, 1.0))


@dataclass
class VLTrainConfig(TrainConfig):
    """Vision-language training: CLIP towers (open_clip, Hugging Face) with task heads, or
    a LLaVA decoder that answers and captions by generation."""

    DEFAULT_YAML: ClassVar[str] = "vl_default.yaml"
    LLAVA_YAML: ClassVar[str] = "vl_llava.yaml"

    tasks: list[str] = field(default_factory=lambda: ["vqa", "retrieval"])
    method: str = "mtl_lora"
    # backbone: open_clip (model name + pretrained tag/path, or local-dir:), hf (a local CLIP
    # folder) or llava (a local LlavaForConditionalGeneration folder)
    backbone: str = "open_clip"
    model: str = "default"  # "default": the backbone's embedded base; "llava": backbone llava, embedded
    pretrained: str | None = None
    # CLIP: None adapts attention + MLP of every block of both towers. LLaVA: text_targets
    # are the decoder's (None: q,k,v,o,gate,up,down), vision_targets the vision tower's (None: frozen)
    vision_targets: list[str] | str | None = None
    text_targets: list[str] | str | None = None
    train_projector: bool = True  # llava: the multimodal projector trains with the adapters
    # MTL-LoRA: the best setting of scripts/sweep_vl.py on the embedded data (README), which is
    # also the MTL-LoRA paper's image-text setting (n 2, τ 0.8, lr 1e-3)
    n_up: int = 2
    temperature: float = 0.8
    lambda_type: str = "full"
    # data "synthetic": retrieval captions name colours differently from VQA questions, for this
    # fraction of the colours (0: no conflict between the tasks; see retrieval_colour_names)
    synthetic_interference: float = 0.0
    # data: "synthetic", "jsonl" (train_file/val_file + image_dir), "vqav2_karpathy", or "hf" (a
    # Hugging Face dataset: hf_dataset is a save_to_disk folder, an imagefolder folder, a JSON/JSONL
    # file or {split: file}; image_dir for relative image paths)
    train_file: str | None = None
    val_file: str | None = None
    image_dir: str | None = None
    hf_dataset: str | dict[str, str] | None = None
    hf_train_split: str = "train"
    hf_val_split: str = "validation"
    vqav2: dict[str, str] = field(default_factory=dict)  # train/val _questions, _annotations, _images
    karpathy: dict[str, str] = field(default_factory=dict)  # json, image_dir
    on_bad_image: str = "raise"
    batch_size: int = 48
    lr: float | None = 1e-3
    head_lr: float = 2e-3
    lambda_lr: float | None = None  # MTL-LoRA's task transforms Λ (None: lr)
    mixing_lr: float | None = None  # MTL-LoRA's mixing logits w (None: lr)
    monitor_adapters: bool = True  # update sizes and mixing entropy in train_log.jsonl (adapter/... keys)
    sampling: str = "temperature"
    sampling_temperature: float = 2.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"vqa": 1.0, "retrieval": 1.0, "caption": 1.0})
    # heads and evaluation
    head_dropout: float = 0.1  # the vqa classifier's and the caption decoder's dropout
    local_loss: bool = False  # retrieval under data parallelism: each rank's pairs against all (open_clip's)
    gather_with_grad: bool = True  # ... and the gradient through the gathered embeddings (exact)
    answer_top_k: int = 3129
    caption_layers: int = 2
    caption_heads: int = 4
    num_beams: int = 1
    max_new_tokens: int = 48  # llava: generation length cap (captions here are at most 40 words)
    eval_max_samples: int | None = None
    # extend a trained MTL-LoRA CLIP run (from_run, flag --from) with the task add_task
    add_task: str | None = None
    from_run: str | None = None
    train_shared: bool = False  # add_task: train the shared A and B too (the old tasks then change)
    output: str = "runs/vl"

    @classmethod
    def default_yaml(cls, overrides: dict[str, Any]) -> Path:
        llava = overrides.get("model") == "llava" or overrides.get("backbone") == "llava"
        return configs_dir() / (cls.LLAVA_YAML if llava else cls.DEFAULT_YAML)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tasks = check_tasks(self.tasks, VL_TASKS)
        if self.model == "llava":  # shorthand: the embedded LLaVA base
            self.backbone, self.model = "llava", "default"
        if self.backbone not in VL_BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {list(VL_BACKBONES)}")
        if self.backbone == "llava":
            other = [t for t in self.tasks if t not in GENERATIVE_TASKS]
            if other:
                raise ValueError(
                    f"the LLaVA decoder answers {list(GENERATIVE_TASKS)} by generation; {other} need a CLIP "
                    "backbone (open_clip or hf)"
                )
        self.method = resolve_method(self.method, VL_METHODS)
        if self.sampling not in STRATEGIES:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose one of {list(STRATEGIES)}")
        if self.data not in VL_DATA:
            raise ValueError(f"unknown data {self.data!r}; choose one of {list(VL_DATA)}")
        self._check_data_options()
        if bool(self.add_task) != bool(self.from_run):
            raise ValueError("add_task and from_run (--add-task NAME --from RUN_DIR) go together")

    def _check_data_options(self) -> None:
        """Each data mode reads its own options; one given to another mode is an error that
        says what that mode reads, rather than being ignored."""
        if not 0.0 <= self.synthetic_interference <= 1.0:
            raise ValueError(f"synthetic_interference must be in [0, 1], got {self.synthetic_interference}")
        if self.synthetic_interference and self.data != "synthetic":
            raise ValueError(f"synthetic_interference shapes the generated data set (data 'synthetic'), "
                             f"not data {self.data!r}")
        jsonl = [f for f in ("train_file", "val_file", "image_dir") if getattr(self, f)]
        if self.data == "hf":
            jsonl = [f for f in jsonl if f != "image_dir"]  # hf reads image_dir too (relative image paths)
            if not self.hf_dataset:
                raise ValueError("data 'hf' needs hf_dataset: a save_to_disk folder, an imagefolder folder, "
                                 "a JSON/JSONL file or {split: file}")
        elif self.hf_dataset:
            raise ValueError(f"hf_dataset is read by data 'hf' only, not by data {self.data!r}")
        public = [f for f in ("vqav2", "karpathy") if getattr(self, f)]
        if jsonl and self.data != "jsonl":
            raise ValueError(
                f"{jsonl} are read by data 'jsonl' only. data {self.data!r} "
                + ("reads vqav2 {" + ", ".join(VQAV2_KEYS) + "} and karpathy {" + ", ".join(KARPATHY_KEYS)
                   + "}, e.g. --vqav2 '{train_questions: Q.json, ...}' --karpathy '{json: dataset_coco.json, "
                     "image_dir: coco/}'" if self.data == "vqav2_karpathy" else "needs none of them")
            )
        if public and self.data != "vqav2_karpathy":
            raise ValueError(f"{public} are read by data 'vqav2_karpathy' only, not by data {self.data!r}")
        for name, known in (("vqav2", VQAV2_KEYS), ("karpathy", KARPATHY_KEYS)):
            unknown = sorted(set(getattr(self, name)) - set(known))
            if unknown:
                raise ValueError(f"{name} has unknown key(s) {unknown}; its keys are {list(known)}")
        if self.data == "vqav2_karpathy":
            if "vqa" in self.tasks and (missing := [k for k in VQAV2_KEYS if not self.vqav2.get(k)]):
                raise ValueError(f"data 'vqav2_karpathy' with task vqa needs vqav2 keys {missing}")
            if {"retrieval", "caption"} & set(self.tasks) and (
                    missing := [k for k in KARPATHY_KEYS if not self.karpathy.get(k)]):
                raise ValueError(f"data 'vqav2_karpathy' with retrieval or caption needs karpathy keys {missing}")
