"""Multi-task Swin (MTLoRA) on timm: official parameter counts, trainable sets per method,
shapes, equality with the frozen timm Swin at init, and task streams that separate."""

from __future__ import annotations

import re

import pytest
import timm
import torch

from vlmtl.adapters import count_parameters
from vlmtl.adapters.layers import LoRALinear, MTLLoRALinear, MTLoRALinear
from vlmtl.heads.dense import MultiTaskDenseLoss
from vlmtl.models.swin_mtlora import DEFAULT_SWIN, MultiTaskSwin, create_multitask_swin
from vlmtl.registry import DENSE_TASKS

TASKS = tuple(DENSE_TASKS)
TINY = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))  # stage 2 has a shifted-window block
SIZE = 128  # behaviour tests: window 4 at 128 px keeps the stage geometry of window 7 at 224 px, cheaper
FAST = dict(window_size=4, img_size=SIZE)


def tiny(method: str = "mtlora", seed: int = 0, **kwargs) -> MultiTaskSwin:
    torch.manual_seed(seed)
    return create_multitask_swin(method=method, **{**TINY, **FAST, **kwargs})


def reference_swin() -> torch.nn.Module:
    return timm.create_model(DEFAULT_SWIN, pretrained=False, **TINY, **FAST).eval()


def reference_features(ref: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """What the decoders should see from a plain timm Swin: stage i merged by stage i+1's
    patch merging (timm keeps it at the next stage's start), the last stage unmerged."""
    outs = ref.forward_intermediates(images, intermediates_only=True)  # NCHW per stage
    feats = []
    for i, out in enumerate(outs):
        if i + 1 < len(outs):
            out = ref.layers[i + 1].downsample(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        feats.append(out)
    return feats


# --- Swin-T at 448: the official trainable counts -------------------------------------------

@pytest.mark.parametrize("r, expected", [(16, 4_953_146), (32, 6_083_642), (64, 8_344_634)])
def test_swin_t_mtlora_trainable_count_is_official(r, expected):
    # weight_init="skip" keeps the layers' own init and skips timm's slow re-init: counts only
    model = create_multitask_swin(DEFAULT_SWIN, tasks=TASKS, method="mtlora", r=r, r_task=4, img_size=448,
                                  weight_init="skip")
    assert count_parameters(model)[0] == expected
    groups = model.parameter_groups()
    assert groups["backbone"] == 0
    assert groups["adapters"] == 1_406_976 + (r - 16) * 16 * 4416  # TA-LoRA: 16·d·r per block, Σd = 4416
    if r == 16:
        assert groups == {
            "adapters": 1_406_976, "decoders": 1_946_624, "patch_merging": 1_548_288, "rel_pos": 23_322,
            "norms": 23_040, "patch_embed": 4_896, "backbone": 0,
        }
        # the frozen part is exactly timm's features_only Swin-T (no final norm, no head)
        frozen_backbone = sum(p.numel() for n, p in model.backbone.named_parameters() if "base_layer" in n or
                              not any(k in n for k in (".A", ".B", "task_A", "task_B")))
        features = timm.create_model(DEFAULT_SWIN, pretrained=False, img_size=448, features_only=True,
                                     weight_init="skip")
        assert frozen_backbone == sum(p.numel() for p in features.parameters())


# --- trainable sets per method (tiny Swin) ------------------------------------------------

def _adapter_layers(model, kind):
    return {n: m for n, m in model.backbone.named_modules() if type(m) is kind}


def test_mtlora_placement_and_trainable_set():
    model = tiny("mtlora")
    layers = _adapter_layers(model, MTLoRALinear)
    block_names = {n for n in layers if ".blocks." in n}
    assert len(block_names) == 4 * sum(TINY["depths"])  # qkv, proj, fc1, fc2 in every block
    with_tasks = {n for n, m in layers.items() if m.num_tasks}
    last = {f"layers.{i}.blocks.{d - 1}" for i, d in enumerate(TINY["depths"])}
    assert with_tasks == {f"{b}.{s}" for b in last for s in ("attn.proj", "mlp.fc1", "mlp.fc2")}
    assert all(m.r_task == 4 and m.task_A.shape[0] == 4 for n, m in layers.items() if n in with_tasks)
    assert all(m.scale == 4.0 and m.r == 16 for m in layers.values())
    groups = model.parameter_groups()
    assert groups["backbone"] == 0 and all(groups[g] > 0 for g in groups if g != "backbone")
    # frozen: exactly the pretrained linear weights/biases inside the adapters
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(".base_layer." in n for n in frozen)


def test_mtlora_plus_adapts_patch_merging_instead_of_training_it():
    model = tiny("mtlora", mtlora_plus=True)
    reductions = {n: m for n, m in _adapter_layers(model, MTLoRALinear).items() if n.endswith("downsample.reduction")}
    assert len(reductions) == len(TINY["depths"]) - 1
    assert all(m.num_tasks == 0 and not m.base_layer.weight.requires_grad for m in reductions.values())
    assert model.parameter_groups()["patch_merging"] == 0
    out = model(torch.randn(1, 3, SIZE, SIZE))
    assert out["semseg"].shape == (1, 21, SIZE, SIZE)


def test_decoders_only_and_full():
    model = tiny("heads_only")
    groups = model.parameter_groups()
    assert groups["decoders"] == count_parameters(model)[0] > 0
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model = tiny("full")
    assert all(p.requires_grad for p in model.parameters())
    assert not _adapter_layers(model, LoRALinear) and not _adapter_layers(model, MTLoRALinear)


@pytest.mark.parametrize("method, kind", [("lora", LoRALinear), ("mtl_lora", MTLLoRALinear)])
def test_shared_adapter_baselines(method, kind):
    model = tiny(method)
    layers = _adapter_layers(model, kind)
    assert len(layers) == 4 * sum(TINY["depths"])
    assert all(re.search(r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])$", n) for n in layers)
    assert all(m.scaling == pytest.approx(4.0) for m in layers.values())  # alpha = scale · r
    assert not _adapter_layers(model, MTLoRALinear)
    groups = model.parameter_groups()
    assert groups["backbone"] == 0 and all(groups[g] > 0 for g in groups if g != "backbone")


def test_single_task_has_one_decoder_and_lora():
    model = tiny("single_task", tasks=("normals",))
    assert list(model.decoders) == ["normals"]
    assert len(_adapter_layers(model, LoRALinear)) == 4 * sum(TINY["depths"])
    assert model(torch.randn(1, 3, SIZE, SIZE))["normals"].shape == (1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="one task"):
        tiny("single_task")
    with pytest.raises(ValueError, match="unknown method"):
        tiny("prompt")


# --- shapes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [224, 448])
def test_shapes_through_the_network(size):
    torch.manual_seed(0)
    model = create_multitask_swin(method="mtlora", img_size=size, **TINY).eval()  # Swin's window 7
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        feats = model.encode(images)
        preds = model(images)
    dims = [64, 128, 256, 256]  # embed 32: stages 32/64/128/256, merged by the next stage
    strides = [8, 16, 32, 32]
    for t in TASKS:
        assert [tuple(f.shape) for f in feats[t]] == [(1, c, size // s, size // s) for c, s in zip(dims, strides)]
        assert preds[t].shape == (1, DENSE_TASKS[t], size, size)


# --- equality with the frozen timm Swin at init ------------------------------------------------

@pytest.mark.parametrize("method, fused", [("mtlora", False), ("mtlora", True), ("lora", False), ("mtl_lora", False)])
def test_zero_init_equals_frozen_timm_swin(tmp_path, method, fused):
    torch.manual_seed(1)
    ref = reference_swin()
    path = tmp_path / "swin.pth"
    torch.save(ref.state_dict(), path)
    model = tiny(method, pretrained=path).eval()
    for block in model.backbone.modules():
        if hasattr(block, "fused_attn"):
            block.fused_attn = fused
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = reference_features(ref, images)
        feats = model.encode(images)
    for t in TASKS:
        for got, want in zip(feats[t], expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_loads_original_microsoft_layout_checkpoint(tmp_path):
    """Original checkpoints merge at the end of stage i; timm's filter moves it to stage i+1."""
    torch.manual_seed(2)
    ref = reference_swin()
    original = {
        re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        .replace("head.fc.", "head."): v
        for k, v in ref.state_dict().items()
    }
    torch.save({"model": original}, tmp_path / "ms.pth")
    model = tiny("mtlora", pretrained=tmp_path / "ms.pth").eval()
    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(images)["semseg"][0], reference_features(ref, images)[0])
    torch.save({"model": {"patch_embed.proj.weight": original["patch_embed.proj.weight"]}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit"):
        tiny("mtlora", pretrained=tmp_path / "bad.pth")


# --- task streams separate after training -----------------------------------------------------

def _targets(batch: int, size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "semseg": torch.randint(0, 21, (batch, size, size), generator=g),
        "human_parts": torch.randint(0, 7, (batch, size, size), generator=g),
        "saliency": torch.randint(0, 2, (batch, 1, size, size), generator=g).float(),
        "normals": torch.nn.functional.normalize(torch.randn(batch, 3, size, size, generator=g), dim=1),
    }


@pytest.mark.parametrize("method", ["mtlora", "mtl_lora"])
def test_task_streams_differ_after_one_step(method):
    model = tiny(method)
    images = torch.randn(2, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        before = model.encode(images)
    for t in TASKS[1:]:  # zero-init task parts: every task sees the same features
        for a, b in zip(before[TASKS[0]], before[t]):
            torch.testing.assert_close(a, b)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    total, _ = MultiTaskDenseLoss(TASKS)(model(images), _targets(2, SIZE))
    total.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model.encode(images)
    for i in range(len(TINY["depths"])):
        for j, t in enumerate(TASKS):
            for u in TASKS[j + 1:]:
                assert (after[t][i] - after[u][i]).abs().max() > 1e-6, (method, i, t, u)


@pytest.mark.parametrize("method", ["mtlora", "mtl_lora"])
def test_grad_checkpointing_gives_the_same_gradients(method):
    model = tiny(method).train()
    images, targets = torch.randn(1, 3, SIZE, SIZE), _targets(1, SIZE)
    loss_fn = MultiTaskDenseLoss(TASKS)
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(5)  # same dropout / drop-path masks in both runs
        loss_fn(model(images), targets)[0].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_mtl_lora_batched_task_pass_equals_one_pass_per_task():
    """One pass over the images repeated per task, each copy routed to its task, gives the
    features, outputs and gradients of one backbone pass per task."""
    model = tiny("mtl_lora", dropout=0.0, drop_path_rate=0.0, img_size=64)
    assert model.task_pass == "sequential"  # the default: faster on CPU today
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))  # B starts at zero: make the task adapters differ
    images = torch.randn(2, 3, 64, 64)
    results = {}
    for task_pass in ("sequential", "batched"):
        model.task_pass = task_pass
        model.zero_grad(set_to_none=True)
        outputs = model(images)
        sum(o.square().mean() for o in outputs.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[task_pass] = outputs, grads
    (seq_out, seq_grad), (bat_out, bat_grad) = results["sequential"], results["batched"]
    assert float(seq_out["semseg"].abs().sum()) > 0
    for task in seq_out:
        assert torch.allclose(seq_out[task], bat_out[task], atol=1e-5)
    assert seq_grad.keys() == bat_grad.keys()
    for name in seq_grad:
        assert torch.allclose(seq_grad[name], bat_grad[name], atol=1e-5), name
    with pytest.raises(ValueError, match="task_pass must be one of"):
        tiny("mtl_lora", task_pass="parallel")


def test_fused_task_stream_mlp_gives_the_composed_layers_outputs_and_gradients(monkeypatch):
    """The stream blocks' MLP runs fused (vlmtl.adapters.stream_mlp) in training with adapter
    dropout; with the fused path turned off, the same seed gives the same predictions and
    gradients (same dropout masks, drawn in the same order)."""
    from vlmtl.adapters import stream_mlp

    model = tiny("mtlora", dropout=0.1).train()
    with torch.no_grad():  # B starts at zero: make every task path count
        for name, p in model.named_parameters():
            if "task_B" in name or name.endswith(".B"):
                p.normal_(std=0.05)
    images, targets = torch.randn(2, 3, SIZE, SIZE), _targets(2, SIZE)
    loss_fn = MultiTaskDenseLoss(TASKS)
    calls = []
    fusable = stream_mlp._fusable
    runs = []
    for fused in (True, False):

        def decide(*args, fused=fused):
            calls.append(fused and fusable(*args))
            return calls[-1]

        monkeypatch.setattr(stream_mlp, "_fusable", decide)
        model.zero_grad()
        torch.manual_seed(6)
        preds = model(images)
        loss_fn(preds, targets)[0].backward()
        runs.append(({t: p.detach() for t, p in preds.items()},
                     {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert calls == [True] * 4 + [False] * 4  # one stream block per stage, fused in the first run
    _assert_same_run(*runs, "task_A", tolerances=((1e-4, 1e-5), (1e-3, 1e-5)))


def _assert_same_run(run, reference, trained: str, tolerances) -> None:
    """Two (predictions, gradients) runs agree: every task's prediction, the same parameters with
    gradients (one of them named like ``trained``) and each gradient; ``tolerances`` are the
    (rtol, atol) pairs for predictions and gradients."""
    (preds, grads), (ref_preds, ref_grads) = run, reference
    (p_rtol, p_atol), (g_rtol, g_atol) = tolerances
    for t in TASKS:
        torch.testing.assert_close(preds[t], ref_preds[t], rtol=p_rtol, atol=p_atol)
    assert grads.keys() == ref_grads.keys() and any(trained in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=g_rtol, atol=g_atol, msg=name)


@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])  # odd sides: merging pads
def test_merge_norm_is_timm_patch_merging_before_its_reduction(hw):
    from vlmtl.models.swin_mtlora import _merge_norm

    merge = reference_swin().layers[1].downsample
    x = torch.randn(2, *hw, merge.dim)
    torch.testing.assert_close(merge.reduction(_merge_norm(merge, x)), merge(x))


def _merged_reduction_case(merge, conv, x):
    from vlmtl.heads.dense import pointwise_conv
    from vlmtl.models.swin_mtlora import merged_reduction

    params = [x] + [p for p in [*merge.parameters(), *conv.parameters()] if p.requires_grad]
    results = []
    for fn in (lambda: merged_reduction(merge, conv, x), lambda: pointwise_conv(conv, merge(x).permute(0, 3, 1, 2))):
        for p in params:
            p.grad = None
        torch.manual_seed(0)  # an adapted reduction draws its dropout mask: the same in both
        out = fn()
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in params]))
    (out, grads), (ref, ref_grads) = results
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
def test_merged_reduction_equals_merging_then_the_decoder_reduction(bias):
    """Patch merging then a narrower 1×1 conv, composed into one map: same output and the same
    gradients for the input, the merging (norm, reduction) and the conv."""
    merge = reference_swin().layers[1].downsample.train()
    if bias:  # timm's reduction has none; a checkpoint or subclass may add one
        merge.reduction.bias = torch.nn.Parameter(torch.randn(merge.reduction.out_features))
        conv = torch.nn.Conv2d(merge.reduction.out_features, 5, 1, bias=True)
    else:
        conv = torch.nn.Conv2d(merge.reduction.out_features, 5, 1, bias=False)
    x = torch.randn(2, 7, 9, merge.dim, requires_grad=True)
    _merged_reduction_case(merge, conv, x)


def test_merged_reduction_falls_back_where_it_cannot_compose():
    """The last stage (no merging), a conv wider than the merged features and an adapted
    reduction (MTLoRA+) take the plain composition, with the same results."""
    merge = reference_swin().layers[1].downsample
    x = torch.randn(2, 4, 4, merge.dim, requires_grad=True)
    _merged_reduction_case(torch.nn.Identity(), torch.nn.Conv2d(merge.dim, 3, 1, bias=False), x)
    _merged_reduction_case(merge, torch.nn.Conv2d(merge.reduction.out_features, 99, 1, bias=False), x)
    plus = tiny("mtlora", mtlora_plus=True).backbone.layers[1].downsample
    _merged_reduction_case(plus, torch.nn.Conv2d(plus.reduction.out_features, 5, 1, bias=False),
                           torch.randn(2, 4, 4, plus.dim, requires_grad=True))


@pytest.mark.parametrize("method", ["mtlora", "lora", "mtl_lora"])
def test_forward_equals_the_decoders_on_the_encoded_features(method):
    """forward() (task streams merged and reduced in one map) gives what each decoder gives on
    encode()'s features: predictions and every gradient, in training with adapter dropout. In
    float64, so that the comparison is tight: the composed weights round differently."""
    model = tiny(method, dropout=0.1).train().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "task_B" in name or name.endswith(".B") or name.endswith(".lora_B"):
                p.normal_(std=0.05)
    images = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    targets = {t: y.double() if y.is_floating_point() else y for t, y in _targets(2, SIZE).items()}
    loss_fn = MultiTaskDenseLoss(TASKS)
    runs = []
    for path in ("forward", "encode"):
        model.zero_grad()
        torch.manual_seed(3)
        if path == "forward":
            preds = model(images)
        else:
            feats = model.encode(images)
            preds = {t: model.decoders[t](feats[t], (SIZE, SIZE)) for t in TASKS}
        loss_fn(preds, targets)[0].backward()
        runs.append(({t: p.detach() for t, p in preds.items()},
                     {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    _assert_same_run(*runs, "downsample.reduction", tolerances=((1e-9, 1e-12), (1e-9, 1e-12)))
