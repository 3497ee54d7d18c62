"""MTL-LoRA's forward under per-sample routing reads no tensor values on the host.

A host read (``.item()``, ``bool(tensor)``, ``.tolist()``, ``nonzero``, ``torch.unique``, a
data-dependent shape, Python branching on a tensor) would stall the device every layer. Three
checks that fail on one:

* ``torch.compile(..., fullgraph=True)``: Dynamo cannot put a host read of a tensor value in a
  graph, so fullgraph raises (and ``torch._dynamo.explain`` counts a graph break);
* the forward on the ``meta`` device, whose tensors have shapes but no values: a host read raises;
* on CUDA, ``torch.cuda.set_sync_debug_mode("error")`` around the forward.

A deliberately syncing layer shows each check can fail. The compiled outputs and gradients
equal eager ones on a mixed batch (``aot_eager`` backend: inductor is slow to compile on CPU).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlmtl.adapters import MTLLoRAConfig, inject, use_tasks
from vlmtl.adapters.layers import AdaptedMultiheadAttention, MTLLoRALinear

TASKS = ["a", "b", "c", "d"]
MIXED = torch.tensor([0, 2, 1, 2])  # three of the four tasks, unsorted


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def randomize(model: nn.Module) -> nn.Module:
    """Non-zero B and a non-identity Λ, so every task's update differs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MTLLoRALinear):
                m.B.normal_(std=0.5)
                m.Lambda.add_(0.3 * torch.randn_like(m.Lambda))
    return model


def adapted_linear(seed: int = 0, fold_batch: bool = False, lambda_type: str = "full") -> MTLLoRALinear:
    torch.manual_seed(seed)
    layer = MTLLoRALinear(nn.Linear(16, 24).requires_grad_(False), num_tasks=len(TASKS), r=4, alpha=8, n_up=3,
                          temperature=0.5, lambda_type=lambda_type)
    layer.task_names = tuple(TASKS)
    layer.fold_batch = fold_batch
    return randomize(layer)


class Block(nn.Module):
    """Pre-norm attention (nn.MultiheadAttention: fused in_proj + out_proj) and an MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class Tower(nn.Module):
    def __init__(self, dim: int = 16, depth: int = 2, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.use_checkpoint else block(x)
        return x.mean(dim=1)


def adapted_tower(seed: int = 0, **kwargs) -> Tower:
    torch.manual_seed(seed)
    model = inject(Tower(**kwargs), MTLLoRAConfig(tasks=TASKS, r=4, alpha=8, n_up=2, temperature=0.5,
                                                  target_modules=["attn", "fc1", "fc2"]))
    assert sum(isinstance(m, MTLLoRALinear) for m in model.modules()) == 8  # in_proj, out_proj, fc1, fc2 x 2
    assert sum(isinstance(m, AdaptedMultiheadAttention) for m in model.modules()) == 2
    return randomize(model)


def grads(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    out["input"] = x.grad.clone()
    return out


def step(fn, model: nn.Module, x: torch.Tensor, ids) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward under ``ids``, backward of a loss that weighs every output element differently."""
    model.zero_grad(set_to_none=True)
    x.grad = None
    with use_tasks(model, ids):
        y = fn(x)
    weight = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y * weight).sum().backward()
    return y.detach(), grads(model, x)


def assert_same_step(compiled, model, x, ids):
    y_eager, g_eager = step(model, model, x, ids)
    y_comp, g_comp = step(compiled, model, x, ids)
    torch.testing.assert_close(y_comp, y_eager)
    assert g_comp.keys() == g_eager.keys() and any(k.rsplit(".", 1)[-1] == "B" for k in g_eager)
    for name in g_eager:
        torch.testing.assert_close(g_comp[name], g_eager[name], msg=name)


# --------------------------------------------------------------------------- (a) fullgraph == eager
@pytest.mark.parametrize("fold_batch, lambda_type", [(False, "full"), (True, "diagonal")])
def test_adapted_linear_compiles_fullgraph_and_matches_eager(fold_batch, lambda_type):
    layer = adapted_linear(fold_batch=fold_batch, lambda_type=lambda_type)
    rows = 2 * len(MIXED) if fold_batch else len(MIXED)  # fold_batch: k rows per sample (Swin windows)
    x = torch.randn(rows, 5, 16, requires_grad=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, fullgraph=True, backend=counter)
    assert_same_step(compiled, layer, x, MIXED)
    assert counter.frame_count == 1
    # The mixed batch really mixes: each sample as its own single-task batch gives the same rows.
    with use_tasks(layer, MIXED), torch.no_grad():
        mixed = compiled(x)
    k = rows // len(MIXED)
    for i, t in enumerate(MIXED.tolist()):
        with use_tasks(layer, t), torch.no_grad():
            alone = layer(x[i * k:(i + 1) * k])
        torch.testing.assert_close(mixed[i * k:(i + 1) * k], alone)


def test_new_batches_reuse_the_compiled_graph():
    """New ids every step (other mixes, other tasks) must not recompile: the graph reads the ids
    as a tensor input, never their values (a value read would be a guard, hence a recompile)."""
    layer = adapted_linear()
    x = torch.randn(4, 5, 16, requires_grad=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, fullgraph=True, backend=counter)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):  # more than the routing history keeps (8) and than Dynamo's recompile limit
        ids = torch.randint(len(TASKS), (4,), generator=g)
        ids[:2] = torch.tensor([0, 3])  # always mixed
        assert_same_step(compiled, layer, x, ids)
    assert counter.frame_count == 1


def test_small_model_with_several_adapted_layers_compiles_fullgraph():
    model = adapted_tower()
    x = torch.randn(len(MIXED), 6, 16, requires_grad=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    assert_same_step(compiled, model, x, MIXED)
    assert_same_step(compiled, model, x, torch.tensor([3, 1, 1, 0]))  # another mix: same graph
    assert counter.frame_count == 1
    # A single-task batch takes the cheaper path (one matmul): its own graph, still whole.
    assert_same_step(compiled, model, x, "b")
    assert counter.frame_count == 2


def test_checkpointed_model_compiles_fullgraph_and_matches_eager():
    """Activation checkpointing inside the compiled model: Dynamo traces the checkpoint, and the
    recomputation in backward uses the forward's ids (compared against the eager checkpointed model,
    whose recomputation reads the routing history)."""
    model = adapted_tower(use_checkpoint=True)
    plain = adapted_tower(use_checkpoint=False)
    x = torch.randn(len(MIXED), 6, 16, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y_plain, g_plain = step(plain, plain, x, MIXED)
    y_comp, g_comp = step(compiled, model, x, MIXED)
    torch.testing.assert_close(y_comp, y_plain)
    for name in g_plain:
        torch.testing.assert_close(g_comp[name], g_plain[name], msg=name)


# --------------------------------------------------------------------------- (b) no host read
def test_explain_counts_no_graph_break():
    model = adapted_tower()
    x = torch.randn(len(MIXED), 6, 16, requires_grad=True)
    with use_tasks(model, MIXED):
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_forward_runs_on_meta_tensors():
    """Meta tensors carry shapes and no values: any host read of a value raises."""
    with torch.device("meta"):
        model = adapted_tower()
        layer = adapted_linear(fold_batch=True)
    model.to("meta")
    with use_tasks(model, MIXED):
        out = model(torch.randn(len(MIXED), 6, 16, device="meta", requires_grad=True))
    assert out.is_meta and out.shape == (len(MIXED), 16)
    out.sum().backward()
    with use_tasks(layer, MIXED):
        assert layer(torch.randn(3 * len(MIXED), 5, 16, device="meta")).shape == (3 * len(MIXED), 5, 24)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode")
@pytest.mark.parametrize("ids_on", ["cpu", "cuda"])
def test_no_cuda_synchronisation(ids_on):
    model = adapted_tower().cuda()
    x = torch.randn(len(MIXED), 6, 16, device="cuda", requires_grad=True)
    ids = MIXED.to(ids_on)
    with use_tasks(model, ids):
        model(x)  # warm-up: lazy CUDA initialisation may synchronise
    torch.cuda.synchronize()
    # use_tasks validates the ids on the host (for CUDA ids one device-to-host read per forward, outside
    # the layers); the forward then reads them on the device only (CPU ids: one non-blocking copy).
    with use_tasks(model, ids):
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = model(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    out.sum().backward()


class SyncingLayer(MTLLoRALinear):
    """The kind of forward the checks exist to catch: a host read of the task ids."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.per_row_ids(self.current_routing(), x.shape[0], x.device)
        if int(ids.max()) >= self.num_tasks:  # a device-to-host read
            raise ValueError("task id out of range")
        return super().forward(x)


def test_the_checks_catch_a_host_read():
    torch.manual_seed(0)
    layer = SyncingLayer(nn.Linear(16, 24).requires_grad_(False), num_tasks=4, r=4, alpha=8, n_up=2,
                         temperature=0.5)
    x = torch.randn(4, 5, 16)
    with use_tasks(layer, MIXED):
        layer(x)  # fine in eager on the CPU
        # Unsupported (a graph break) or UserError (a guard on a data-dependent value): both fail fullgraph.
        with pytest.raises(torch._dynamo.exc.TorchDynamoException):
            torch.compile(layer, fullgraph=True, backend="eager")(x)
        assert torch._dynamo.explain(layer)(x).graph_break_count >= 1
    with torch.device("meta"):
        meta_layer = SyncingLayer(nn.Linear(16, 24), num_tasks=4, r=4, alpha=8, n_up=2, temperature=0.5)
    with use_tasks(meta_layer, MIXED), pytest.raises((RuntimeError, NotImplementedError)):
        meta_layer(torch.randn(4, 5, 16, device="meta"))
