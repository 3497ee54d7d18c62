"""Adapter configurations: one dataclass per method, serialisable to JSON.

The field names follow PEFT's ``LoraConfig`` (``r``, ``target_modules``, ...) with
``lora_alpha``/``lora_dropout`` shortened to ``alpha``/``dropout``; the multi-task
fields (``tasks``, ``n_up``, ``temperature``, ``lambda_type``, ``r_task``, ``scale``)
are the papers' hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .routing import task_index

LAMBDA_TYPES = ("full", "diagonal")  # MTL-LoRA's task transform: r x r, or its diagonal
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "attn", "c_fc", "c_proj"]


@dataclass
class AdapterConfig:
    """Fields shared by every method. ``target_modules`` is a list of module-name
    suffixes (``"q_proj"`` matches ``"...layers.0.self_attn.q_proj"``) or one regular
    expression that must match a module's full name, as in PEFT."""

    tasks: list[str] = field(default_factory=lambda: ["default"])
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: list(DEFAULT_TARGETS))

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            raise TypeError("tasks must be a list of task names, not a single string")
        self.tasks = [str(t) for t in self.tasks]
        if not self.tasks:
            raise ValueError("tasks must name at least one task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"task names must be unique, got {self.tasks}")
        if int(self.r) <= 0:
            raise ValueError(f"rank r must be positive, got {self.r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.target_modules, str):
            self.target_modules = [str(t) for t in self.target_modules]
            if not self.target_modules:
                raise ValueError("target_modules is empty: name at least one module suffix or give a regex")

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def scaling(self) -> float:
        return float(self.alpha) / int(self.r)

    def task_index(self, task: str | int) -> int:
        """Map a task name (or an already-integer id) to its index, with a clear error."""
        return task_index(task, self.tasks, self.num_tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def from_dict(data: dict[str, Any]) -> AdapterConfig:
        data = dict(data)
        method = data.pop("method", None)
        if method not in CONFIG_CLASSES:
            raise ValueError(f"unknown adapter method {method!r}; expected one of {sorted(CONFIG_CLASSES)}")
        cls = CONFIG_CLASSES[method]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {unknown}")
        return cls(**data)

    @staticmethod
    def from_json(path: str | Path) -> AdapterConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"adapter config not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        return AdapterConfig.from_dict(data)


@dataclass
class LoRAConfig(AdapterConfig):
    """Plain LoRA (one adapter shared by all tasks): the single-task baseline."""

    method: ClassVar[str] = "lora"


@dataclass
class MTLLoRAConfig(AdapterConfig):
    """MTL-LoRA (Yang et al., 2025): shared A, per-task Λ_t, n shared B_i mixed per task."""

    n_up: int = 3
    temperature: float = 0.1
    lambda_type: str = "full"

    method: ClassVar[str] = "mtl_lora"

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.n_up) <= 0:
            raise ValueError(f"n_up must be positive, got {self.n_up}")
        if float(self.temperature) <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.lambda_type not in LAMBDA_TYPES:
            raise ValueError(f"lambda_type must be 'full' or 'diagonal', got {self.lambda_type!r}")


@dataclass
class MTLoRAConfig(AdapterConfig):
    """MTLoRA (Agiza et al., 2024): task-agnostic LoRA (rank ``r``) on ``target_modules``;
    layers that also match ``task_specific_modules`` get one extra LoRA per task (rank
    ``r_task``). ``scale`` is a raw multiplier (the paper's 4.0), not alpha/r."""

    r_task: int = 4
    scale: float = 4.0
    dropout: float = 0.05
    task_specific_modules: list[str] | str = field(default_factory=list)

    method: ClassVar[str] = "mtlora"

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.r_task) < 0:
            raise ValueError(f"r_task must be >= 0, got {self.r_task}")

    @property
    def scaling(self) -> float:
        return float(self.scale)


CONFIG_CLASSES: dict[str, type[AdapterConfig]] = {
    cls.method: cls for cls in (LoRAConfig, MTLLoRAConfig, MTLoRAConfig)
}
