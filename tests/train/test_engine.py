"""The engine's loss reduction in one process (its N-process behaviour runs in
test_distributed_training.py on real ranks)."""

from __future__ import annotations

import pytest
import torch

from vlmtl.train.engine import global_batch_loss


def test_one_process_loss_is_the_weighted_sum_and_logs_each_task():
    losses = {"vqa": torch.tensor(2.0, requires_grad=True), "caption": torch.tensor(0.5, requires_grad=True)}
    weights = {"vqa": 1.0, "caption": 3.0}
    loss, logged = global_batch_loss(losses, {"vqa": 4, "caption": 37}, weights.get, ["vqa", "retrieval", "caption"])
    assert float(loss) == pytest.approx(2.0 + 3.0 * 0.5)
    assert logged == pytest.approx({"vqa": 2.0, "caption": 0.5})  # retrieval absent: not logged
    loss.backward()
    assert float(losses["caption"].grad) == pytest.approx(3.0)


def test_a_task_with_no_unit_is_left_out_and_bad_steps_are_named():
    losses = {"vqa": torch.tensor(1.0), "caption": torch.tensor(0.0)}
    loss, logged = global_batch_loss(losses, {"vqa": 2, "caption": 0}, lambda t: 1.0, ["vqa", "caption"])
    assert set(logged) == {"vqa"} and float(loss) == 1.0
    with pytest.raises(ValueError, match="no count for the losses of \\['caption'\\]"):
        global_batch_loss(losses, {"vqa": 2}, lambda t: 1.0, ["vqa", "caption"])
    with pytest.raises(ValueError, match="not among the run's tasks"):
        global_batch_loss(losses, {"vqa": 2, "caption": 1}, lambda t: 1.0, ["vqa"])
    with pytest.raises(ValueError, match="no task has a loss"):
        global_batch_loss({}, {}, lambda t: 1.0, ["vqa"])
