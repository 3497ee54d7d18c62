"""vlmtl.distributed on real processes: ``torchrun`` starts two gloo ranks running this file's
``main``, which checks each primitive against one process computing on the whole batch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlmtl import distributed
from vlmtl.heads import RetrievalHead

SIZES = (3, 2)  # rows per rank: unequal on purpose


def test_shard_bounds_split_everything_once():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            parts = [distributed.shard_bounds(n, world, r) for r in range(world)]
            assert [i for start, stop in parts for i in range(start, stop)] == list(range(n))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_one_process_helpers_are_identities():
    x = torch.randn(4, 3, requires_grad=True)
    rows, start = distributed.all_gather_rows(x)
    assert rows is x and start == 0
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.shard([1, 2, 3]) == [1, 2, 3] and distributed.gather_shards([1, 2]) == [1, 2]
    bn = distributed.synchronise_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))
    assert isinstance(bn[0], distributed.DistributedBatchNorm2d)
    y = torch.randn(2, 3, 4, 4)
    assert torch.allclose(bn(y), nn.BatchNorm2d(3)(y))


def test_synchronise_batchnorm_keeps_the_parameter_objects():
    """An optimizer built before the swap must still update the new module's weights."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    weight, mean = model[1].weight, model[1].running_mean
    distributed.synchronise_batchnorm(model)
    assert model[1].weight is weight and model[1].running_mean is mean
    assert set(dict(model.named_parameters())) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_two_ranks_compute_what_one_process_computes():
    from .conftest import run_torchrun  # here: torchrun runs this file as a script, outside the package

    done = run_torchrun(Path(__file__))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("all checks passed") == 2, done.stdout


# ----------------------------------------------------------------------------- run on each rank


def _my_rows(full: torch.Tensor) -> torch.Tensor:
    start = sum(SIZES[: distributed.rank()])
    return full[start : start + SIZES[distributed.rank()]]


def _ddp_average(grad: torch.Tensor) -> torch.Tensor:
    return distributed.all_reduce_sum(grad) / distributed.world_size()


def retrieval_case(local_loss: bool):
    torch.manual_seed(0)
    images, texts = torch.randn(sum(SIZES), 6), torch.randn(sum(SIZES), 6)
    ids = ["a", "b", "a", "c", "d"]  # two captions of image "a": not negatives of each other
    return images, texts, ids, nn.Linear(6, 4), RetrievalHead(local_loss=local_loss, gather_with_grad=True)


def reference_retrieval(local_loss: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One process on all pairs (run before the process group exists): loss and gradient."""
    images, texts, ids, layer, head = retrieval_case(local_loss)
    loss = head(layer(images), layer(texts), ids)
    loss.backward()
    return loss.detach(), layer.weight.grad


def check_retrieval_loss(local_loss: bool, reference: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Each rank's loss weighted as the engine weights it, gradients averaged as DDP averages
    them: the embedding layer's gradient equals one process's on all pairs."""
    images, texts, ids, layer, head = retrieval_case(local_loss)
    start = sum(SIZES[: distributed.rank()])
    loss = head(layer(_my_rows(images)), layer(_my_rows(texts)), ids[start : start + SIZES[distributed.rank()]])
    units = head.loss_units(SIZES[distributed.rank()])
    total_units = float(distributed.all_reduce_sum(torch.tensor(float(units))))
    (loss * distributed.world_size() * units / total_units).backward()
    got = _ddp_average(layer.weight.grad)
    assert torch.allclose(got, reference[1], atol=1e-6), (local_loss, (got - reference[1]).abs().max())
    if not local_loss:
        assert torch.allclose(loss.detach(), reference[0])


def batchnorm_case():
    torch.manual_seed(0)
    x = torch.randn(sum(SIZES), 3, 4, 4)
    weights = torch.randn_like(x)
    reference = nn.BatchNorm2d(3)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1, 1)
    return x, weights, reference


def check_batchnorm() -> None:
    x, weights, reference = batchnorm_case()
    synced = distributed.synchronise_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    synced.load_state_dict(reference.state_dict())
    x_ref = x.clone().requires_grad_(True)
    expected = reference(x_ref)  # BatchNorm2d is not distributed: one process's statistics
    (expected * weights).sum().backward()
    x_mine = _my_rows(x).clone().requires_grad_(True)
    out = synced(x_mine)
    # DDP averages over ranks: each rank's share of the global sum, times the world size
    (out * _my_rows(weights)).sum().mul(distributed.world_size()).backward()
    assert torch.allclose(out, _my_rows(expected), atol=1e-5)
    assert torch.allclose(x_mine.grad, _my_rows(x_ref.grad) * distributed.world_size(), atol=1e-5)
    assert torch.allclose(_ddp_average(synced.weight.grad), reference.weight.grad, atol=1e-5)
    assert torch.allclose(_ddp_average(synced.bias.grad), reference.bias.grad, atol=1e-5)
    assert torch.allclose(synced.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(synced.running_var, reference.running_var, atol=1e-6)


def check_collectives() -> None:
    items = list(range(7))
    assert distributed.gather_shards([i * 10 for i in distributed.shard(items)]) == [i * 10 for i in items]
    assert distributed.gather_objects(distributed.rank()) == list(range(distributed.world_size()))
    assert distributed.broadcast_object(f"from {distributed.rank()}") == "from 0"
    rows = torch.full((SIZES[distributed.rank()], 2), float(distributed.rank()))
    gathered, start = distributed.all_gather_rows(rows, with_grad=False)
    assert gathered[:, 0].tolist() == [0.0] * SIZES[0] + [1.0] * SIZES[1]
    assert start == sum(SIZES[: distributed.rank()])


def main() -> None:
    torch.set_num_threads(1)
    references = {local: reference_retrieval(local) for local in (False, True)}  # before the group exists
    torch.distributed.init_process_group("gloo")
    assert distributed.world_size() == len(SIZES)
    check_collectives()
    for local, reference in references.items():
        check_retrieval_loss(local, reference)
    check_batchnorm()
    print("all checks passed", flush=True)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
