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


_MODELS = ("create_multitask_clip", "MultiTaskCLIP", "create_multitask_llava", "MultiTaskLlava",
           "create_multitask_swin", "MultiTaskSwin")


def __getattr__(name: str):
    # Backbones import open_clip/transformers: load them on first use, not on `import vlmtl`.
    if name in _MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'vlmtl' has no attribute {name!r}")

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
    "create_multitask_clip",
    "MultiTaskCLIP",
    "create_multitask_llava",
    "MultiTaskLlava",
    "create_multitask_swin",
    "MultiTaskSwin",
    "__version__",
]
