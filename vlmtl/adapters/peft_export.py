"""PEFT interchange: any task of a LoRA or MTL-LoRA model as a standard PEFT LoRA adapter
(``export_peft``), and a PEFT LoRA adapter as vlmtl's ``lora`` method to start from
(``import_peft``).

MTL-LoRA's update for task t, ΔW_t = (α/r)·B̃_t·Λ_t·A = U_t·A, has rank r, so it is exactly a
LoRA: PEFT's ``lora_A`` is A and ``lora_B`` is U_t, with ``lora_alpha = r`` (scaling 1). A
plain LoRA exports as it is (``lora_B`` = (α/r)·B). The folder holds PEFT's
``adapter_config.json`` and ``adapter_model.safetensors`` with PEFT's key names
(``base_model.model.<module>.lora_A.weight``), so ``peft.PeftModel.from_pretrained`` loads it
onto the plain base model, and one folder per task serves every task of one vlmtl model
through PEFT's named adapters (``adapter_names=`` for mixed batches).

Only adapted ``nn.Linear`` layers export: PEFT has no LoRA on the fused ``in_proj`` of
``nn.MultiheadAttention`` (open_clip's attention) and no counterpart of MTLoRA's task streams;
both are refused with a message.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import LoRAConfig
from .inject import CONFIG_ATTR, inject
from .io import atomic_write
from .layers import AdaptedMultiheadAttention, AdapterLayer, LoRALinear, MTLLoRALinear
from .routing import task_index

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def peft_lora_state(model: nn.Module, task: str | int) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """(PEFT tensors, adapted module names, rank) of ``task``'s update in every adapted linear."""
    config = getattr(model, CONFIG_ATTR, None)
    tensors: dict[str, torch.Tensor] = {}
    names: list[str] = []
    ranks = set()
    for name, module in model.named_modules():
        if isinstance(module, AdaptedMultiheadAttention):
            raise ValueError(
                f"{name} is an adapted nn.MultiheadAttention (open_clip's attention): PEFT has no LoRA on its fused "
                "in_proj. Adapt the MLP only (e.g. vision_targets=['mlp.c_fc', 'mlp.c_proj']) to export, or keep "
                "vlmtl's own format (save_adapters) for open_clip models"
            )
        if not isinstance(module, AdapterLayer):
            continue
        if isinstance(module, MTLLoRALinear):
            index = task_index(task, config.tasks if config else None, module.num_tasks)
            up = module.task_up_projections()[index]
        elif isinstance(module, LoRALinear):
            if config is not None:
                task_index(task, config.tasks, len(config.tasks))  # a known task: LoRA serves all of them
            up = module.scaling * module.B.float()
        else:
            raise ValueError(f"{name} is a {type(module).__name__}: only LoRA and MTL-LoRA layers export to PEFT")
        dtype = module.A.dtype
        tensors[f"base_model.model.{name}.lora_A.weight"] = module.A.detach().to(dtype).contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = up.detach().to(dtype).contiguous().cpu()
        names.append(name)
        ranks.add(module.r)
    if not names:
        raise ValueError(f"{type(model).__name__} has no adapter layers to export")
    if len(ranks) != 1:
        raise ValueError(f"PEFT's LoRA config has one rank; this model's layers have ranks {sorted(ranks)}")
    return tensors, names, ranks.pop()


def export_peft(model: nn.Module, task: str | int, path: str | Path, base_model_name_or_path: str | None = None,
                ) -> Path:
    """Write ``task`` of ``model`` (its adapters injected by vlmtl) as a PEFT LoRA adapter folder."""
    tensors, names, rank = peft_lora_state(model, task)
    document = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": rank,
        "lora_alpha": rank,  # lora_B already holds the scaled update: PEFT's scaling is 1
        "lora_dropout": 0.0,
        "target_modules": names,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
    }
    path = Path(path)
    atomic_write(path / PEFT_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(path / PEFT_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    return path


def export_peft_all(model: nn.Module, path: str | Path, base_model_name_or_path: str | None = None) -> list[Path]:
    """One PEFT adapter folder per task (``path/<task>``), to load as named adapters."""
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ValueError("the model holds no vlmtl adapters (inject or load them first)")
    return [export_peft(model, t, Path(path) / t, base_model_name_or_path) for t in config.tasks]


UNSUPPORTED_PEFT_OPTIONS = {"use_rslora": False, "use_dora": False, "fan_in_fan_out": False, "rank_pattern": {},
                            "alpha_pattern": {}, "modules_to_save": None, "bias": "none"}


def import_peft(model: nn.Module, path: str | Path, tasks: list[str] | None = None) -> nn.Module:
    """Inject vlmtl's ``lora`` into ``model`` from a PEFT LoRA adapter folder (its
    ``adapter_config.json`` and ``adapter_model.safetensors``) and load its weights: the same
    update, now trainable as vlmtl's plain LoRA for ``tasks`` (default ``["default"]``).
    PEFT options vlmtl's LoRA has no counterpart for are refused by name."""
    path = Path(path)
    config_file, weights_file = path / PEFT_CONFIG, path / PEFT_WEIGHTS
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"missing PEFT adapter file {file}")
    document = json.loads(config_file.read_text())
    if document.get("peft_type") != "LORA":
        raise ValueError(f"{config_file} is not a PEFT LoRA adapter (peft_type {document.get('peft_type')!r})")
    odd = {k: document[k] for k, plain in UNSUPPORTED_PEFT_OPTIONS.items() if document.get(k) not in (plain, None)}
    if odd:
        raise ValueError(f"{config_file} uses PEFT options vlmtl's LoRA does not have: {odd}")
    config = LoRAConfig(tasks=list(tasks or ["default"]), r=int(document["r"]), alpha=float(document["lora_alpha"]),
                        dropout=float(document.get("lora_dropout") or 0.0), target_modules=document["target_modules"])
    inject(model, config)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    tensors = load_file(str(weights_file))
    seen = set()
    with torch.no_grad():
        for key, tensor in tensors.items():
            module_name, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
            if module_name not in layers or kind not in ("A.weight", "B.weight"):
                raise ValueError(f"{weights_file}: {key} has no adapted linear in this model")
            getattr(layers[module_name], kind[0]).copy_(tensor)
            seen.add(module_name)
    missing = sorted(set(layers) - seen)
    if missing:
        raise ValueError(f"{weights_file} has no weights for adapted layers {missing[:5]}")
    return model
