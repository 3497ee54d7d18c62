"""MultiTaskBatchSampler: strategy proportions, determinism, epochs and resume."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from vlmtl.data import MultiTaskBatchSampler, task_probabilities

COUNTS = (600, 300, 100)
TASK_OF = [t for t, n in enumerate(COUNTS) for _ in range(n)]


def _task_fractions(sampler: MultiTaskBatchSampler) -> np.ndarray:
    tasks = [TASK_OF[i] for batch in sampler for i in batch]
    counts = Counter(tasks)
    return np.array([counts[t] for t in range(len(COUNTS))]) / len(tasks)


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("proportional", np.array(COUNTS) / sum(COUNTS)),
        ("uniform", np.full(3, 1 / 3)),
        ("temperature", np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()),
    ],
)
def test_strategy_proportions(strategy, expected):
    sampler = MultiTaskBatchSampler(TASK_OF, batch_size=50, strategy=strategy, seed=1, temperature=2.0, num_batches=400)
    assert np.allclose(task_probabilities(COUNTS, strategy, 2.0), expected)
    assert np.abs(_task_fractions(sampler) - expected).max() < 0.015


def test_temperature_interpolates():
    p1 = task_probabilities(COUNTS, "temperature", 1.0)
    p_big = task_probabilities(COUNTS, "temperature", 1000.0)
    assert np.allclose(p1, np.array(COUNTS) / sum(COUNTS))
    assert np.allclose(p_big, 1 / 3, atol=1e-2)


def test_round_robin_cycles_tasks_across_batches():
    sampler = MultiTaskBatchSampler(TASK_OF, batch_size=4, strategy="round_robin", seed=0, num_batches=30)
    tasks = [TASK_OF[i] for batch in sampler for i in batch]
    assert tasks == [k % 3 for k in range(120)]


def test_without_replacement_within_pool():
    """A task drawn c times from a pool of n items uses each item floor or ceil(c/n) times."""
    sampler = MultiTaskBatchSampler(TASK_OF, batch_size=32, strategy="uniform", seed=3)
    uses = Counter(i for batch in sampler for i in batch)
    for t, n in enumerate(COUNTS):
        drawn = sum(c for i, c in uses.items() if TASK_OF[i] == t)
        per_item = [uses.get(i, 0) for i in range(len(TASK_OF)) if TASK_OF[i] == t]
        assert set(per_item) <= {drawn // n, math.ceil(drawn / n)}
    # The small task is oversampled (repeated), the large one sub-sampled.
    assert min(uses[i] for i in range(900, 1000)) >= 3


def test_epoch_length_and_last_batch():
    sampler = MultiTaskBatchSampler(TASK_OF, batch_size=64, strategy="proportional", seed=0)
    batches = list(sampler)
    assert len(sampler) == len(batches) == math.ceil(1000 / 64)
    assert [len(b) for b in batches[:-1]] == [64] * 15 and len(batches[-1]) == 1000 - 15 * 64
    dropped = MultiTaskBatchSampler(TASK_OF, batch_size=64, strategy="proportional", seed=0, drop_last=True)
    assert len(dropped) == 15 and all(len(b) == 64 for b in dropped)
    fixed = MultiTaskBatchSampler(TASK_OF, batch_size=10, strategy="uniform", seed=0, num_batches=7)
    assert len(fixed) == 7 and [len(b) for b in fixed] == [10] * 7


def test_determinism_seeds_and_epochs():
    def stream(seed: int, epoch: int = 0) -> list[list[int]]:
        s = MultiTaskBatchSampler(TASK_OF, batch_size=16, strategy="temperature", seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert stream(7) == stream(7)
    assert stream(7) != stream(8)
    assert stream(7, epoch=1) != stream(7, epoch=0)
    s = MultiTaskBatchSampler(TASK_OF, batch_size=16, strategy="temperature", seed=7)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == stream(7, 0)
    s.set_epoch(1)
    assert list(s) == e1


def test_batches_mix_tasks():
    sampler = MultiTaskBatchSampler(TASK_OF, batch_size=16, strategy="uniform", seed=0)
    mixed = [len({TASK_OF[i] for i in b}) > 1 for b in sampler]
    assert sum(mixed) >= 0.9 * len(mixed)


@pytest.mark.parametrize("strategy", ["proportional", "round_robin"])
def test_state_dict_resume_matches_uninterrupted(strategy):
    full = MultiTaskBatchSampler(TASK_OF, batch_size=24, strategy=strategy, seed=11)
    full.set_epoch(2)
    expected = list(full)

    run = MultiTaskBatchSampler(TASK_OF, batch_size=24, strategy=strategy, seed=11)
    run.set_epoch(2)
    it = iter(run)
    head = [next(it) for _ in range(5)]
    state = run.state_dict()
    assert state["epoch"] == 2 and state["batches_yielded"] == 5

    resumed = MultiTaskBatchSampler(TASK_OF, batch_size=24, strategy=strategy, seed=11)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert head + rest == expected
    assert resumed.state_dict()["batches_yielded"] == len(expected)
    assert list(resumed) == expected  # a later pass over the same epoch starts from its beginning


def test_state_dict_with_consumed_count_and_validation():
    s = MultiTaskBatchSampler(TASK_OF, batch_size=100, strategy="uniform", seed=0)
    assert s.state_dict(batches_done=3)["batches_yielded"] == 3
    other = MultiTaskBatchSampler(TASK_OF, batch_size=100, strategy="uniform", seed=1)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="outside"):
        s.load_state_dict({"epoch": 0, "batches_yielded": 99})


def test_invalid_arguments():
    with pytest.raises(ValueError, match="unknown strategy 'random'"):
        MultiTaskBatchSampler(TASK_OF, batch_size=4, strategy="random")
    with pytest.raises(ValueError, match="batch_size"):
        MultiTaskBatchSampler(TASK_OF, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        MultiTaskBatchSampler([], batch_size=4)
