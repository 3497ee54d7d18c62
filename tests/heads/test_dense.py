"""Dense decoders (official MTLoRA sizes) and the PASCAL-Context losses against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from vlmtl.heads.dense import (
    LOSS_WEIGHTS,
    DenseDecoder,
    MultiTaskDenseLoss,
    balanced_bce_loss,
    cross_entropy_loss,
    normals_l1_loss,
    pointwise_conv,
    pointwise_conv_norm_act,
)
from vlmtl.registry import DENSE_TASKS

SWIN_T_CHANNELS = (192, 384, 768, 768)  # Swin-T stages after patch merging (last stage unmerged)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_decoder_parameter_counts_match_official():
    decoders = {t: DenseDecoder(SWIN_T_CHANNELS, c) for t, c in DENSE_TASKS.items()}
    assert sum(n_params(d.reduce) for d in decoders.values()) == 732_672
    assert sum(n_params(d.head) for d in decoders.values()) == 1_213_952
    assert sum(n_params(d) for d in decoders.values()) == 1_946_624


def test_decoder_fuses_scales_and_resizes_to_input():
    torch.manual_seed(0)
    decoder = DenseDecoder((8, 16, 32, 32), num_outputs=5).eval()
    feats = [torch.randn(2, c, s, s) for c, s in zip((8, 16, 32, 32), (8, 4, 2, 2))]
    assert decoder(feats, (32, 32)).shape == (2, 5, 32, 32)
    assert decoder(feats).shape == (2, 5, 8, 8)  # finest scale without out_size
    with pytest.raises(ValueError, match="feature scales"):
        decoder(feats[:3], (32, 32))


def test_cross_entropy_by_hand_with_ignore():
    pred = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 5.0]]]])  # (1, 2 classes, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert cross_entropy_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    assert cross_entropy_loss(pred, target.unsqueeze(1)).item() == pytest.approx(expected, rel=1e-6)


def test_all_ignored_parts_give_zero_not_nan():
    pred = torch.randn(2, 7, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255, dtype=torch.long)
    loss = cross_entropy_loss(pred, target)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    total, parts = MultiTaskDenseLoss(["human_parts"])({"human_parts": pred}, {"human_parts": target})
    assert total.item() == 0.0 and parts["human_parts"].item() == 0.0


def _bce(x: float, y: int) -> float:
    return math.log(1 + math.exp(-x)) if y else math.log(1 + math.exp(x))


def test_balanced_bce_by_hand():
    logits = [0.0, 2.0, -1.0, 1.0]
    labels = [1, 0, 1, 1]
    pred = torch.tensor(logits).view(1, 1, 2, 2)
    target = torch.tensor(labels, dtype=torch.float).view(1, 1, 2, 2)
    w = 1 / 4  # negatives / all
    pos = sum(_bce(x, y) for x, y in zip(logits, labels) if y)
    neg = sum(_bce(x, y) for x, y in zip(logits, labels) if not y)
    expected = (w * pos + (1 - w) * neg) / 4
    assert balanced_bce_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    assert balanced_bce_loss(pred, target[:, 0]).item() == pytest.approx(expected, rel=1e-6)  # (B, H, W) labels

    ignored = target.clone()
    ignored[0, 0, 1, 1] = 255  # drop the last pixel: w = 1/3 over 3 valid pixels
    pos3 = _bce(0.0, 1) + _bce(-1.0, 1)
    expected3 = (1 / 3 * pos3 + 2 / 3 * _bce(2.0, 0)) / 3
    assert balanced_bce_loss(pred, ignored).item() == pytest.approx(expected3, rel=1e-6)
    assert balanced_bce_loss(pred, torch.full_like(target, 255)).item() == 0.0


def test_normals_l1_on_unit_predictions_ignores_masked_pixels():
    pred = torch.tensor([[3.0, 7.0], [0.0, 1.0], [4.0, -2.0]]).view(1, 3, 1, 2)
    target = torch.tensor([[0.0, 255.0], [0.0, 255.0], [1.0, 255.0]]).view(1, 3, 1, 2)
    # pixel 0: unit prediction (0.6, 0, 0.8) vs (0, 0, 1): |0.6| + 0 + |0.2| over 3 valid values
    assert normals_l1_loss(pred, target).item() == pytest.approx(0.8 / 3, rel=1e-5)
    masked = torch.full_like(target, 255.0)
    assert normals_l1_loss(pred, masked).item() == 0.0


def test_multitask_loss_weights_and_sum():
    torch.manual_seed(0)
    preds = {t: torch.randn(2, c, 4, 4) for t, c in DENSE_TASKS.items()}
    targets = {
        "semseg": torch.randint(0, 21, (2, 4, 4)),
        "human_parts": torch.randint(0, 7, (2, 4, 4)),
        "saliency": torch.randint(0, 2, (2, 1, 4, 4)).float(),
        "normals": torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1),
    }
    assert LOSS_WEIGHTS == {"semseg": 1.0, "human_parts": 2.0, "saliency": 5.0, "normals": 10.0}
    total, parts = MultiTaskDenseLoss(list(DENSE_TASKS))(preds, targets)
    assert set(parts) == set(DENSE_TASKS)
    assert total.item() == pytest.approx(sum(LOSS_WEIGHTS[t] * parts[t].item() for t in parts), rel=1e-6)
    with pytest.raises(ValueError, match="no loss"):
        MultiTaskDenseLoss(["depth"])


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_is_the_1x1_convolution_with_its_gradients(bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 1, bias=bias).double()
    x = torch.randn(3, 6, 4, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, 4, 7, dtype=torch.float64)
    ours = pointwise_conv(conv, x)
    torch.testing.assert_close(ours, conv(x))
    grads = torch.autograd.grad((ours * weight).sum(), [x, *conv.parameters()])
    expected = torch.autograd.grad((conv(x) * weight).sum(), [x, *conv.parameters()])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def _conv_norm_act_runs(conv, norm, act, x, weight):
    """(output, gradients, running stats) from the fused map and from the composition, each
    on its own copy of the modules."""
    import copy

    runs = []
    for fused in (True, False):
        c, n = copy.deepcopy(conv), copy.deepcopy(norm)
        xi = x.clone().requires_grad_(True)
        out = pointwise_conv_norm_act(c, n, act, xi) if fused else act(n(pointwise_conv(c, xi)))
        params = [xi, *(p for p in [*c.parameters(), *n.parameters()] if p.requires_grad)]
        grads = torch.autograd.grad((out * weight).sum(), params, allow_unused=True)
        runs.append((out.detach(), grads, [b.clone() for b in n.buffers()]))
    return runs


@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("act", ["relu_inplace", "identity"])
def test_conv_norm_act_from_input_statistics_equals_conv_then_batchnorm(affine, bias, act):
    """Training BatchNorm after a 1×1 conv, computed from the input's channel covariance: the
    output, every gradient (input, conv, norm) and the running statistics are the composition's."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 9, 1, bias=bias).double()
    norm = torch.nn.BatchNorm2d(9, affine=affine).double().train()
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5), norm.bias.normal_()
    x = (torch.randn(3, 4, 5, 6, dtype=torch.float64) * 2 + 1).permute(0, 3, 1, 2)  # channels-last, as the decoder
    weight = torch.randn(3, 9, 4, 5, dtype=torch.float64)
    module = torch.nn.ReLU(inplace=True) if act == "relu_inplace" else torch.nn.Identity()
    (out, grads, stats), (ref, ref_grads, ref_stats) = _conv_norm_act_runs(conv, norm, module, x, weight)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        if got is None or want is None:  # a conv bias before training BatchNorm: no effect, gradient 0
            assert (got if got is not None else want).abs().max() < 1e-9
        else:
            torch.testing.assert_close(got, want)
    for got, want in zip(stats, ref_stats):
        torch.testing.assert_close(got, want)
    assert stats[-1].item() == 1  # num_batches_tracked


def test_conv_norm_act_leaves_other_norms_to_the_composition():
    """Evaluation (running statistics), a cumulative average (momentum None) and other norm
    classes give the composition's results."""
    from vlmtl.distributed import DistributedBatchNorm2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 9, 1).double()
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    weight = torch.randn(2, 9, 3, 3, dtype=torch.float64)
    for norm in (torch.nn.BatchNorm2d(9).double().eval(), torch.nn.BatchNorm2d(9, momentum=None).double().train(),
                 DistributedBatchNorm2d(9).double().train(), torch.nn.GroupNorm(3, 9).double()):
        (out, grads, stats), (ref, ref_grads, ref_stats) = _conv_norm_act_runs(conv, norm, torch.nn.ReLU(), x, weight)
        torch.testing.assert_close(out, ref)
        for got, want in zip([*grads, *stats], [*ref_grads, *ref_stats]):
            torch.testing.assert_close(got, want)
