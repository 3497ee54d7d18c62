"""Per-step measurements of the adapters for ``train_log.jsonl``: how large each task's weight
change is, how far one optimizer step moves it and each factor, and (MTL-LoRA) how the
mixing weights evolve. The questions they answer: does one method learn more slowly because
its updates are smaller, and do the mixing weights move at all?

Logged every ``log_every`` steps under ``adapter/<quantity>/<task>`` keys (see
:mod:`vlmtl.adapters.diagnostics`); ``scripts/diagnose_vl.py`` draws them.
"""

from __future__ import annotations

import torch
from torch import nn

from vlmtl.adapters.diagnostics import FactorSnapshot, mixing_entropy, tracked_layers, up_projection_similarity


class AdapterMonitor:
    """``start`` once, then ``before_step``/``after_step`` around each logged optimizer step."""

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = list(tasks)
        self._start: FactorSnapshot | None = None
        self._before: FactorSnapshot | None = None

    @staticmethod
    def applies_to(model: nn.Module) -> bool:
        return bool(tracked_layers(model))

    def start(self, model: nn.Module) -> None:
        self._start = FactorSnapshot(model)

    def before_step(self, model: nn.Module) -> None:
        self._before = FactorSnapshot(model)

    def _per_task(self, key: str, values: torch.Tensor) -> dict[str, float]:
        """One value per task; a LoRA value (one row: the tasks share it) is given to each."""
        values = values.reshape(-1)
        if len(values) == 1:
            values = values.expand(len(self.tasks))
        return {f"adapter/{key}/{task}": float(v) for task, v in zip(self.tasks, values, strict=True)}

    def after_step(self, model: nn.Module) -> dict[str, float]:
        if self._before is None:
            raise RuntimeError("after_step without before_step")
        now = FactorSnapshot(model)
        row: dict[str, float] = {}
        row.update(self._per_task("delta_norm", now.delta_norms()))
        moved = now.update_norms(self._before)
        row["adapter/update/A"] = float(moved.pop("A"))
        for key, values in moved.items():
            row.update(self._per_task(f"update/{key}", values))
        if self._start is not None and "w" in moved:
            row.update(self._per_task("w_drift", now.update_norms(self._start)["w"]))
        entropy = mixing_entropy(model)
        if entropy is not None:
            row.update(self._per_task("mixing_entropy", entropy))
        similarity = up_projection_similarity(model)
        if similarity is not None:
            row["adapter/up_projection_cosine"] = similarity
        self._before = None
        return row
