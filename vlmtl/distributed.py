"""What running on several processes needs, for every layer of the package.

Data parallelism (DDP through ``accelerate``/``torchrun``) splits each global batch between
ranks; for the result to equal one process's on the whole batch, a few quantities must be
computed over the global batch, not the local one: the negatives of the contrastive loss, the
normaliser of each mean loss, BatchNorm statistics, evaluation metrics. These helpers do that
over ``torch.distributed`` when a process group is initialised, and are identities otherwise,
so single-process code pays nothing. They work with any backend that has ``all_reduce`` and
``all_gather_object`` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _reduce_device(tensor: torch.Tensor) -> torch.Tensor:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        return tensor.cuda()
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a new tensor, outside autograd)."""
    if not is_distributed():
        return tensor.detach().clone()
    out = _reduce_device(tensor.detach().clone())
    dist.all_reduce(out)
    return out.to(tensor.device)


class _AllReduceWithGrad(torch.autograd.Function):
    """y = Σ_ranks x with its gradient: every rank's loss depends on every rank's x, so the
    gradient reaching x is the sum over ranks of the gradient each rank's loss sends to y."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D401 (autograd signature)
        return all_reduce_sum(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(grad)


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks, differentiable (the backward pass sums the gradients)."""
    return _AllReduceWithGrad.apply(tensor) if is_distributed() else tensor


def all_gather_rows(rows: torch.Tensor, with_grad: bool = True) -> tuple[torch.Tensor, int]:
    """Every rank's ``rows`` (a different number per rank is fine) concatenated in rank order,
    and where this rank's rows start. With ``with_grad`` the gradient of every rank's use of
    the result flows back to each rank's rows (open_clip's ``gather_with_grad``); without, only
    this rank's own rows carry a gradient (open_clip's default)."""
    if not is_distributed():
        return rows, 0
    counts = all_reduce_sum(F.one_hot(torch.tensor(rank()), world_size()) * rows.shape[0]).tolist()
    start = sum(counts[: rank()])
    padded = rows.new_zeros((world_size(), max(counts), *rows.shape[1:]))
    if with_grad:
        slot = torch.zeros(world_size(), dtype=torch.bool, device=rows.device)
        slot[rank()] = True
        own = F.pad(rows, (0, 0) * (rows.dim() - 1) + (0, max(counts) - rows.shape[0]))
        padded = all_reduce_with_grad(torch.where(slot.view(-1, *[1] * rows.dim()), own.unsqueeze(0), padded))
        return torch.cat([padded[r, : counts[r]] for r in range(world_size())]), start
    padded[rank(), : rows.shape[0]] = rows.detach()
    gathered = all_reduce_sum(padded)
    parts = [rows if r == rank() else gathered[r, : counts[r]] for r in range(world_size())]
    return torch.cat(parts), start


def gather_objects(local: T) -> list[T]:
    """Every rank's picklable ``local``, in rank order (``[local]`` in one process)."""
    if not is_distributed():
        return [local]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, local)
    return out


def broadcast_object(value: T, source: int = 0) -> T:
    """``source``'s ``value`` on every rank (so every rank acts on one decision)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard_bounds(n: int, num_replicas: int | None = None, index: int | None = None) -> tuple[int, int]:
    """The contiguous part ``[start, stop)`` of ``n`` items that rank ``index`` works on; the
    parts differ by at most one item and, concatenated in rank order, give back all ``n``."""
    num_replicas = world_size() if num_replicas is None else num_replicas
    index = rank() if index is None else index
    base, extra = divmod(n, num_replicas)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous part of ``items`` (all of them in one process)."""
    start, stop = shard_bounds(len(items))
    return list(items[start:stop])


def gather_shards(local: list[T]) -> list[T]:
    """The inverse of :func:`shard`: every rank's results, concatenated in rank order."""
    return [item for part in gather_objects(local) for item in part]


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, as one process would
    compute them. ``torch.nn.SyncBatchNorm`` does this on GPUs only and refuses CPU tensors;
    this one works on any device through differentiable all-reduces (two passes, mean then
    variance, so it is as precise as ``BatchNorm2d``). In eval mode, or in one process, it is
    ``BatchNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = (0, 2, 3)
        count = all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = all_reduce_with_grad(x.sum(dims)) / count
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce_with_grad(centred.pow(2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def synchronise_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a :class:`DistributedBatchNorm2d`
    that holds the very same parameter and buffer objects (an optimizer built before still
    updates them; names unchanged, so checkpoints still fit)."""
    if type(module) is nn.BatchNorm2d:
        synced = DistributedBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                        module.track_running_stats)
        for name, tensor in list(module.named_parameters(recurse=False)):
            setattr(synced, name, tensor)
        for name, tensor in list(module.named_buffers(recurse=False)):
            setattr(synced, name, tensor)
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        new = synchronise_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
