"""vlmtl: multi-task low-rank adaptation (MTL-LoRA, MTLoRA) of vision and vision-language models."""

from . import adapters
from .adapters import (
    LoRAConfig,
    MTLLoRAConfig,
    MTLoRAConfig,
    MultiTaskModel,
    inject,
    load_adapters,
    merge,
    save_adapters,
    unmerge,
    use_tasks,
)

__version__ = "0.1.0"

__all__ = [
    "adapters",
    "LoRAConfig",
    "MTLLoRAConfig",
    "MTLoRAConfig",
    "MultiTaskModel",
    "inject",
    "use_tasks",
    "merge",
    "unmerge",
    "save_adapters",
    "load_adapters",
    "__version__",
]
