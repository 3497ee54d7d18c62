"""Put adapters into any ``nn.Module`` in place, by module name, and freeze the rest."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from functools import partial

from torch import nn

from .config import AdapterConfig, LoRAConfig, MTLLoRAConfig, MTLoRAConfig
from .layers import AdaptedMultiheadAttention, AdapterLayer, LoRALinear, MTLLoRALinear, MTLoRALinear

logger = logging.getLogger(__name__)

CONFIG_ATTR = "vlmtl_config"  # where inject() leaves the config on the model


def name_matches(name: str, patterns: list[str] | str) -> bool:
    """PEFT's rule: a list matches a name equal to or ending in ``.<suffix>``;
    a string is a regular expression that must match the whole name."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def _candidates(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(name, module, kind) for what can be adapted. An MHA offers itself (both
    projections) and the virtual children ``<name>.in_proj`` and ``<name>.out_proj``."""
    inside_mha = set()
    for name, module in model.named_modules():
        if isinstance(module, (AdapterLayer, AdaptedMultiheadAttention)):
            raise ValueError(f"{name or 'the model'} already holds adapters; inject into a fresh model")
        if isinstance(module, nn.MultiheadAttention):
            inside_mha.add(f"{name}.out_proj")
            yield name, module, "mha"
            yield f"{name}.in_proj", module, "mha_in"
            yield f"{name}.out_proj", module, "mha_out"
        elif isinstance(module, nn.Linear) and name not in inside_mha:
            yield name, module, "linear"


def _adapter_factory(config: AdapterConfig, name: str):
    if isinstance(config, MTLLoRAConfig):
        return partial(
            MTLLoRALinear,
            num_tasks=config.num_tasks,
            r=config.r,
            alpha=config.alpha,
            n_up=config.n_up,
            temperature=config.temperature,
            lambda_type=config.lambda_type,
            dropout=config.dropout,
        )
    if isinstance(config, MTLoRAConfig):
        task_specific = bool(config.task_specific_modules) and name_matches(name, config.task_specific_modules)
        return partial(
            MTLoRALinear,
            num_tasks=config.num_tasks,
            r=config.r,
            r_task=config.r_task if task_specific else 0,
            scale=config.scale,
            dropout=config.dropout,
        )
    if isinstance(config, LoRAConfig):
        return partial(LoRALinear, r=config.r, alpha=config.alpha, dropout=config.dropout)
    raise TypeError(f"unsupported adapter config {type(config).__name__}")


def adapted_module_names(model: nn.Module) -> list[str]:
    """Names of the adapter layers in ``model``, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, AdapterLayer)]


def inject(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Wrap every module named by ``config.target_modules`` with the config's adapter,
    freeze all other parameters, and return ``model`` (changed in place)."""
    targets: dict[str, tuple[nn.Module, str]] = {}
    linear_names = []
    for name, module, kind in list(_candidates(model)):
        if kind == "linear":
            linear_names.append(name)
        if name_matches(name, config.target_modules):
            targets[name] = (module, kind)
    # An MHA chosen whole (or by a child name) becomes one wrapper adapting what was chosen.
    mha_plan: dict[str, dict[str, bool]] = {}
    for name, (_module, kind) in targets.items():
        if kind.startswith("mha"):
            owner = name if kind == "mha" else name.rpartition(".")[0]
            plan = mha_plan.setdefault(owner, {"in": False, "out": False})
            plan["in"] |= kind in ("mha", "mha_in")
            plan["out"] |= kind in ("mha", "mha_out")
    linears = [name for name, (_, kind) in targets.items() if kind == "linear"]
    if not linears and not mha_plan:
        mha_names = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
        raise ValueError(
            f"target_modules {config.target_modules!r} matched no linear or attention module in "
            f"{type(model).__name__}; linear layers here include {linear_names[:8]}"
            + (f" and attention modules {mha_names[:4]}" if mha_names else "")
        )

    for param in model.parameters():
        param.requires_grad_(False)
    for name in linears:
        module = model.get_submodule(name)
        model.set_submodule(name, _adapter_factory(config, name)(module))
    for name, plan in mha_plan.items():
        module = model.get_submodule(name)
        wrapper = AdaptedMultiheadAttention(module, _adapter_factory(config, name), plan["in"], plan["out"])
        model.set_submodule(name, wrapper)

    tasks = tuple(config.tasks)
    for module in model.modules():
        if isinstance(module, AdapterLayer):
            module.task_names = tasks
    setattr(model, CONFIG_ATTR, config)
    trainable, total = count_parameters(model)
    logger.info(
        "injected %s into %d layers: trainable params %s || all params %s || trainable %.4f%%",
        config.method, len(adapted_module_names(model)), f"{trainable:,}", f"{total:,}", 100 * trainable / total,
    )
    return model


def get_config(model: nn.Module) -> AdapterConfig:
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no adapters: call vlmtl.adapters.inject(model, config) first")
    return config


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, shared parameters counted once."""
    trainable = total = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def parameter_groups(model: nn.Module, lr: float, lambda_lr: float | None = None,
                     mixing_lr: float | None = None) -> list[dict]:
    """The trainable parameters of ``model`` as optimizer groups: MTL-LoRA's task transforms Λ
    at ``lambda_lr`` and its mixing logits w at ``mixing_lr`` (each None: ``lr``), everything
    else at ``lr``. With Adam a parameter moves about ``lr`` per step whatever its gradient's
    size, so logits initialised ±1/√n barely move in a few hundred steps at a LoRA learning
    rate: their own rate lets the mixing actually change. Empty groups are left out."""
    special = {"Lambda": lambda_lr, "w": mixing_lr}
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, MTLLoRALinear):
            for name, rate in special.items():
                param = getattr(module, name)
                if param.requires_grad and rate is not None and id(param) not in seen:
                    groups.setdefault(float(rate), []).append(param)
                    seen.add(id(param))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    out = [{"params": rest, "lr": lr}] if rest else []
    return out + [{"params": params, "lr": rate} for rate, params in groups.items()]


def print_trainable_parameters(model: nn.Module) -> None:
    trainable, total = count_parameters(model)
    print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")
