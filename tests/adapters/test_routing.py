"""Task ids reach every adapted layer: mixed batches, checkpointing, compile, replication, errors."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlmtl.adapters import MTLLoRAConfig, MultiTaskModel, inject, use_tasks
from vlmtl.adapters.layers import MTLLoRALinear

TASKS = ["vqa", "retrieval", "caption"]


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Tower(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 3, use_checkpoint: str | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.use_checkpoint = use_checkpoint

    def forward(self, x):
        for block in self.blocks:
            if self.use_checkpoint is None:
                x = block(x)
            else:
                x = checkpoint(block, x, use_reentrant=self.use_checkpoint == "reentrant")
        return x


def adapted_tower(seed: int = 0, **kwargs) -> Tower:
    torch.manual_seed(seed)
    model = Tower(**kwargs)
    inject(model, MTLLoRAConfig(tasks=TASKS, r=2, alpha=4, n_up=2, temperature=0.5, target_modules=["fc1", "fc2"]))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MTLLoRALinear):
                module.B.normal_()
                module.Lambda.add_(0.3 * torch.randn_like(module.Lambda))
    return model


def test_mixed_batch_equals_each_sample_alone(open_clip_model, clip_inputs):
    model = open_clip_model
    inject(model, MTLLoRAConfig(tasks=TASKS, r=4, alpha=8, n_up=2, temperature=0.5,
                                target_modules=["attn", "c_fc", "c_proj"]))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MTLLoRALinear):
                module.B.normal_(std=0.2)
    images, tokens = clip_inputs
    ids = ["vqa", "caption", "retrieval", "caption"]
    with use_tasks(model, ids):
        image_emb, text_emb = model.encode_image(images), model.encode_text(tokens)
    for i, task in enumerate(ids):
        with use_tasks(model, task):
            torch.testing.assert_close(model.encode_image(images[i : i + 1]), image_emb[i : i + 1],
                                       atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(model.encode_text(tokens[i : i + 1]), text_emb[i : i + 1], atol=1e-5, rtol=1e-4)
    # and the tasks really differ
    with use_tasks(model, "vqa"):
        assert not torch.allclose(model.encode_image(images), image_emb, atol=1e-4)


def test_task_ids_as_names_ints_and_tensor_agree():
    model = adapted_tower()
    x = torch.randn(3, 8)
    with use_tasks(model, ["vqa", "caption", "retrieval"]):
        by_name = model(x)
    with use_tasks(model, [0, 2, 1]):
        by_int = model(x)
    with use_tasks(model, torch.tensor([0, 2, 1])):
        by_tensor = model(x)
    assert torch.equal(by_name, by_int) and torch.equal(by_int, by_tensor)


@pytest.mark.parametrize(
    "ids, error, match",
    [
        (["vqa", "nope", "vqa"], ValueError, "unknown task 'nope'"),
        ([0, 5, 1], ValueError, "task id 5 out of range for 3 tasks"),
        ([-1, 0, 1], ValueError, "task id -1 out of range"),
        ([0, 1], ValueError, "2 task ids do not match this layer's batch of 3"),
        ([], ValueError, "empty"),
        (torch.tensor([0.0, 1.0, 1.0]), TypeError, "integers"),
        ("nope", ValueError, "unknown task 'nope'"),
        (3, ValueError, "task id 3 out of range"),
    ],
)
def test_bad_task_ids_are_named(ids, error, match):
    model = adapted_tower()
    with pytest.raises(error, match=match):
        with use_tasks(model, ids):
            model(torch.randn(3, 8))


def test_missing_task_ids_is_a_clear_error():
    model = adapted_tower()
    with pytest.raises(RuntimeError, match="needs task ids"):
        model(torch.randn(2, 8))
    with use_tasks(model, "vqa"):
        model(torch.randn(2, 8))
    with pytest.raises(RuntimeError, match="needs task ids"):  # ids do not outlive their context
        model(torch.randn(2, 8))


def test_contexts_nest_and_restore():
    model = adapted_tower()
    x = torch.randn(2, 8)
    with use_tasks(model, "vqa"):
        outer = model(x)
        with use_tasks(model, "caption"):
            inner = model(x)
        assert torch.equal(model(x), outer)
    assert not torch.allclose(inner, outer)


def test_wrapper_forward_routes_and_checks_length():
    model = adapted_tower()
    wrapped = MultiTaskModel(model)
    x = torch.randn(3, 8)
    with use_tasks(model, ["vqa", "caption", "vqa"]):
        expected = model(x)
    assert torch.equal(wrapped(x, task_ids=["vqa", "caption", "vqa"]), expected)
    with pytest.raises(ValueError, match="2 task ids for a batch of 3"):
        wrapped(x, task_ids=["vqa", "vqa"])  # all-same ids still must match the batch
    with pytest.raises(ValueError, match="needs task_ids"):
        wrapped(x)


@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant"])
def test_gradients_under_checkpoint_equal_plain(mode):
    x = torch.randn(4, 8, requires_grad=True)
    ids = ["vqa", "caption", "retrieval", "vqa"]
    plain = adapted_tower()
    ckpt = adapted_tower(use_checkpoint=mode)
    with use_tasks(plain, ids):
        plain(x).pow(2).sum().backward()
    with use_tasks(ckpt, ids):
        loss = ckpt(x).pow(2).sum()
    loss.backward()  # recomputation happens here, after the context closed
    for (name, p1), (_, p2) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if p1.requires_grad:
            torch.testing.assert_close(p1.grad, p2.grad, msg=name)


def test_two_routed_forwards_then_one_backward_under_checkpoint():
    x = torch.randn(2, 8)
    plain, ckpt = adapted_tower(), adapted_tower(use_checkpoint="non_reentrant")
    for model in (plain, ckpt):
        with use_tasks(model, "vqa"):
            first = model(x).sum()
        with use_tasks(model, ["caption", "retrieval"]):
            second = model(x).pow(2).sum()
        (first + second).backward()
    for p1, p2 in zip(plain.parameters(), ckpt.parameters()):
        if p1.requires_grad:
            torch.testing.assert_close(p1.grad, p2.grad)


def _replicate_like_data_parallel(module: nn.Module) -> nn.Module:
    """What torch.nn.parallel.replicate does to each module, minus the device copies:
    a new object with a *shallow copy of __dict__*, sharing parameters."""
    replica = module._replicate_for_data_parallel()
    replica._parameters = dict(module._parameters)
    for name, child in module._modules.items():
        replica._modules[name] = _replicate_like_data_parallel(child) if child is not None else None
    return replica


def test_data_parallel_style_replicas_route_their_own_slice():
    model = MultiTaskModel(adapted_tower())
    x = torch.randn(6, 8)
    ids = torch.tensor([0, 1, 2, 2, 1, 0])
    expected = model(x, task_ids=ids)
    replicas = [_replicate_like_data_parallel(model) for _ in range(3)]
    # Every replica has routed its ids before any computes: shared routing state would show.
    barrier = threading.Barrier(3)
    def wait_for_all(*_):
        barrier.wait(timeout=10)

    for replica in replicas:
        replica.model.blocks[0].register_forward_pre_hook(wait_for_all)
    with ThreadPoolExecutor(3) as pool:  # one thread per replica, as DataParallel's parallel_apply
        outputs = list(pool.map(lambda r, xc, ic: r(xc, task_ids=ic), replicas, x.chunk(3), ids.chunk(3)))
    torch.testing.assert_close(torch.cat(outputs), expected)


def test_deep_copied_model_keeps_routing_separate():
    model = adapted_tower()
    clone = copy.deepcopy(model)
    x = torch.randn(2, 8)
    with use_tasks(model, "vqa"):
        with pytest.raises(RuntimeError, match="needs task ids"):
            clone(x)


def test_torch_compile_matches_eager():
    model = adapted_tower()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(4, 8)
    for ids in (["vqa", "caption", "retrieval", "vqa"], "caption"):
        with use_tasks(model, ids):
            torch.testing.assert_close(compiled(x), model(x))


def test_use_tasks_needs_multi_task_layers():
    with pytest.raises(ValueError, match="no multi-task adapter layers"):
        with use_tasks(nn.Linear(2, 2), "vqa"):
            pass
