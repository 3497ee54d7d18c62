"""The dense multi-task (PASCAL-Context, MTLoRA) training configuration:
defaults < YAML file (``--config``) < flags, as :class:`~vlmtl.train.config.VLTrainConfig`.

Defaults are the paper's recipe (Swin-T at 448, AdamW wd 0.05, lr 5e-4·batch/512, 20 of
300 epochs warm-up then cosine, gradient clip 5, batch 32) on the synthetic PASCAL_MT set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlmtl.heads.dense import DENSE_TASKS, LOSS_WEIGHTS
from vlmtl.metrics.dense import PAPER_SINGLE_TASK
from vlmtl.models.swin_mtlora import DEFAULT_SWIN, METHODS

from .config import YamlConfig

BASE_LR = 5e-4  # per 512 images (the Swin / MTLoRA linear scaling rule)
SYNTHETIC = "synthetic"


def default_lr(batch_size: int) -> float:
    """The paper's learning rate for ``batch_size``: 5e-4 · batch / 512."""
    return BASE_LR * batch_size / 512


@dataclass
class DenseTrainConfig(YamlConfig):
    # model
    backbone: str = DEFAULT_SWIN  # a timm SwinTransformer name
    pretrained: str | None = None  # None: random init; or a local Swin checkpoint (timm or Microsoft layout)
    img_size: int = 448
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. embed_dim/depths/num_heads/window_size
    tasks: list[str] = field(default_factory=lambda: list(DENSE_TASKS))
    method: str = "mtlora"
    r: int = 16
    r_task: int = 4
    scale: float = 4.0
    dropout: float = 0.05
    mtlora_plus: bool = False
    drop_path_rate: float = 0.2
    grad_checkpointing: bool = False
    # data: "synthetic" (generated once into data_root or a cache dir) or a PASCAL_MT folder
    data: str = SYNTHETIC
    data_root: str | None = None
    synthetic_train_images: int = 300
    synthetic_val_images: int = 100
    synthetic_size: int = 128
    synthetic_seed: int = 0
    # optimisation
    batch_size: int = 32
    epochs: int = 300
    max_steps: int | None = None  # set: train this many steps instead of `epochs`
    lr: float | None = None  # None: 5e-4 * batch_size / 512
    weight_decay: float = 0.05
    warmup_ratio: float = 20 / 300  # 20 of 300 epochs
    grad_clip: float = 5.0
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(LOSS_WEIGHTS))
    mixed_precision: str = "no"
    workers: int = 2
    seed: int = 0
    # evaluation
    eval_batch_size: int | None = None  # None: batch_size
    single_task_baselines: dict[str, float] | None = None  # None: the paper's Swin-T numbers
    log_every: int = 10
    output: str = "runs/dense"
    # reliability
    save_every: int = 500  # steps between checkpoints (0: none)
    keep_last: int = 2
    resume: str = "auto"  # "auto" | "never" | a checkpoint path
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row (each is skipped)

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t for t in self.tasks.split(",") if t]
        self.tasks = list(self.tasks)
        unknown = [t for t in self.tasks if t not in DENSE_TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {list(DENSE_TASKS)}, got {self.tasks}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"a task is named twice in tasks={self.tasks}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {list(METHODS)}")
        if self.method == "single_task" and len(self.tasks) != 1:
            raise ValueError(f"method single_task trains one task, got tasks={self.tasks}")
        if self.batch_size <= 0 or self.epochs <= 0 or (self.max_steps is not None and self.max_steps <= 0):
            raise ValueError("batch_size, epochs and max_steps must be positive")
        if not self.data:
            raise ValueError("data must be 'synthetic' or the path of a PASCAL_MT folder")
        if self.lr is None:
            self.lr = default_lr(self.batch_size)
        missing = [t for t in self.tasks if t not in self.loss_weights]
        if missing:
            raise ValueError(f"loss_weights has no weight for tasks {missing}")
        base = PAPER_SINGLE_TASK if self.single_task_baselines is None else self.single_task_baselines
        missing = [t for t in self.tasks if t not in base]
        if missing:
            raise ValueError(f"single_task_baselines has no value for tasks {missing}")
        self.single_task_baselines = {t: float(base[t]) for t in self.tasks}
        self.timm_kwargs = dict(self.timm_kwargs or {})

    def steps_for(self, batches_per_epoch: int) -> int:
        """Total optimizer steps: ``max_steps`` when set, else ``epochs`` full epochs."""
        return self.max_steps if self.max_steps is not None else self.epochs * max(1, batches_per_epoch)
