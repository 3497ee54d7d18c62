"""What a LoRA or MTL-LoRA model has learned and how fast it moves, measured on its factors.

The effective weight change of task t in a layer is ΔW_t = U_t·A (``U_t = scaling·B̃_t·Λ_t`` for
MTL-LoRA, ``scaling·B`` for LoRA). Its Frobenius norm comes from two r×r Gram matrices,
‖U A‖² = tr(UᵀU · AAᵀ), so no d_out × d_in matrix is ever built and a snapshot of a ViT-B costs
a few hundred kB. :class:`FactorSnapshot` holds the factors at one moment; the difference of
two snapshots is the update a step made. Also here: the mixing weights' entropy, how far the
mixing logits moved, and how alike the n up-projections B_i stay (if they stay identical,
MTL-LoRA has collapsed to one up-projection with a task transform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .layers import LoRALinear, MTLLoRALinear


def tracked_layers(model: nn.Module) -> list[tuple[str, LoRALinear | MTLLoRALinear]]:
    """The LoRA and MTL-LoRA layers of ``model``, by name (unmerged ones only: a merged
    layer's factors no longer describe its output alone)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (LoRALinear, MTLLoRALinear)) and not m.merged]


@dataclass
class LayerFactors:
    """One layer's factors at one moment (fp32, detached copies)."""

    up: torch.Tensor  # (T or 1) × d_out × r: U_t
    down: torch.Tensor  # r × d_in: A
    mixed_b: torch.Tensor  # (T or 1) × d_out × r: scaling·B̃_t (LoRA: scaling·B)
    lam: torch.Tensor | None  # MTL-LoRA's Λ
    w: torch.Tensor | None  # MTL-LoRA's mixing logits


def layer_factors(layer: LoRALinear | MTLLoRALinear) -> LayerFactors:
    with torch.no_grad():
        down = layer.A.detach().float().clone()
        if isinstance(layer, MTLLoRALinear):
            mixed = layer.scaling * torch.einsum("tn,nor->tor", layer.mixing_weights(), layer.B.float())
            return LayerFactors(up=layer.task_up_projections().detach().clone(), down=down, mixed_b=mixed,
                                lam=layer.Lambda.detach().float().clone(), w=layer.w.detach().float().clone())
        up = (layer.scaling * layer.B.detach().float()).unsqueeze(0).clone()
        return LayerFactors(up=up, down=down, mixed_b=up, lam=None, w=None)


def _product_sq_norm(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """‖U_t A‖²_F for every t (U: T × d_out × r, A: r × d_in) through r×r Grams."""
    gram_down = down @ down.T
    return torch.einsum("tij,ji->t", up.transpose(1, 2) @ up, gram_down)


def _difference_sq_norm(new: LayerFactors, old: LayerFactors) -> torch.Tensor:
    """‖U'A' − UA‖²_F per task, as ‖(U' − U)A' + U(A' − A)‖²: the product [U' − U, U]·[A'; A' − A]
    of rank 2r. Built from the small differences (in fp64), so a step that moves ΔW by a
    millionth of its size is not lost in the rounding of two nearly equal products."""
    up = torch.cat([new.up.double() - old.up.double(), old.up.double()], dim=2)
    down = torch.cat([new.down.double(), new.down.double() - old.down.double()], dim=0)
    return _product_sq_norm(up, down).clamp_min(0).float()


class FactorSnapshot:
    """The factors of every tracked layer of a model at one moment."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = {name: layer_factors(layer) for name, layer in tracked_layers(model)}
        if not self.layers:
            raise ValueError("the model has no unmerged LoRA or MTL-LoRA layer to measure")

    @property
    def num_tasks(self) -> int:
        return max(f.up.shape[0] for f in self.layers.values())

    def delta_norms(self) -> torch.Tensor:
        """‖ΔW_t‖_F over all layers together (√ of the sum of squares), per task; LoRA gives
        one value (its tasks share ΔW)."""
        return torch.stack([_product_sq_norm(f.up, f.down) for f in self.layers.values()]).sum(0).sqrt()

    def update_norms(self, before: FactorSnapshot) -> dict[str, torch.Tensor]:
        """How much each part moved since ``before``, as Frobenius norms over all layers:
        ``delta`` (ΔW_t per task), ``A``, ``mixed_b`` (scaling·B̃_t per task: the up-projection a
        task sees), and for MTL-LoRA ``lambda`` (Λ_t) and ``w`` (w_t) per task."""
        sums: dict[str, torch.Tensor] = {}

        def add(key: str, value: torch.Tensor) -> None:
            sums[key] = sums[key] + value if key in sums else value

        for name, new in self.layers.items():
            old = before.layers[name]
            add("delta", _difference_sq_norm(new, old))
            add("A", (new.down - old.down).pow(2).sum())
            add("mixed_b", (new.mixed_b - old.mixed_b).pow(2).flatten(1).sum(1))
            if new.lam is not None:
                add("lambda", (new.lam - old.lam).pow(2).flatten(1).sum(1))
                add("w", (new.w - old.w).pow(2).sum(1))
        return {k: v.sqrt() for k, v in sums.items()}


def mixing_entropy(model: nn.Module) -> torch.Tensor | None:
    """Per task, the entropy of softmax(w_t/τ) over the n up-projections divided by log n
    (1: uniform mixing, 0: one B_i only), averaged over the MTL-LoRA layers; None without any."""
    values = []
    for _, layer in tracked_layers(model):
        if isinstance(layer, MTLLoRALinear) and layer.n_up > 1:
            with torch.no_grad():
                p = layer.mixing_weights()
                values.append(-(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(layer.n_up))
    return torch.stack(values).mean(0) if values else None


def up_projection_similarity(model: nn.Module) -> float | None:
    """The mean pairwise cosine similarity of the n up-projections B_i over the MTL-LoRA layers
    (1: they are one matrix, and n up-projections buy nothing); None before they are nonzero
    or without MTL-LoRA layers with n > 1."""
    values = []
    for _, layer in tracked_layers(model):
        if not isinstance(layer, MTLLoRALinear) or layer.n_up < 2:
            continue
        with torch.no_grad():
            flat = layer.B.float().flatten(1)
            norms = flat.norm(dim=1)
            if bool((norms == 0).any()):
                continue
            cos = (flat / norms[:, None]) @ (flat / norms[:, None]).T
            upper = torch.triu_indices(layer.n_up, layer.n_up, offset=1)
            values.append(cos[upper[0], upper[1]].mean())
    return float(torch.stack(values).mean()) if values else None
