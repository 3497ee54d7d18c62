"""Save and load adapters: ``vlmtl_adapter_config.json`` + ``vlmtl_adapter_model.safetensors``.

The names are vlmtl's own, so a folder holding MTL-LoRA or MTLoRA is never mistaken for a
PEFT adapter (PEFT reads ``adapter_config.json`` and says it cannot find it); a plain PEFT
LoRA adapter of any task comes from ``export_peft``. Folders written with PEFT's names by
earlier vlmtl versions are still read.

The safetensors file holds every trainable tensor of the model (adapters, and whatever
else was left trainable such as norms or heads) under its ``named_parameters`` name;
its metadata repeats the method and the ordered task names, so a file cannot be loaded
with tasks in another order. Both files are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import AdapterConfig
from .inject import CONFIG_ATTR, adapted_module_names, get_config, inject
from .layers import AdapterLayer

CONFIG_NAME = "vlmtl_adapter_config.json"
WEIGHTS_NAME = "vlmtl_adapter_model.safetensors"
LEGACY_NAMES = ("adapter_config.json", "adapter_model.safetensors")  # vlmtl before 0.2 (PEFT's names)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Run ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter plus every adapter parameter (even if frozen)."""
    adapter_params = {id(p) for m in model.modules() if isinstance(m, AdapterLayer)
                      for p in m.parameters(recurse=False)}
    return {
        name: param.detach()
        for name, param in model.named_parameters()
        if param.requires_grad or id(param) in adapter_params
    }


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter config and tensors of ``model`` into the folder ``path``."""
    config = get_config(model)
    path = Path(path)
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    meta = {"method": config.method, "tasks": json.dumps(config.tasks), "format": "pt"}
    document = {**config.to_dict(), "adapted_modules": adapted_module_names(model)}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=meta))
    atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    return path


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Load adapters saved by :func:`save_adapters`. A model without adapters gets them
    injected from the saved config first; one with adapters must have the same method,
    tasks (in order), layers and shapes."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    legacy_config = path / LEGACY_NAMES[0]
    if not config_file.is_file() and legacy_config.is_file():
        if "peft_type" in json.loads(legacy_config.read_text()):
            raise ValueError(f"{path} is a PEFT adapter, not vlmtl's format: load it with peft.PeftModel")
        config_file, weights_file = legacy_config, path / LEGACY_NAMES[1]
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"missing adapter file {file}")
    document = json.loads(config_file.read_text())
    saved_modules = document.pop("adapted_modules", None)
    saved = AdapterConfig.from_dict(document)

    if hasattr(model, CONFIG_ATTR):
        _check_compatible(get_config(model), saved)
        _check_not_merged(model)
    else:
        inject(model, saved)
    if saved_modules is not None and adapted_module_names(model) != saved_modules:
        missing = sorted(set(saved_modules) - set(adapted_module_names(model)))
        extra = sorted(set(adapted_module_names(model)) - set(saved_modules))
        raise ValueError(f"adapted layers differ from the saved ones: missing {missing[:5]}, unexpected {extra[:5]}")

    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights_file} is not a readable safetensors file: {err}") from err
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"{weights_file} holds tensors this model does not have: {unknown[:5]}")
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{weights_file} lacks trainable tensors of this model: {missing[:5]}")
    for name, tensor in tensors.items():
        param = params[name]
        if param.shape != tensor.shape:
            raise ValueError(
                f"shape mismatch for {name}: saved {tuple(tensor.shape)}, model {tuple(param.shape)} "
                "(different base model or adapter config?)"
            )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    return model


def _check_not_merged(model: nn.Module) -> None:
    """A merged layer's weight holds its current update: new adapter tensors would not reach it."""
    merged = [name for name, m in model.named_modules() if isinstance(m, AdapterLayer) and m.merged]
    if merged:
        raise ValueError(
            f"{len(merged)} adapter layers are merged (e.g. {merged[0]!r}): their weights hold the current "
            "adapters' update, which loading would not replace; call vlmtl.adapters.unmerge(model) first"
        )


def _check_compatible(current: AdapterConfig, saved: AdapterConfig) -> None:
    if current.method != saved.method:
        raise ValueError(f"saved adapters are {saved.method!r}, the model has {current.method!r}")
    if list(current.tasks) != list(saved.tasks):
        raise ValueError(f"saved adapters are for tasks {saved.tasks}, the model's are {current.tasks}")
    if current.to_dict() != saved.to_dict():
        diff = {k: (v, current.to_dict().get(k)) for k, v in saved.to_dict().items() if current.to_dict().get(k) != v}
        raise ValueError(f"saved adapter config differs from the model's (saved, model): {diff}")
