"""The method core: adapter layers, injection, task routing, merging and save/load.

Knows nothing of models or data: it works on any ``nn.Module``.
"""

from .add_task import add_task
from .config import AdapterConfig, LoRAConfig, MTLLoRAConfig, MTLoRAConfig
from .inject import (
    adapted_module_names,
    count_parameters,
    get_config,
    inject,
    parameter_groups,
    print_trainable_parameters,
)
from .io import load_adapters, save_adapters
from .layers import AdaptedMultiheadAttention, AdapterLayer, LoRALinear, MTLLoRALinear, MTLoRALinear
from .merge import merge, merge_and_unload, unmerge
from .peft_export import export_peft, export_peft_all, import_peft
from .routing import MultiTaskModel, TaskRouting, resolve_task_ids, use_tasks

__all__ = [
    "AdapterConfig",
    "LoRAConfig",
    "MTLLoRAConfig",
    "MTLoRAConfig",
    "AdapterLayer",
    "LoRALinear",
    "MTLLoRALinear",
    "MTLoRALinear",
    "AdaptedMultiheadAttention",
    "inject",
    "get_config",
    "adapted_module_names",
    "count_parameters",
    "parameter_groups",
    "print_trainable_parameters",
    "use_tasks",
    "MultiTaskModel",
    "TaskRouting",
    "resolve_task_ids",
    "merge",
    "unmerge",
    "merge_and_unload",
    "save_adapters",
    "load_adapters",
    "export_peft",
    "export_peft_all",
    "import_peft",
    "add_task",
]
