"""The dense multi-task (PASCAL-Context, MTLoRA) training configuration.

Defaults are the paper's recipe (Swin-T at 448, AdamW wd 0.05, lr 5e-4·batch/512, 20 of
300 epochs warm-up then cosine, gradient clip 5, batch 32) on the synthetic PASCAL_MT set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from vlmtl.heads.dense import LOSS_WEIGHTS
from vlmtl.metrics.dense import PAPER_SINGLE_TASK
from vlmtl.models.swin_mtlora import DEFAULT_SWIN
from vlmtl.registry import DENSE_METHODS, DENSE_TASKS, check_tasks, resolve_method

from .config import TrainConfig

BASE_LR = 5e-4  # per 512 images (the Swin / MTLoRA linear scaling rule)
SYNTHETIC = "synthetic"


def default_lr(batch_size: int) -> float:
    """The paper's learning rate for ``batch_size``: 5e-4 · batch / 512."""
    return BASE_LR * batch_size / 512


@dataclass
class DenseTrainConfig(TrainConfig):
    DEFAULT_YAML: ClassVar[str] = "dense_synthetic_small.yaml"

    # model
    model: str = DEFAULT_SWIN  # a timm SwinTransformer name
    pretrained: str | None = None  # None: random init; or a local Swin checkpoint (timm or Microsoft layout)
    img_size: int = 448
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. embed_dim/depths/num_heads/window_size
    tasks: list[str] = field(default_factory=lambda: list(DENSE_TASKS))
    method: str = "mtlora"
    r: int = 16
    alpha: float | None = None  # lora / mtl_lora: None gives scale · r, the same raw multiplier as MTLoRA's
    r_task: int = 4
    scale: float = 4.0
    mtlora_plus: bool = False
    task_pass: str = "sequential"  # mtl_lora: one backbone pass per task, or "batched" (slower on CPU today)
    drop_path_rate: float = 0.2
    # data: "synthetic" (generated once into data_root or the cache dir) or a PASCAL_MT folder
    synthetic_train_images: int = 300
    synthetic_val_images: int = 100
    synthetic_size: int = 128
    # optimisation
    batch_size: int = 32
    epochs: int | None = 300
    max_steps: int | None = None  # set: train this many steps instead of `epochs`
    lr: float | None = None  # None: 5e-4 * batch_size / 512
    weight_decay: float = 0.05
    warmup_ratio: float = 20 / 300  # 20 of 300 epochs
    grad_clip: float = 5.0
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(LOSS_WEIGHTS))
    # evaluation
    eval_batch_size: int | None = None  # None: batch_size
    single_task_baselines: dict[str, float] | None = None  # None: the paper's Swin-T numbers
    output: str = "runs/dense"
    save_every: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tasks = check_tasks(self.tasks, list(DENSE_TASKS))
        self.method = resolve_method(self.method, DENSE_METHODS)
        if self.method == "single_task" and len(self.tasks) != 1:
            raise ValueError(f"method single_task trains one task, got tasks={self.tasks}")
        if not self.data:
            raise ValueError("data must be 'synthetic' or the path of a PASCAL_MT folder")
        if self.lr is None:
            self.lr = default_lr(self.batch_size)
        if self.alpha is None:
            self.alpha = self.scale * self.r
        missing = [t for t in self.tasks if t not in self.loss_weights]
        if missing:
            raise ValueError(f"loss_weights has no weight for tasks {missing}")
        base = PAPER_SINGLE_TASK if self.single_task_baselines is None else self.single_task_baselines
        missing = [t for t in self.tasks if t not in base]
        if missing:
            raise ValueError(f"single_task_baselines has no value for tasks {missing}")
        self.single_task_baselines = {t: float(base[t]) for t in self.tasks}
        self.timm_kwargs = dict(self.timm_kwargs or {})
