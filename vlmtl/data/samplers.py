"""Task-mixing batch sampler: which task each slot of a batch serves, then which sample.

Each slot draws a task from the strategy's distribution (or cycles tasks for
``round_robin``), then takes the next sample of that task's shuffled pool; a pool is
reshuffled when exhausted, so small tasks are repeated and large ones sub-sampled
exactly as the distribution asks. The whole epoch is a pure function of
``(seed, epoch)``, which makes runs reproducible and resumable mid-epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

STRATEGIES = ("proportional", "uniform", "temperature", "round_robin")


def task_probabilities(counts: Sequence[int], strategy: str, temperature: float = 2.0) -> np.ndarray:
    """Probability of each task given its sample count: ``proportional`` p ∝ n,
    ``uniform`` p = 1/T, ``temperature`` p ∝ n^(1/temperature); ``round_robin`` is
    uniform in the long run."""
    n = np.asarray(counts, dtype=np.float64)
    if strategy == "proportional":
        p = n
    elif strategy in ("uniform", "round_robin"):
        p = np.ones_like(n)
    elif strategy == "temperature":
        p = n ** (1.0 / temperature)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies are {list(STRATEGIES)}")
    return p / p.sum()


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices whose tasks may mix within a batch.

    ``task_of_each_index[i]`` is the task id of dataset item ``i``. An epoch is
    ``num_batches`` batches (default ``ceil(N / batch_size)``, or ``floor`` with
    ``drop_last``; without drop_last the last default batch is the remainder). Call
    ``set_epoch`` before each epoch to change the stream, as with DistributedSampler.

    Under data parallelism (``num_replicas`` > 1, or :meth:`shard`), ``batch_size`` is each
    rank's: the stream is drawn in global batches of ``batch_size × num_replicas`` (the same
    on every rank, from ``(seed, epoch)``) and rank ``rank`` takes the ``rank``-th contiguous
    part of each. The ranks' parts are disjoint, together they are the batch one process
    with the global batch size would draw, and each keeps the strategy's task mix (contiguous
    parts also keep ``round_robin``'s cycle). A short last global batch is completed by more
    draws, as ``DistributedSampler`` pads, so that every rank has ``batch_size`` samples.
    """

    def __init__(
        self,
        task_of_each_index: Sequence[int],
        batch_size: int,
        strategy: str = "proportional",
        seed: int = 0,
        temperature: float = 2.0,
        drop_last: bool = False,
        num_batches: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        tasks = np.asarray(list(task_of_each_index), dtype=np.int64)
        if tasks.size == 0:
            raise ValueError("task_of_each_index is empty: nothing to sample")
        if tasks.min() < 0:
            raise ValueError("task ids must be >= 0")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; known strategies are {list(STRATEGIES)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if num_batches is not None and num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        self.batch_size = int(batch_size)
        self._requested_batches = num_batches
        self.strategy = strategy
        self.seed = int(seed)
        self.temperature = float(temperature)
        self.drop_last = bool(drop_last)
        self.task_ids = sorted(int(t) for t in np.unique(tasks))
        self.pools = [np.flatnonzero(tasks == t) for t in self.task_ids]
        self.probabilities = task_probabilities([len(p) for p in self.pools], strategy, self.temperature)
        self.dataset_size = int(tasks.size)
        self.epoch = 0
        self.batches_yielded = 0
        self._resume_at = 0
        self.shard(num_replicas, rank)

    def shard(self, num_replicas: int, rank: int) -> None:
        """Make this the sampler of rank ``rank`` of ``num_replicas`` (see the class docstring)."""
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} replicas")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        n, batch = self.dataset_size, self.global_batch_size
        if self._requested_batches is not None:
            self.num_batches = int(self._requested_batches)
        elif self.drop_last:
            self.num_batches = n // batch
            if self.num_batches == 0:
                raise ValueError(f"drop_last with a global batch of {batch} > {n} samples leaves no batch")
        else:
            self.num_batches = math.ceil(n / batch)
        full = self._requested_batches is not None or self.drop_last or self.num_replicas > 1
        self.num_samples = self.num_batches * batch if full else n

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks."""
        return self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the stream of ``epoch`` and start it from its first batch."""
        self.epoch = int(epoch)
        self.batches_yielded = 0
        self._resume_at = 0

    def __len__(self) -> int:
        return self.num_batches

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """All indices of ``epoch`` in order (``num_samples`` of them)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        n_tasks = len(self.task_ids)
        # Drawn for whole global batches, then cut: the stream depends on (seed, epoch, global
        # batch size) only, so one process and N ranks with the same global batch see the same.
        drawn = self.num_batches * self.global_batch_size
        if self.strategy == "round_robin":
            slots = np.arange(drawn) % n_tasks
        else:
            slots = rng.choice(n_tasks, size=drawn, p=self.probabilities)
        out = np.empty(drawn, dtype=np.int64)
        for k, pool in enumerate(self.pools):
            where = np.flatnonzero(slots == k)
            if where.size == 0:
                continue
            reps = math.ceil(where.size / pool.size)
            out[where] = np.concatenate([rng.permutation(pool) for _ in range(reps)])[: where.size]
        return out[: self.num_samples]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._resume_at = self._resume_at, 0
        indices = self.epoch_indices(self.epoch)
        self.batches_yielded = start
        first = self.rank * self.batch_size
        for b in range(start, self.num_batches):
            batch = indices[b * self.global_batch_size : (b + 1) * self.global_batch_size]
            batch = batch[first : first + self.batch_size].tolist()
            self.batches_yielded = b + 1
            yield batch

    def state_dict(self, batches_done: int | None = None) -> dict[str, Any]:
        """``{"epoch", "batches_yielded", ...}``. With DataLoader workers the sampler runs
        ahead of the training loop (prefetching), so pass the number of batches the loop
        actually consumed as ``batches_done``."""
        done = self.batches_yielded if batches_done is None else int(batches_done)
        return {"epoch": self.epoch, "batches_yielded": done, "seed": self.seed, "strategy": self.strategy,
                "global_batch_size": self.global_batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields the remaining batches of that epoch."""
        for key in ("seed", "strategy", "global_batch_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler has {getattr(self, key)!r}")
        done = int(state["batches_yielded"])
        if not 0 <= done <= self.num_batches:
            raise ValueError(f"batches_yielded={done} is outside 0..{self.num_batches}")
        self.epoch = int(state["epoch"])
        self.batches_yielded = done
        self._resume_at = done
