"""The one translation from a method name (the registry's words) to the adapter core's
config, shared by the CLIP, LLaVA and Swin factories."""

from __future__ import annotations

from collections.abc import Sequence

from vlmtl.adapters import LoRAConfig, MTLLoRAConfig, MTLoRAConfig
from vlmtl.adapters.config import AdapterConfig
from vlmtl.registry import ADAPTER_METHODS

FIELDS = {
    "lora": ("r", "alpha", "dropout"),
    "mtl_lora": ("r", "alpha", "dropout", "n_up", "temperature", "lambda_type"),
    "mtlora": ("r", "dropout", "r_task", "scale"),
}


def build_adapter_config(method: str, tasks: Sequence[str], target_modules: str | list[str],
                         task_specific_modules: str | list[str] | None = None, **hparams) -> AdapterConfig | None:
    """The core's config for ``method``; None for methods without adapters (``heads_only``,
    ``full``). ``hparams`` may hold every method's fields (r, alpha, dropout, n_up,
    temperature, lambda_type, r_task, scale): each config takes the ones it has."""
    known = {name for names in FIELDS.values() for name in names}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise ValueError(f"unknown adapter option(s) {unknown}; adapter options are {sorted(known)}")
    if method not in ADAPTER_METHODS:
        return None
    fields = {k: hparams[k] for k in FIELDS[method] if hparams.get(k) is not None}
    common = dict(tasks=list(tasks), target_modules=target_modules)
    if method == "lora":
        return LoRAConfig(**common, **fields)
    if method == "mtl_lora":
        return MTLLoRAConfig(**common, **fields)
    return MTLoRAConfig(**common, task_specific_modules=task_specific_modules or [], **fields)
