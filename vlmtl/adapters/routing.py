"""How each sample's task id reaches every adapted layer.

One mechanism: ``use_tasks(model, ids)`` puts a :class:`TaskRouting` on every adapted
layer under ``model`` for the duration of the ``with`` block (restoring what was there
before), and :class:`MultiTaskModel` does the same from a ``task_ids=`` forward argument.

Why per-layer attributes and not a global: ``DataParallel`` replicas each own their
layers, so a replica's forward (fed its scattered slice of ``task_ids``) routes only its
own layers, with no shared state between threads.

Why a short per-layer history: activation checkpointing re-runs forwards inside
``backward()``, after the ``with`` block has closed. Every routed forward records the
routing it used; a forward re-run during backward takes the most recent record
(last in, first out), so the recomputation sees the ids of the forward it repeats.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

TaskIds = str | int | Sequence[str | int] | torch.Tensor

_HISTORY = 8  # routed forwards remembered per layer for activation-checkpoint recomputation


@dataclass
class TaskRouting:
    """Resolved task ids for one forward.

    ``ids`` is ``None`` when one task applies to every sample (``single``), else a 1-D
    int64 tensor with one id per sample. ``uniform`` is the task all samples share, or
    ``None`` for a mixed batch; it lets layers take the cheap single-task path."""

    ids: torch.Tensor | None
    uniform: int | None
    _on_device: dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int | None:
        return None if self.ids is None else int(self.ids.numel())

    def ids_on(self, device: torch.device) -> torch.Tensor:
        """The per-sample ids on ``device``, copied once per forward and device."""
        assert self.ids is not None
        cached = self._on_device.get(device)
        if cached is None:
            cached = self.ids.to(device, non_blocking=True)
            if not torch.compiler.is_compiling():  # Dynamo cannot keep this side effect inside a checkpoint
                self._on_device[device] = cached
        return cached


def resolve_task_ids(task_ids: TaskIds, task_names: Sequence[str] | None, num_tasks: int) -> TaskRouting:
    """Validate user ids (names or integers; one, or one per sample) into a TaskRouting."""
    if task_ids is None:
        raise ValueError("task_ids is None: pass a task name, a task index, or one per sample")
    if isinstance(task_ids, (str, int)) and not isinstance(task_ids, bool):
        index = task_index(task_ids, task_names, num_tasks)
        return TaskRouting(ids=None, uniform=index)
    if isinstance(task_ids, torch.Tensor):
        if task_ids.is_floating_point() or task_ids.is_complex() or task_ids.dtype == torch.bool:
            raise TypeError(f"task ids tensor must hold integers, got dtype {task_ids.dtype}")
        if task_ids.dim() == 0:
            return TaskRouting(ids=None, uniform=task_index(int(task_ids), task_names, num_tasks))
        if task_ids.dim() != 1:
            raise ValueError(f"task ids must be 1-D (one per sample), got shape {tuple(task_ids.shape)}")
        on_device = task_ids.detach().to(torch.long)
        ids = on_device.to("cpu")
        if ids.numel() == 0:
            raise ValueError("task ids are empty: give one task id per sample")
        bad = (ids < 0) | (ids >= num_tasks)
        if bool(bad.any()):
            first = int(ids[bad][0])
            raise ValueError(f"task id {first} out of range for {num_tasks} tasks {list(task_names or [])}")
        if on_device.device != ids.device:  # the layers on that device read these: no copy back
            return _routing_of(ids, {on_device.device: on_device})
    else:
        values = list(task_ids)
        if not values:
            raise ValueError("task ids are empty: give one task id per sample")
        ids = torch.tensor([task_index(v, task_names, num_tasks) for v in values], dtype=torch.long)
    return _routing_of(ids)


def _routing_of(ids: torch.Tensor, on_device: dict[torch.device, torch.Tensor] | None = None) -> TaskRouting:
    """The routing of validated CPU ids, seeded with copies already on other devices."""
    first = int(ids[0])
    uniform = first if bool((ids == first).all()) else None
    return TaskRouting(ids=ids, uniform=uniform, _on_device=dict(on_device or {}))


def task_index(task: str | int, task_names: Sequence[str] | None, num_tasks: int) -> int:
    """The one name → index rule: a known task name, or an integer id in range; errors name the cause."""
    if isinstance(task, str):
        if task_names is None:
            raise ValueError(f"task {task!r} given by name, but this layer has no task names; pass integer ids")
        if task not in task_names:
            raise ValueError(f"unknown task {task!r}; known tasks: {list(task_names)}")
        return list(task_names).index(task)
    if isinstance(task, bool):
        raise TypeError(f"a task id must be a name or an integer, got {task!r}")
    try:
        index = operator.index(task)
    except TypeError:
        raise TypeError(f"a task id must be a name or an integer, got {task!r}") from None
    if not 0 <= index < num_tasks:
        raise ValueError(f"task id {index} out of range for {num_tasks} tasks {list(task_names or [])}")
    return index


def _in_backward() -> bool:
    """True while the autograd engine runs (e.g. a checkpointed forward being recomputed).

    False while torch.compile traces: Dynamo cannot read the engine's state (a graph break),
    and a compiled graph that contains the checkpoint (Dynamo traces ``checkpoint``) recomputes
    in backward from the graph, without re-running this Python."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1


class TaskRoutedMixin:
    """The routing side of an adapted layer: where it keeps and reads its task ids."""

    num_tasks: int
    task_names: tuple[str, ...] | None = None
    fold_batch: bool = False  # read a leading dim of k*B as k consecutive rows per sample
    _routing: TaskRouting | None = None
    _history: tuple[TaskRouting, ...] = ()

    def current_routing(self, required: bool = True) -> TaskRouting | None:
        """The routing for this forward; records it so a checkpoint re-run can find it."""
        if _in_backward():
            if self._history:
                routing = self._history[-1]
                self._history = self._history[:-1]
                return routing
            if self._routing is not None or not required:
                return self._routing
        routing = self._routing
        if routing is None:
            if not required:
                return None
            raise RuntimeError(
                f"{type(self).__name__} needs task ids but none were given for this forward: "
                "wrap the call in `with vlmtl.adapters.use_tasks(model, task_ids):` "
                "or call a MultiTaskModel with task_ids=..."
            )
        # A new tuple (not an in-place append): DataParallel replicas share __dict__ values.
        # Not while torch.compile traces: a compiled graph recomputes checkpointed forwards
        # without re-running Python, and a growing tuple would recompile it at every length.
        if not torch.compiler.is_compiling():
            self._history = self._history[-(_HISTORY - 1):] + (routing,)
        return routing

    def rows_per_sample(self, routing: TaskRouting, rows: int) -> int:
        """How many consecutive rows of the layer input's leading dimension each task id covers
        (1, or k under ``fold_batch``); checks the length from the ids' shape, reading no values."""
        batch = routing.ids.numel()
        if rows == batch:
            return 1
        if self.fold_batch and rows % batch == 0:
            return rows // batch
        raise ValueError(
            f"{batch} task ids do not match this layer's batch of {rows} samples "
            f"({type(self).__name__}; give exactly one task id per sample)"
        )

    def per_row_ids(self, routing: TaskRouting, rows: int, device: torch.device) -> torch.Tensor:
        """One task id per row of the layer input's leading dimension."""
        repeats = self.rows_per_sample(routing, rows)
        ids = routing.ids_on(device)
        # A Python-int repeat count: the output size is known, no device-to-host read.
        return ids if repeats == 1 else ids.repeat_interleave(repeats)


def routed_layers(module: nn.Module) -> Iterator[TaskRoutedMixin]:
    """Adapted layers under ``module`` that take task ids (``module`` itself included)."""
    for sub in module.modules():
        if isinstance(sub, TaskRoutedMixin) and sub.num_tasks > 0:
            yield sub


@contextmanager
def use_tasks(module: nn.Module, task_ids: TaskIds) -> Iterator[TaskRouting]:
    """Route ``task_ids`` (a task, or one per sample) to every adapted layer in ``module``.

    Works on a whole model or a single layer; nests, restoring the outer ids on exit."""
    layers = list(routed_layers(module))
    if not layers:
        raise ValueError(f"{type(module).__name__} has no multi-task adapter layers to route task ids to")
    names = layers[0].task_names
    num_tasks = layers[0].num_tasks
    for layer in layers[1:]:
        if layer.num_tasks != num_tasks or layer.task_names != names:
            raise ValueError("adapted layers disagree on their tasks; was the model injected twice?")
    routing = resolve_task_ids(task_ids, names, num_tasks)
    previous = [layer._routing for layer in layers]
    for layer in layers:
        layer._routing = routing
    try:
        yield routing
    finally:
        for layer, old in zip(layers, previous):
            layer._routing = old


def batch_size_of(args: tuple, kwargs: dict) -> int | None:
    """Leading size of the first tensor argument (the batch), if there is one."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


class MultiTaskModel(nn.Module):
    """Wraps an adapted model so that ``forward(..., task_ids=...)`` routes the ids.

    ``task_ids`` may be a task name/index for the whole batch or one per sample; with
    one per sample its length must equal the batch (the first tensor argument's leading
    size). Pass a tensor under ``nn.DataParallel`` so that it is scattered with the
    inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args, task_ids: TaskIds | None = None, **kwargs):
        if task_ids is None:
            raise ValueError("MultiTaskModel.forward needs task_ids= (a task, or one per sample)")
        with use_tasks(self.model, task_ids) as routing:
            batch = batch_size_of(args, kwargs)
            if routing.batch_size is not None and batch is not None and routing.batch_size != batch:
                raise ValueError(f"got {routing.batch_size} task ids for a batch of {batch} samples")
            return self.model(*args, **kwargs)
